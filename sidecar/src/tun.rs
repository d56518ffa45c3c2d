//! The multi-queue TUN device: one queue (file descriptor) per worker.
//!
//! tun-rs rather than the `tun` crate: `tun` 0.7/0.8 refuses more than one
//! queue on Linux (`InvalidQueuesNumber`), while tun-rs opens extra
//! IFF_MULTI_QUEUE queues with `try_clone` and implements the vnet-header
//! offloads (GSO split on read, GRO coalescing on write) the workers use.
#![allow(unsafe_code)] // poll(2) on the queue's descriptor, nothing else.

use std::os::fd::AsRawFd;

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
/// queues, non-blocking (workers drain a queue, then wait in
/// [`wait_readable`]). With `offload`, the device carries a virtio-net
/// header and TSO/USO/checksum offloads are enabled. The device disappears
/// when the last queue closes, including when the process is killed; the
/// fail-closed blackholes do not.
pub fn open(
    name: &str,
    mtu: u16,
    queues: usize,
    offload: bool,
) -> Result<Vec<SyncDevice>, TunError> {
    let create = |source| TunError::Create {
        name: name.into(),
        source,
    };
    let first = DeviceBuilder::new()
        .name(name)
        .mtu(mtu)
        .multi_queue(true)
        .packet_information(false)
        .offload(offload)
        .enable(true)
        .build_sync()
        .map_err(create)?;
    first.set_nonblocking(true).map_err(create)?;
    let mut out = Vec::with_capacity(queues.max(1));
    for queue in 1..queues.max(1) {
        let queue_err = |source| TunError::Queue {
            name: name.into(),
            queue,
            source,
        };
        let q = first.try_clone().map_err(queue_err)?;
        q.set_nonblocking(true).map_err(queue_err)?;
        out.push(q);
    }
    out.insert(0, first);
    Ok(out)
}

/// Blocks until `dev` has a packet to read.
pub fn wait_readable(dev: &SyncDevice) -> std::io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: dev.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is a valid pollfd for the duration of the call and
        // we pass a count of exactly one.
        let rc = unsafe { libc::poll(&mut pfd, 1, -1) };
        if rc >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
