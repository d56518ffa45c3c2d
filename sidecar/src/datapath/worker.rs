//! One worker per TUN queue. A round drains the queue: each read yields
//! one packet, or (with offload) a TCP super-packet that tun-rs splits into
//! MTU-sized segments; every segment is decided, sealed or opened in place
//! in its own buffer (with the ESP core's headroom and tailroom). Sealed
//! ESP-in-UDP packets of one read are coalesced into UDP GSO super-packets
//! (see `udp_gso`: the kernel cuts them back at the sealed packets'
//! boundaries, so the underlay never carries more than the underlay MTU);
//! other sealed packets are written one per write. Everything else (opened
//! packets, ICMP errors, handed-back plaintext) is copied into a write
//! batch; when the queue is empty or the batch full, tun-rs `send_multiple`
//! writes it, coalescing opened TCP segments of one flow into one GSO
//! super-packet: one kernel traversal instead of one per segment. Worker
//! buffers are allocated once.

use std::io::ErrorKind;
use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;

use meshsec_esp::{Family, HEADROOM, Inbound, TAILROOM};
use tun_rs::{GROTable, SyncDevice, VIRTIO_NET_HDR_LEN};

use super::Shared;
use super::packet::{self, IpSummary};
use super::udp_gso::UdpGso;
use crate::metrics::{Counters, DropReason};

/// Largest packet a TUN queue hands us: a GSO super-packet, or a packet of
/// a 64 KiB device MTU.
const MAX_PACKET: usize = 65535;
/// Segment buffers per read. The daemon caps the TUN's gso_max_segs at this
/// ([`super::MAX_SEGMENTS`]), so a super-packet never has more segments
/// (a small MSS makes the kernel segment in software first).
const SEGMENTS: usize = super::MAX_SEGMENTS as usize;
/// Packets per write batch; reads stop when another full split might not fit.
const BATCH: usize = 2 * SEGMENTS;
/// Where a packet starts in a write-batch buffer: send_multiple puts the
/// virtio-net header right before it.
const OUT_OFFSET: usize = VIRTIO_NET_HDR_LEN;

/// Where a segment starts in its buffer: the ESP core's headroom, and in
/// front of that room for the virtio-net header of a sealed packet.
const SEG_OFFSET: usize = VIRTIO_NET_HDR_LEN + HEADROOM;

/// What to do with a packet once handled.
enum Verdict {
    /// Write the sealed `buf[range]` to the TUN on its own.
    Sealed(Range<usize>),
    /// Write `buf[range]` back to the TUN in the next (coalescing) batch.
    Send(Range<usize>),
    /// Write the ICMP error in the scratch buffer (`len` bytes) back.
    Icmp(usize),
    Drop,
}

pub struct Worker {
    shared: Arc<Shared>,
    dev: SyncDevice,
    /// One raw read (virtio-net header + super-packet).
    raw: Vec<u8>,
    /// Segments of one read, each at SEG_OFFSET with TAILROOM behind.
    segs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    /// The write batch: packets at OUT_OFFSET; capacity for a coalesced
    /// 64 KiB super-packet so GRO never reallocates.
    out: Vec<Vec<u8>>,
    queued: usize,
    gro: GROTable,
    /// The queue carries virtio-net headers (offload on).
    vnet: bool,
    /// Sealed ESP-in-UDP being coalesced; None without USO.
    uso: Option<UdpGso>,
    icmp: Vec<u8>,
    /// Largest plaintext packet that still fits the underlay MTU sealed.
    max_plain_v4: usize,
    max_plain_v6: usize,
    strict: bool,
}

impl Worker {
    pub fn new(shared: Arc<Shared>, dev: SyncDevice, mtu: u16, strict: bool) -> Self {
        let k = &shared.peers.keying;
        // Tunnel mode: the outer header's family (the endpoints') counts;
        // transport mode keeps the packet's own header.
        let outer = |inner| match (k.mode, k.endpoint()) {
            (meshsec_esp::Mode::Tunnel, IpAddr::V4(_)) => Family::V4,
            (meshsec_esp::Mode::Tunnel, IpAddr::V6(_)) => Family::V6,
            (meshsec_esp::Mode::Transport, _) => inner,
        };
        let fit = |inner| {
            meshsec_esp::path::inner_mtu(usize::from(mtu), k.mode, k.encap, outer(inner), k.cipher)
        };
        Self {
            max_plain_v4: fit(Family::V4),
            max_plain_v6: fit(Family::V6),
            shared,
            raw: vec![0; VIRTIO_NET_HDR_LEN + MAX_PACKET],
            segs: vec![vec![0; SEG_OFFSET + MAX_PACKET + TAILROOM]; SEGMENTS],
            sizes: vec![0; SEGMENTS],
            out: (0..BATCH)
                .map(|_| Vec::with_capacity(2 * OUT_OFFSET + MAX_PACKET))
                .collect(),
            queued: 0,
            gro: GROTable::default(),
            vnet: dev.tcp_gso(),
            uso: dev.udp_gso().then(UdpGso::new),
            icmp: vec![0; 1280],
            strict,
            dev,
        }
    }

