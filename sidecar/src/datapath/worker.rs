//! One worker per TUN queue. A round drains the queue: each read yields
//! one packet, or (with offload) a TCP/UDP super-packet split into
//! MTU-sized segments (`vnet_read`: our TCP split, tun-rs's for other
//! UDP); every segment is decided, sealed or opened in place in its own
//! buffer (with the ESP core's headroom and tailroom). An IPv4 ESP-in-UDP
//! super-packet is not split into buffers: its datagrams are cut and
//! opened one at a time where the read left it (`esp_split`). Nor is a TCP
//! super-packet when its segments are sealed into ESP-in-UDP: each is cut
//! straight into its place in the UDP GSO super-packet and sealed there
//! (`worker/tcp_seal.rs`).
//! With offload, writes are coalesced: sealed ESP-in-UDP of one flow into
//! a UDP GSO super-packet (`udp_gso`: the kernel cuts it back at the
//! sealed packets' boundaries, so the underlay never carries more than the
//! underlay MTU), and consecutive opened TCP segments of one flow into a
//! TSO super-packet (`tcp_gro`), each written when the flow breaks, the
//! queue is empty or it is full: one kernel traversal instead of one per
//! segment. Everything else is written on its own. Worker buffers are
//! allocated once; nothing is allocated per packet.

use std::io::ErrorKind;
use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use meshsec_esp::{Family, HEADROOM, Inbound, TAILROOM};
use tun_rs::{SyncDevice, VIRTIO_NET_HDR_LEN};

use super::Shared;
use super::esp_split::EspSplit;
use super::offload::F_DATA_VALID;
use super::packet::{self, IpSummary};
use super::sa_cache::SaCache;
use super::tally::{PeerTallies, SealBytes, Tally};
use super::tcp_gro::TcpGro;
use super::udp_gso::UdpGso;
use super::vnet_read::{self, Read};
use crate::metrics::{Counters, DropReason};

mod idle;
mod tcp_seal;

pub use idle::Polling;
use idle::{Idle, OnEmpty};

/// Largest packet a TUN queue hands us: a GSO super-packet, or a packet of
/// a 64 KiB device MTU.
const MAX_PACKET: usize = 65535;
/// Segment buffers per read. The daemon caps the TUN's gso_max_segs at this
/// ([`super::MAX_SEGMENTS`]), so a super-packet never has more segments
/// (a small MSS makes the kernel segment in software first).
const SEGMENTS: usize = super::MAX_SEGMENTS as usize;
/// Where a segment starts in its buffer: the ESP core's headroom, and in
/// front of that room for the virtio-net header of a packet written from
/// it (seal grows a packet by at most HEADROOM; open only shrinks it).
const SEG_OFFSET: usize = VIRTIO_NET_HDR_LEN + HEADROOM;

/// What to do with a packet once handled.
enum Verdict {
    /// Write the sealed `buf[range]` (coalesced into UDP GSO if possible).
    Sealed(Range<usize>),
    /// Write the opened (authenticated) `buf[range]` back (coalesced into
    /// TSO if possible).
    Opened(Range<usize>),
    /// Write the plaintext `buf[range]` back (coalesced into TSO if
    /// possible).
    Send(Range<usize>),
    /// Write the ICMP error in the scratch buffer (`len` bytes after the
    /// virtio-net header room) back.
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
    /// The queue carries virtio-net headers (offload on).
    vnet: bool,
    /// Sealed ESP-in-UDP being coalesced; None without USO.
    uso: Option<UdpGso>,
    /// Opened TCP segments being coalesced; None without offload.
    gro: Option<TcpGro>,
    icmp: Vec<u8>,
    /// Largest plaintext packet that still fits the underlay MTU sealed.
    max_plain_v4: usize,
    max_plain_v6: usize,
    strict: bool,
    /// When an empty queue is polled again instead of slept on.
    polling: Polling,
    /// This read's contribution to the totals and to each peer's
    /// counters, added once per read.
    tally: Tally,
    peer_tally: PeerTallies,
    /// Bytes sealed and not yet added to their SA's byte counter.
    seal_bytes: SealBytes,
    /// SAs used last, per peer: no shared lock or count per packet.
    sas: SaCache,
}

