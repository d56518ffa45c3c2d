//! Leader election on a coordination.k8s.io Lease (kube-lease-manager):
//! only the holder writes. A holder that dies stops renewing; a standby
//! takes over once the Lease expires (at most `duration` seconds, plus up
//! to a second of collision back-off).

use futures::Stream;
use kube::Client;
use kube_lease_manager::{LeaseCreateMode, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Lease settings (validated by the command line: 0 < grace < duration).
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// Seconds the Lease is valid without renewal.
    pub duration: u64,
    /// Renew this many seconds before expiry.
    pub grace: u64,
}

/// A running election: `leader` says whether we hold the Lease.
#[derive(Debug)]
pub struct Election {
    pub leader: watch::Receiver<bool>,
    /// The renewal loop; when every receiver is dropped it releases the
    /// Lease (graceful shutdown) and ends.
    pub task: Option<JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>>,
    /// Keeps the channel open when election is disabled.
    _always: Option<watch::Sender<bool>>,
}

/// Join the election.
///
/// # Errors
/// The Lease could not be read or created.
pub async fn elect(client: Client, s: &LeaseSettings) -> Result<Election, LeaseManagerError> {
    let manager = LeaseManagerBuilder::new(client, &s.name)
        .with_namespace(&s.namespace)
        .with_identity(&s.identity)
        .with_field_manager(format!("meshsec-operator-lease-{}", s.identity))
        .with_create_mode(LeaseCreateMode::AutoCreate)
        .with_duration(s.duration)
        .with_grace(s.grace)
        .build()
        .await?;
    let (leader, task) = manager.watch().await;
    Ok(Election {
        leader,
        task: Some(task),
        _always: None,
    })
}

/// No election: this replica always leads (single-replica installs).
#[must_use]
pub fn always_leader() -> Election {
    let (tx, leader) = watch::channel(true);
    Election {
        leader,
        task: None,
        _always: Some(tx),
    }
}

/// Yields once every time this replica becomes the leader, so controllers
/// reconcile everything the moment they may write.
pub fn became_leader(rx: watch::Receiver<bool>) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            if rx.changed().await.is_err() {
                return None;
            }
            if *rx.borrow_and_update() {
                return Some(((), rx));
            }
        }
    })
}
