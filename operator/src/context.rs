//! Shared state of the controllers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use meshsec_crds::{IPsecNode, IPsecTunnel};
use tokio::sync::{Mutex, watch};

use crate::metrics::Metrics;
use crate::rotation::Stamp;

/// Settings from the command line that reconciles need.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace of the PSK Secrets.
    pub namespace: String,
    /// Field manager of every server-side apply.
    pub field_manager: String,
}

/// Everything a reconcile gets besides its object.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// True while this replica holds the Lease: only then does it write.
    pub leader: watch::Receiver<bool>,
    pub tunnels: Store<IPsecTunnel>,
    pub ipsecnodes: Store<IPsecNode>,
    pub nodes: Store<PartialObjectMeta<Node>>,
    /// Ids this replica allocated that the cache may not show yet.
    pub allocated: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Context {
    #[must_use]
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Wall-clock now, in whole seconds.
    #[must_use]
    pub fn now() -> Stamp {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        Stamp(i64::try_from(secs).unwrap_or(i64::MAX))
    }
}