impl Worker {
    pub fn new(
        shared: Arc<Shared>,
        dev: SyncDevice,
        mtu: u16,
        strict: bool,
        polling: Polling,
    ) -> Self {
        let k = &shared.peers.keying;
        // Tunnel mode: the outer header's family (the endpoints') counts;
        // transport mode keeps the packet's own header.
        let outer = |inner| match k.mode {
            meshsec_esp::Mode::Tunnel => Family::of(&k.endpoint()),
            meshsec_esp::Mode::Transport => inner,
        };
        let fit = |inner| {
            meshsec_esp::path::inner_mtu(usize::from(mtu), k.mode, k.encap, outer(inner), k.cipher)
        };
        let peers = shared.peers.peers.len();
        Self {
            max_plain_v4: fit(Family::V4),
            max_plain_v6: fit(Family::V6),
            shared,
            raw: vec![0; VIRTIO_NET_HDR_LEN + MAX_PACKET],
            segs: vec![vec![0; SEG_OFFSET + MAX_PACKET + TAILROOM]; SEGMENTS],
            sizes: vec![0; SEGMENTS],
            vnet: dev.tcp_gso(),
            uso: dev.udp_gso().then(UdpGso::new),
            gro: dev.tcp_gso().then(TcpGro::new),
            icmp: vec![0; VIRTIO_NET_HDR_LEN + 1280],
            strict,
            polling,
            tally: Tally::default(),
            peer_tally: PeerTallies::new(peers),
            seal_bytes: SealBytes::default(),
            sas: SaCache::new(peers),
            dev,
        }
    }

