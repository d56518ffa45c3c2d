//! One worker per TUN queue: read a packet into a buffer with the ESP
//! core's headroom and tailroom, decide, seal or open in place, write back.
//! Buffers are allocated once per worker; nothing is allocated per packet.

use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;

use meshsec_esp::{Family, HEADROOM, Inbound, TAILROOM};
use tun_rs::SyncDevice;

use super::Shared;
use super::packet::{self, IpSummary};
use crate::metrics::{Counters, DropReason};

/// Largest packet a TUN queue hands us (no offload: the device MTU, but the
/// kernel accepts up to 64 KiB MTUs, so size for that).
const MAX_PACKET: usize = 65535;

/// What to do with a packet once handled.
enum Verdict {
    /// Write `buf[range]` back to the TUN.
    Send(Range<usize>),
    /// Write the ICMP error in the scratch buffer (`len` bytes) back.
    Icmp(usize),
    Drop,
}

pub struct Worker {
    shared: Arc<Shared>,
    dev: SyncDevice,
    buf: Vec<u8>,
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
            dev,
            buf: vec![0; HEADROOM + MAX_PACKET + TAILROOM],
            icmp: vec![0; 1280],
            strict,
        }
    }

    pub fn run(mut self) -> std::io::Result<()> {
        loop {
            let n = match self
                .dev
                .recv(&mut self.buf[HEADROOM..HEADROOM + MAX_PACKET])
            {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let verdict = self.handle(HEADROOM..HEADROOM + n);
            let out = match verdict {
                Verdict::Send(r) => self.dev.send(&self.buf[r]),
                Verdict::Icmp(len) => self.dev.send(&self.icmp[..len]),
                Verdict::Drop => continue,
            };
            if let Err(e) = out {
                // The kernel refused a packet (e.g. no buffer): drop it, as a
                // router would, and keep going.
                tracing::debug!(error = %e, "TUN write failed");
            }
        }
    }

    fn handle(&mut self, pkt: Range<usize>) -> Verdict {
        let shared = self.shared.clone();
        let class = match shared.peers.keying.udp_port() {
            Some(port) => meshsec_esp::classify_with_port(&self.buf[pkt.clone()], port),
            None => meshsec_esp::classify_with_port(&self.buf[pkt.clone()], 0),
        };
        match class {
            Ok(Inbound::Esp { spi, .. }) | Ok(Inbound::UdpEsp { spi, .. }) => {
                self.inbound(&shared, spi, pkt)
            }
            Ok(Inbound::NatKeepalive) => Verdict::Drop,
            Ok(Inbound::NotEsp) | Err(meshsec_esp::OpenError::NotEsp) => {
                self.outbound(&shared, pkt)
            }
            Err(e) => drop_as(&shared.unattributed, &shared, DropReason::from_open(&e)),
        }
    }

    fn inbound(&mut self, shared: &Shared, spi: u32, pkt: Range<usize>) -> Verdict {
        let Some((peer, gen_bits)) = shared.peers.peer_for_spi(spi) else {
            return drop_as(&shared.unattributed, shared, DropReason::UnknownSpi);
        };
        let plain = match shared.peers.open(peer, gen_bits, spi, &mut self.buf, pkt) {
            Ok(r) => r,
            Err(e) => return drop_as(&peer.counters, shared, DropReason::from_open(&e)),
        };
        let Some(ip) = packet::summarize(&self.buf[plain.clone()]) else {
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

    fn outbound(&mut self, shared: &Shared, pkt: Range<usize>) -> Verdict {
        let Some(ip) = packet::summarize(&self.buf[pkt.clone()]) else {
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
            return self.too_big(shared, &peer.counters, &ip, pkt, max);
        }
        if packet::is_tcp_syn(&self.buf[pkt.clone()], &ip) {
            let family = if ip.src.is_ipv4() {
                Family::V4
            } else {
                Family::V6
            };
            let mss = meshsec_esp::path::mss_for_mtu(max, family);
            // A SYN the clamp cannot parse goes out unclamped; seal decides.
            let _ = meshsec_esp::path::clamp_mss(&mut self.buf[pkt.clone()], mss);
        }
        let sa = peer.outbound();
        let len = pkt.len() as u64;
        match sa.seal(&mut self.buf, pkt) {
            Ok(sealed) => {
                for c in [&peer.counters, &shared.metrics.total] {
                    c.packets_out.inc();
                    c.bytes_out.inc_by(len);
                }
                if sa.needs_rekey() {
                    shared.request_rekey();
                }
                Verdict::Send(sealed)
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
        pkt: Range<usize>,
        max: usize,
    ) -> Verdict {
        let mtu = max.min(usize::from(u16::MAX)) as u16;
        let original = &self.buf[pkt];
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
