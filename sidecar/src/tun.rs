//! The multi-queue TUN device: one queue (file descriptor) per worker.
//!
//! tun-rs rather than the `tun` crate: `tun` 0.7/0.8 refuses more than one
//! queue on Linux (`InvalidQueuesNumber`), while tun-rs opens extra
//! IFF_MULTI_QUEUE queues with `try_clone` and supports the vnet-header
//! offloads we may use later.

use tun_rs::{DeviceBuilder, SyncDevice};

#[derive(Debug, thiserror::Error)]
pub enum TunError {
    #[error("cannot create TUN device {name}: {source}")]
    Create {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot open queue {queue} of {name}: {source}")]
    Queue {
        name: String,
        queue: usize,
        source: std::io::Error,
    },
}

/// Creates (or re-attaches to) `name`, up, with `mtu`, and opens `queues`
/// queues. The device disappears when the last queue closes, including when
/// the process is killed; the fail-closed blackholes do not.
pub fn open(name: &str, mtu: u16, queues: usize) -> Result<Vec<SyncDevice>, TunError> {
    let first = DeviceBuilder::new()
        .name(name)
        .mtu(mtu)
        .multi_queue(true)
        .packet_information(false)
        .enable(true)
        .build_sync()
        .map_err(|source| TunError::Create {
            name: name.into(),
            source,
        })?;
    let mut out = Vec::with_capacity(queues.max(1));
    for queue in 1..queues.max(1) {
        let q = first.try_clone().map_err(|source| TunError::Queue {
            name: name.into(),
            queue,
            source,
        })?;
        out.push(q);
    }
    out.insert(0, first);
    Ok(out)
}