    pub fn run(mut self) -> std::io::Result<()> {
        let mut idle = Idle::new(self.polling);
        loop {
            match self.read() {
                Ok(read) => {
                    match read {
                        Read::Segments(n) => self.handle_segments(n),
                        Read::Esp(split) => self.handle_esp_in_place(&split),
                        Read::Tcp(split) => self.handle_tcp(&split),
                    }
                    idle.handled();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.on_empty(&mut idle)?,
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
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The queue is empty: write what is being coalesced, else poll again
    /// or sleep as the polling policy says.
    fn on_empty(&mut self, idle: &mut Idle) -> std::io::Result<()> {
        if self.coalescing() {
            self.flush_sealed();
            self.flush_tcp();
            return Ok(());
        }
        match idle.empty(Instant::now()) {
            // A sleeping thread costs ~20-125 µs to wake on this class of
            // VM; yielding lets any runnable thread (the peer's worker, the
            // application) run.
            OnEmpty::Poll => std::thread::yield_now(),
            OnEmpty::Forget => {
                self.sas.clear();
                std::thread::yield_now();
            }
            OnEmpty::Sleep => {
                // A sleeping worker keeps no keys alive.
                self.sas.clear();
                let asleep = Instant::now();
                crate::tun::wait_readable(&self.dev)?;
                idle.woke(asleep.elapsed());
            }
        }
        Ok(())
    }

    /// One read, split into `self.segs` (or left in `self.raw` to be cut
    /// in place). An error without an OS error code means the read was
    /// unusable (bad virtio header or headers): the caller drops it.
    fn read(&mut self) -> std::io::Result<Read> {
        if self.vnet {
            let port = self.shared.peers.keying.udp_port();
            let len = self.dev.recv(&mut self.raw)?;
            vnet_read::parse(
                &mut self.raw[..len],
                &mut self.segs,
                &mut self.sizes,
                SEG_OFFSET,
                port,
            )
        } else {
            self.dev
                .recv_multiple(&mut self.raw, &mut self.segs, &mut self.sizes, SEG_OFFSET)
                .map(Read::Segments)
        }
    }

    /// Handles the datagrams of an ESP-in-UDP super-packet where the read
    /// left it, one at a time (`esp_split`): no copy into segment buffers.
    /// An ESP datagram is opened in place (opening only shrinks it, within
    /// its own bytes, and what it yields is written or copied into the TCP
    /// super-packet before the next datagram is cut); anything else is
    /// copied into a segment buffer first and takes the general path,
    /// where it may grow.
    fn handle_esp_in_place(&mut self, split: &EspSplit) {
        let shared = self.shared.clone();
        let port = shared.peers.keying.udp_port().unwrap_or(0);
        let mut raw = std::mem::take(&mut self.raw);
        let mut segs = std::mem::take(&mut self.segs);
        for i in 0..split.count() {
            let r = split.datagram(&mut raw[VIRTIO_NET_HDR_LEN..], i);
            let r = VIRTIO_NET_HDR_LEN + r.start..VIRTIO_NET_HDR_LEN + r.end;
            if let Ok(Inbound::UdpEsp { spi, .. }) =
                meshsec_esp::classify_with_port(&raw[r.clone()], port)
            {
                let verdict = self.inbound(&shared, &mut raw, spi, r);
                self.dispatch(&mut raw, verdict);
                continue;
            }
            let Some(seg) = segs.first_mut() else { break };
            let Some(out) = seg.get_mut(SEG_OFFSET..SEG_OFFSET + r.len()) else {
                // Longer than a segment buffer: cannot happen for a
                // datagram of a super-packet, but never lose one uncounted.
                drop_as(&shared.unattributed, &shared, DropReason::Malformed);
                continue;
            };
            out.copy_from_slice(&raw[r.clone()]);
            let verdict = self.handle(&shared, seg, SEG_OFFSET..SEG_OFFSET + r.len());
            self.dispatch(seg, verdict);
        }
        self.raw = raw;
        self.segs = segs;
        self.flush_tallies(&shared);
    }

    fn handle_segments(&mut self, n: usize) {
        // One reference count change per read, not per packet: the count
        // is shared by all workers, and its cache line bouncing between
        // CPUs was a quarter of this loop's own samples (profile).
        let shared = self.shared.clone();
        let mut segs = std::mem::take(&mut self.segs);
        for (i, seg) in segs.iter_mut().enumerate().take(n) {
            let len = self.sizes[i];
            let verdict = self.handle(&shared, seg, SEG_OFFSET..SEG_OFFSET + len);
            self.dispatch(seg, verdict);
        }
        self.segs = segs;
        if n == 1 {
            // A lone packet (an ACK, sparse traffic) is not held for
            // later reads: only a split super-packet's tail is.
            self.flush_sealed();
        }
        self.flush_tallies(&shared);
    }

    /// Acts on a packet's verdict; `buf` holds the packet.
    fn dispatch(&mut self, buf: &mut [u8], verdict: Verdict) {
        match verdict {
            Verdict::Sealed(r) => self.send_sealed(buf, r),
            Verdict::Opened(r) => self.send_plain(buf, r, true),
            Verdict::Send(r) => self.send_plain(buf, r, false),
            Verdict::Icmp(len) => {
                let mut icmp = std::mem::take(&mut self.icmp);
                let r = VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + len;
                self.send_plain(&mut icmp, r, false);
                self.icmp = icmp;
            }
            Verdict::Drop => {}
        }
    }

    fn flush_tallies(&mut self, shared: &Shared) {
        self.flush_seal_bytes(shared);
        self.tally.flush(&shared.metrics.total);
        let peers = &shared.peers.peers;
        self.peer_tally.flush(|i| peers.get(i).map(|p| &p.counters));
    }

    /// Adds the pending sealed bytes to their peer's outbound SA (the one
    /// installed now: after a rekey within the read, the new SA gets them,
    /// which only brings its soft limit closer).
    fn flush_seal_bytes(&mut self, shared: &Shared) {
        if let Some((index, mut bytes)) = self.seal_bytes.take()
            && let Some(peer) = shared.peers.peers.get(index)
            && let Some(sa) = self.sas.outbound(peer)
        {
            sa.add_tally(&mut bytes);
        }
    }

    /// A super-packet is being built. Both coalescers keep theirs across
    /// reads and are flushed when the queue is empty (or the flow breaks,
    /// or it is full): a TCP super-packet of 44 MSS-sized segments seals
    /// into more than the 64 KiB one UDP GSO write can carry, so flushing
    /// at the end of each read wrote the 44th datagram on its own, one
    /// extra write and kernel traversal per super-packet (and one extra
    /// read on the receiving node).
    fn coalescing(&self) -> bool {
        self.gro.as_ref().is_some_and(|g| !g.is_empty())
            || self.uso.as_ref().is_some_and(|g| !g.is_empty())
    }

    fn flush_sealed(&mut self) {
        if let Some(mut gso) = self.uso.take() {
            self.write_gso(&mut gso);
            self.uso = Some(gso);
        }
    }

    /// Writes the UDP GSO super-packet in progress, if any.
    fn write_gso(&self, gso: &mut UdpGso) {
        if gso.is_empty() {
            return;
        }
        if let Err(e) = self.dev.send(gso.finish()) {
            tracing::debug!(error = %e, "TUN write failed");
        }
    }

    fn flush_tcp(&mut self) {
        let Some(gro) = self.gro.as_mut().filter(|g| !g.is_empty()) else {
            return;
        };
        if let Err(e) = self.dev.send(gro.finish()) {
            tracing::debug!(error = %e, "TUN write failed");
        }
    }

    /// Writes an opened packet (`authenticated`), handed-back plaintext or
    /// ICMP error: appended to the TCP super-packet in progress if it
    /// continues it; otherwise that one is written first (order within a
    /// flow holds).
    fn send_plain(&mut self, buf: &mut [u8], r: Range<usize>, authenticated: bool) {
        if let Some(gro) = self.gro.as_mut() {
            if gro.push(&buf[r.clone()], authenticated) {
                return;
            }
            self.flush_tcp();
            if self
                .gro
                .as_mut()
                .is_some_and(|g| g.push(&buf[r.clone()], authenticated))
            {
                return;
            }
        }
        self.write_one(buf, r, authenticated);
    }

    /// Writes `buf[r]` on its own; with offload, a virtio-net header (no
    /// GSO, checksums complete) goes in the room in front of it. An opened
    /// packet (`authenticated`) is marked DATA_VALID: its ICV already
    /// proved it unchanged since the peer sealed it, so the kernel skips
    /// verifying its transport checksum, as for the TCP super-packets
    /// (`tcp_gro`), whose checksum it computes itself.
    fn write_one(&self, buf: &mut [u8], r: Range<usize>, authenticated: bool) {
        let start = if self.vnet {
            let Some(start) = r.start.checked_sub(VIRTIO_NET_HDR_LEN) else {
                return;
            };
            buf[start..r.start].fill(0);
            if authenticated {
                buf[start] = F_DATA_VALID;
            }
            start
        } else {
            r.start
        };
        if let Err(e) = self.dev.send(&buf[start..r.end]) {
            tracing::debug!(error = %e, "TUN write failed");
        }
    }

    /// Writes a sealed packet: appended to the UDP GSO super-packet in
    /// progress if it continues it, otherwise on its own.
    fn send_sealed(&mut self, seg: &mut [u8], r: Range<usize>) {
        match self.uso.take() {
            Some(mut gso) => {
                self.send_sealed_via(&mut gso, seg, r);
                self.uso = Some(gso);
            }
            None => self.write_one(seg, r, false),
        }
    }

    /// [`send_sealed`](Self::send_sealed) with the coalescer taken out.
    fn send_sealed_via(&self, gso: &mut UdpGso, seg: &mut [u8], r: Range<usize>) {
        if gso.push(&seg[r.clone()]) {
            return;
        }
        self.write_gso(gso);
        if !gso.push(&seg[r.clone()]) {
            self.write_one(seg, r, false);
        }
    }

    fn handle(&mut self, shared: &Shared, buf: &mut [u8], pkt: Range<usize>) -> Verdict {
        let class = match shared.peers.keying.udp_port() {
            Some(port) => meshsec_esp::classify_with_port(&buf[pkt.clone()], port),
            None => meshsec_esp::classify_with_port(&buf[pkt.clone()], 0),
        };
        match class {
            Ok(Inbound::Esp { spi, .. }) | Ok(Inbound::UdpEsp { spi, .. }) => {
                self.inbound(shared, buf, spi, pkt)
            }
            Ok(Inbound::NatKeepalive) => Verdict::Drop,
            Ok(Inbound::NotEsp) | Err(meshsec_esp::OpenError::NotEsp) => {
                self.outbound(shared, buf, pkt)
            }
            Err(e) => drop_as(&shared.unattributed, shared, DropReason::from_open(&e)),
        }
    }

    fn inbound(&mut self, shared: &Shared, buf: &mut [u8], spi: u32, pkt: Range<usize>) -> Verdict {
        let Some((peer, gen_bits)) = shared.peers.peer_for_spi(spi) else {
            return drop_as(&shared.unattributed, shared, DropReason::UnknownSpi);
        };
        let plain = match self.sas.open(&shared.peers, peer, gen_bits, spi, buf, pkt) {
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
        self.tally.add_in(plain.len());
        if let Some(t) = self.peer_tally.get(peer.index) {
            t.add_in(plain.len());
        }
        Verdict::Opened(plain)
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
        if self.seal_bytes.held_for_other(peer.index) {
            self.flush_seal_bytes(shared);
        }
        let Some(sa) = self.sas.outbound(peer) else {
            return drop_as(&peer.counters, shared, DropReason::SealFailed);
        };
        let len = pkt.len();
        // One locked instruction per packet: the SA's byte count (its soft
        // limit) is brought up to date once per read.
        match sa.seal(buf, pkt, self.seal_bytes.for_peer(peer.index)) {
            Ok(sealed) => {
                if sa.needs_rekey() {
                    shared.request_rekey(sa.spi());
                }
                self.tally.add_out(len);
                if let Some(t) = self.peer_tally.get(peer.index) {
                    t.add_out(len);
                }
                Verdict::Sealed(sealed)
            }
            Err(e) => {
                tracing::debug!(peer = peer.node_id, error = %e, "seal failed");
                shared.request_rekey(sa.spi());
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
            IpAddr::V4(from) => meshsec_esp::path::icmp::frag_needed(
                original,
                mtu,
                from,
                &mut self.icmp[VIRTIO_NET_HDR_LEN..],
            ),
            IpAddr::V6(from) => meshsec_esp::path::icmpv6::packet_too_big(
                original,
                u32::from(mtu),
                from,
                &mut self.icmp[VIRTIO_NET_HDR_LEN..],
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
