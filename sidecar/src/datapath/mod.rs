//! The userspace ESP datapath: shared state (peers, SAs, counters) and the
//! worker threads, one per TUN queue. The ESP work itself is meshsec-esp's;
//! this layer picks the SA, enforces policy (strict, anti-spoofing, MTU) and
//! moves packets (boringtun's device/core split).

mod csum;
mod derive_gate;
mod esp_split;
mod keying;
mod offload;
pub mod packet;
mod peers;
mod sa_cache;
mod tally;
mod tcp_gro;
mod tcp_split;
#[cfg(test)]
mod test_packets;
mod udp_gso;
mod vnet_read;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use meshsec_esp::key_schedule::KeyPair;
use tracing::{error, warn};
use tun_rs::SyncDevice;

use crate::config::{BusyPoll, Config, DatapathOptions};
use crate::keys::Psk;
use crate::metrics::Metrics;
pub use keying::KeyingError;
use peers::PeerTable;
pub use worker::Polling;

/// Most segments in one TUN super-packet a worker can split (its segment
/// buffers); the device's gso_max_segs must not exceed it.
pub const MAX_SEGMENTS: u32 = 64;

impl Polling {
    /// The workers' polling as configured (`busyPoll`, `busyPollUs`).
    pub fn of(d: &DatapathOptions) -> Self {
        match d.busy_poll {
            BusyPoll::Sparse => Polling::Sparse(d.busy_poll_duration()),
            BusyPoll::Always => Polling::Always,
        }
    }
}

/// State shared by all workers.
#[derive(Debug)]
pub struct Shared {
    pub peers: PeerTable,
    pub metrics: Arc<Metrics>,
    /// Counters for packets no peer can be blamed for.
    pub unattributed: crate::metrics::Counters,
    rekey_requested: AtomicBool,
}

impl Shared {
    /// Called by a worker when an outbound SA passed its soft limit.
    pub fn request_rekey(&self) {
        self.rekey_requested.store(true, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
pub struct Datapath {
    shared: Arc<Shared>,
}

impl Datapath {
    pub fn new(
        cfg: &Config,
        keypair: KeyPair,
        psk: Psk,
        generation: u32,
        metrics: Arc<Metrics>,
    ) -> Result<Self, KeyingError> {
        let peers = PeerTable::new(cfg, keypair, psk, generation, &metrics)?;
        let unattributed = metrics.peer("none");
        let shared = Shared {
            peers,
            metrics,
            unattributed,
            rekey_requested: AtomicBool::new(false),
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// Starts one worker per TUN queue; returns how many. With `pin`,
    /// worker `i` runs on CPU `i` only (hybrid steering).
    pub fn spawn(
        &self,
        queues: Vec<SyncDevice>,
        mtu: u16,
        strict: bool,
        polling: Polling,
        pin: bool,
    ) -> std::io::Result<usize> {
        let n = queues.len();
        for (i, dev) in queues.into_iter().enumerate() {
            let shared = self.shared.clone();
            std::thread::Builder::new()
                .name(format!("meshsec-q{i}"))
                .spawn(move || {
                    let metrics = shared.metrics.clone();
                    if pin && let Err(e) = crate::steering::pin_current_thread(i) {
                        // Unpinned, its queue's packets wake it remotely:
                        // slower, not wrong.
                        warn!(queue = i, error = %e, "cannot pin worker to its CPU");
                    }
                    if let Err(e) = worker::Worker::new(shared, dev, mtu, strict, polling).run() {
                        error!(queue = i, error = %e, "datapath worker stopped");
                        // A dead queue drops its flows: report unhealthy.
                        metrics.ready.set(0);
                    }
                })?;
        }
        Ok(n)
    }

    pub fn take_rekey_request(&self) -> bool {
        self.shared.rekey_requested.swap(false, Ordering::Relaxed)
    }

    /// Installs fresh outbound SAs for all peers under `generation`.
    pub fn rekey(&self, generation: u32) -> Result<(), KeyingError> {
        self.shared.peers.rekey_outbound(generation)?;
        self.shared.metrics.rekeys.inc();
        Ok(())
    }
}