    pub fn run(mut self) -> std::io::Result<()> {
        loop {
            match self
                .dev
                .recv_multiple(&mut self.raw, &mut self.segs, &mut self.sizes, SEG_OFFSET)
            {
                Ok(n) => self.handle_segments(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if self.queued == 0 {
                        crate::tun::wait_readable(&self.dev)?;
                    } else {
                        self.flush();
                    }
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // No OS error: tun-rs refused to split what the kernel
                // handed us (bad virtio header or headers): drop that read.
                Err(e) if e.raw_os_error().is_none() => {
                    tracing::debug!(error = %e, "unusable TUN read");
                    drop_as(
                        &self.shared.unattributed,
                        &self.shared,
                        DropReason::Malformed,
                    );
                    continue;
                }
                Err(e) => return Err(e),
            }
            if self.queued + SEGMENTS > BATCH {
                self.flush();
            }
        }
    }

    fn handle_segments(&mut self, n: usize) {
        let mut segs = std::mem::take(&mut self.segs);
        for (i, seg) in segs.iter_mut().enumerate().take(n) {
            let len = self.sizes[i];
            let verdict = self.handle(seg, SEG_OFFSET..SEG_OFFSET + len);
            match verdict {
                Verdict::Sealed(r) => self.send_sealed(seg, r),
                Verdict::Send(r) => self.enqueue(&seg[r]),
                Verdict::Icmp(len) => {
                    let icmp = std::mem::take(&mut self.icmp);
                    self.enqueue(&icmp[..len]);
                    self.icmp = icmp;
                }
                Verdict::Drop => {}
            }
        }
        self.segs = segs;
        self.flush_sealed();
    }

    fn flush_sealed(&mut self) {
        let Some(gso) = self.uso.as_mut().filter(|g| !g.is_empty()) else {
            return;
        };
        if let Err(e) = self.dev.send(gso.finish()) {
            tracing::debug!(error = %e, "TUN write failed");
        }
    }

    fn enqueue(&mut self, pkt: &[u8]) {
        let Some(slot) = self.out.get_mut(self.queued) else {
            return; // unreachable: run() flushes before a batch can overflow
        };
        slot.clear();
        slot.resize(OUT_OFFSET, 0);
        slot.extend_from_slice(pkt);
        self.queued += 1;
    }

    /// Writes one sealed packet, with an all-zero virtio-net header (no GSO,
    /// checksums complete) in the room SEG_OFFSET left in front of it.
    fn send_sealed(&mut self, seg: &mut [u8], r: Range<usize>) {
        if let Some(gso) = self.uso.as_mut() {
            if gso.push(&seg[r.clone()]) {
                return;
            }
            self.flush_sealed();
            if self.uso.as_mut().is_some_and(|g| g.push(&seg[r.clone()])) {
                return;
            }
        }
        let start = if self.vnet {
            // seal() grows the packet by at most HEADROOM at the front.
            let Some(start) = r.start.checked_sub(VIRTIO_NET_HDR_LEN) else {
                return;
            };
            seg[start..r.start].fill(0);
            start
        } else {
            r.start
        };
        if let Err(e) = self.dev.send(&seg[start..r.end]) {
            tracing::debug!(error = %e, "TUN write failed");
        }
    }

    fn flush(&mut self) {
        let batch = &mut self.out[..self.queued];
        if let Err(e) = self.dev.send_multiple(&mut self.gro, batch, OUT_OFFSET) {
            // The kernel refused a packet (e.g. no buffer): drop it, as a
            // router would, and keep going.
            tracing::debug!(error = %e, "TUN write failed");
        }
        self.queued = 0;
    }

    fn handle(&mut self, buf: &mut [u8], pkt: Range<usize>) -> Verdict {
        let shared = self.shared.clone();
        let class = match shared.peers.keying.udp_port() {
            Some(port) => meshsec_esp::classify_with_port(&buf[pkt.clone()], port),
            None => meshsec_esp::classify_with_port(&buf[pkt.clone()], 0),
        };
        match class {
            Ok(Inbound::Esp { spi, .. }) | Ok(Inbound::UdpEsp { spi, .. }) => {
                self.inbound(&shared, buf, spi, pkt)
            }
            Ok(Inbound::NatKeepalive) => Verdict::Drop,
            Ok(Inbound::NotEsp) | Err(meshsec_esp::OpenError::NotEsp) => {
                self.outbound(&shared, buf, pkt)
            }
            Err(e) => drop_as(&shared.unattributed, &shared, DropReason::from_open(&e)),
        }
    }

    fn inbound(&mut self, shared: &Shared, buf: &mut [u8], spi: u32, pkt: Range<usize>) -> Verdict {
        let Some((peer, gen_bits)) = shared.peers.peer_for_spi(spi) else {
            return drop_as(&shared.unattributed, shared, DropReason::UnknownSpi);
        };
        let plain = match shared.peers.open(peer, gen_bits, spi, buf, pkt) {
            Ok(r) => r,
            Err(e) => return drop_as(&peer.counters, shared, DropReason::from_open(&e)),
        };
        let Some(ip) = packet::summarize(&buf[plain.clone()]) else {
            return drop_as(&peer.counters, shared, DropReason::Malformed);
        };
        // Anti-spoofing: a peer may only speak for its own pods, to ours.
        if !peer.owns(ip.src) || !shared.peers.is_local(ip.dst) {
            return drop_as(&peer.counters, shared, DropReason::Spoofed);
        }
        let len = plain.len() as u64;
        for c in [&peer.counters, &shared.metrics.total] {
            c.packets_in.inc();
            c.bytes_in.inc_by(len);
        }
        Verdict::Send(plain)
    }

    fn outbound(&mut self, shared: &Shared, buf: &mut [u8], pkt: Range<usize>) -> Verdict {
        let Some(ip) = packet::summarize(&buf[pkt.clone()]) else {
            return drop_as(&shared.unattributed, shared, DropReason::Malformed);
        };
        if shared.peers.is_local(ip.dst) {
            return self.plaintext_to_local(shared, &ip, pkt);
        }
        let Some(peer) = shared.peers.route(ip.dst) else {
            return drop_as(&shared.unattributed, shared, DropReason::NoRoute);
        };
        let max = if ip.src.is_ipv4() {
            self.max_plain_v4
        } else {
            self.max_plain_v6
        };
        if pkt.len() > max && ip.dont_fragment {
            return self.too_big(shared, &peer.counters, &ip, &buf[pkt], max);
        }
        if packet::is_tcp_syn(&buf[pkt.clone()], &ip) {
            let family = if ip.src.is_ipv4() {
                Family::V4
            } else {
                Family::V6
            };
            let mss = meshsec_esp::path::mss_for_mtu(max, family);
            // A SYN the clamp cannot parse goes out unclamped; seal decides.
            let _ = meshsec_esp::path::clamp_mss(&mut buf[pkt.clone()], mss);
        }
        let sa = peer.outbound();
        let len = pkt.len() as u64;
        match sa.seal(buf, pkt) {
            Ok(sealed) => {
                for c in [&peer.counters, &shared.metrics.total] {
                    c.packets_out.inc();
                    c.bytes_out.inc_by(len);
                }
                if sa.needs_rekey() {
                    shared.request_rekey();
                }
                Verdict::Sealed(sealed)
            }
            Err(e) => {
                tracing::debug!(peer = peer.node_id, error = %e, "seal failed");
                shared.request_rekey();
                drop_as(&peer.counters, shared, DropReason::SealFailed)
            }
        }
    }

    /// Plaintext for a local pod reached the TUN: either strict mode's rule
    /// sent a member's unencrypted packet here (drop it), or it is UDP on the
    /// encapsulation port that is not ESP (hand it back to the kernel).
    fn plaintext_to_local(
        &mut self,
        shared: &Shared,
        ip: &IpSummary,
        pkt: Range<usize>,
    ) -> Verdict {
        if self.strict && shared.peers.is_member_source(ip.src) {
            let counters = shared
                .peers
                .route(ip.src)
                .map_or(&shared.unattributed, |p| &p.counters);
            return drop_as(counters, shared, DropReason::StrictPlaintext);
        }
        Verdict::Send(pkt)
    }

    /// ICMP "fragmentation needed" / ICMPv6 "packet too big" back to the
    /// sender, announcing the MTU that fits after sealing.
    ///
    /// The error's source is the unreachable destination itself, not this
    /// node: the kernel drops packets from the TUN that claim a local source
    /// address (martians), while the remote pod's address passes reverse-path
    /// checks (its route points into the TUN). Hosts accept PMTU errors from
    /// any source as long as they quote their own packet.
    fn too_big(
        &mut self,
        shared: &Shared,
        counters: &Counters,
        ip: &IpSummary,
        original: &[u8],
        max: usize,
    ) -> Verdict {
        let mtu = max.min(usize::from(u16::MAX)) as u16;
        let r = match ip.dst {
            IpAddr::V4(from) => {
                meshsec_esp::path::icmp::frag_needed(original, mtu, from, &mut self.icmp)
            }
            IpAddr::V6(from) => meshsec_esp::path::icmpv6::packet_too_big(
                original,
                u32::from(mtu),
                from,
                &mut self.icmp,
            ),
        };
        counters.drop(DropReason::Mtu);
        shared.metrics.total.drop(DropReason::Mtu);
        match r {
            Ok(len) => Verdict::Icmp(len),
            Err(_) => Verdict::Drop,
        }
    }
}

fn drop_as(counters: &Counters, shared: &Shared, reason: DropReason) -> Verdict {
    counters.drop(reason);
    shared.metrics.total.drop(reason);
    Verdict::Drop
}
