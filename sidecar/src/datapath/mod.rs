//! The userspace ESP datapath: shared state (peers, SAs, counters) and the
//! worker threads, one per TUN queue. The ESP work itself is meshsec-esp's;
//! this layer picks the SA, enforces policy (strict, anti-spoofing, MTU) and
//! moves packets (boringtun's device/core split).

#[cfg(test)]
mod coalesce_props;
mod csum;
mod derive_gate;
mod esp_split;
mod keying;
mod offload;
pub mod packet;
mod peers;
#[cfg(test)]
mod read_props;
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
use std::sync::atomic::{AtomicU32, Ordering};

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
    /// SPI of the outbound SA that last asked to be replaced; 0 (a
    /// reserved SPI) when none did.
    rekey_requested: AtomicU32,
}

impl Shared {
    /// Called by a worker when the outbound SA `spi` passed a limit. The
    /// worker asks again with every packet it seals under that SA, so a
    /// request overwritten by another is not lost.
    pub fn request_rekey(&self, spi: u32) {
        self.rekey_requested.store(spi, Ordering::Relaxed);
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
            rekey_requested: AtomicU32::new(0),
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

    /// Whether a worker asked to replace an outbound SA that is still
    /// installed. A worker still sealing under the old SA in the moment
    /// before it sees a rekey asks again; honouring that stale request
    /// would replace the fresh SA before any packet used it.
    pub fn take_rekey_request(&self) -> bool {
        match self.shared.rekey_requested.swap(0, Ordering::Relaxed) {
            0 => false,
            spi => self.shared.peers.is_current_outbound(spi),
        }
    }

    /// Installs fresh outbound SAs for all peers under `generation`.
    pub fn rekey(&self, generation: u32) -> Result<(), KeyingError> {
        self.shared.peers.rekey_outbound(generation)?;
        self.shared.metrics.rekeys.inc();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datapath() -> Datapath {
        let metrics = Arc::new(Metrics::new());
        let shared = Shared {
            peers: peers::test_table(),
            unattributed: metrics.peer("none"),
            metrics,
            rekey_requested: AtomicU32::new(0),
        };
        Datapath {
            shared: Arc::new(shared),
        }
    }

    fn outbound_spi(dp: &Datapath) -> u32 {
        dp.shared.peers.peers[0].outbound().1.spi()
    }

    #[test]
    fn test_rekey_request_is_honoured_once_and_only_for_the_installed_sa() {
        let dp = datapath();
        assert!(!dp.take_rekey_request(), "nothing asked yet");
        let old = outbound_spi(&dp);
        dp.shared.request_rekey(old);
        assert!(dp.take_rekey_request());
        assert!(!dp.take_rekey_request(), "a request is taken once");

        dp.rekey(1).unwrap();
        let new = outbound_spi(&dp);
        assert_ne!(new, old);
        // A worker that sealed under the old SA just before it saw the
        // rekey: no second rekey for it.
        dp.shared.request_rekey(old);
        assert!(!dp.take_rekey_request(), "stale request honoured");
        dp.shared.request_rekey(new);
        assert!(dp.take_rekey_request());
    }
}
