//! Coalesces sealed ESP-in-UDP packets of one flow into one UDP GSO
//! super-packet (virtio-net `GSO_UDP_L4`) so a whole split TCP super-packet
//! goes back to the kernel in one TUN write. The kernel cuts it at exactly
//! the boundaries we appended at (`gso_size` = the first datagram's
//! payload), so every segment on the underlay is one of the sealed packets
//! the MTU logic already bounded; a receiver whose TUN has USO enabled
//! reads it back as one super-packet. Only the last datagram may be shorter
//! (the kernel's rule); anything else starts a new super-packet.
//!
//! Two ways in: [`UdpGso::push`] copies a datagram sealed elsewhere;
//! [`UdpGso::slot`] / [`UdpGso::commit`] let the caller put a plaintext
//! packet where its sealed datagram's payload belongs and seal it right
//! there, so no copy follows the seal. Sealing in place writes the
//! datagram's IP and UDP headers (and moves the plaintext's IP header) into
//! the bytes in front of its payload, which are the previous datagram's
//! tail: the slot saves them first and the commit puts them back.

use std::ops::Range;

use meshsec_esp::{HEADROOM, TAILROOM};
use tun_rs::VIRTIO_NET_HDR_LEN;

use super::offload::{
    Gso, IPPROTO_UDP, UDP_HDR, finish_super_packet, plain_ip_header_len, same_ip_header,
};

const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
/// The kernel refuses UDP GSO packets with more segments (UDP_MAX_SEGMENTS).
const MAX_SEGMENTS: usize = 64;
/// IPv4 total length / IPv6 payload length are 16 bits.
const MAX_LEN: usize = 65535;
/// Room in front of the virtio-net header: a first datagram sealed in
/// place needs the ESP core's headroom in front of its plaintext.
const FRONT: usize = HEADROOM;
/// Where the packet starts in the buffer.
const PKT: usize = FRONT + VIRTIO_NET_HDR_LEN;
/// IPv6 + UDP header: the longest header [`udp_header_len`] accepts.
const MAX_HDRS: usize = 40 + UDP_HDR;
/// Most bytes in front of a slot's payload that a split and seal in place
/// may overwrite: the plaintext may start up to 40 - 16 bytes before the
/// ESP header (transport mode, IPv6: the IP header stays, ESP header and
/// IV take 16 bytes of it), and sealing writes up to HEADROOM before that.
const SAVED: usize = HEADROOM + 24;

/// One super-packet being built: virtio-net header, then the first
/// datagram's IP and UDP headers, then the payloads.
pub struct UdpGso {
    buf: Vec<u8>,
    /// Bytes of packet (after the virtio header).
    len: usize,
    iph: usize,
    seg: usize,
    count: usize,
    /// A short datagram was appended: nothing may follow it.
    closed: bool,
    /// The first datagram's IP and UDP headers (`iph + UDP_HDR` bytes),
    /// kept apart: sealing in place may overwrite them in the buffer
    /// until the commit restores them.
    first: [u8; MAX_HDRS],
    /// Plaintext length of the last datagram sealed in place at a full
    /// segment size, if any: a longer plaintext seals longer.
    plain_seg: Option<usize>,
    /// The bytes in front of the open slot (only one is open at a time),
    /// kept here rather than in the [`Slot`]: moving the array just
    /// written with it stalled on store forwarding (profile).
    saved: [u8; SAVED],
}

/// Where to seal one plaintext packet in place (see [`UdpGso::slot`]),
/// and the bytes of the super-packet the seal may overwrite.
pub struct Slot {
    /// Plaintext range in [`UdpGso::buf_mut`].
    pub plain: Range<usize>,
    /// Where the sealed datagram's UDP payload must start to join.
    payload_at: usize,
    /// Start of the bytes saved in front of `payload_at`.
    saved_from: usize,
}

/// What became of a datagram sealed in a slot.
#[derive(Debug, PartialEq, Eq)]
pub enum Commit {
    /// It is part of the super-packet now.
    Joined,
    /// It does not continue the super-packet (other flow, larger, not
    /// where expected): copy it out of `buf_mut()[range]`, then
    /// [`UdpGso::restore`] the slot before anything else.
    Refused,
}

impl UdpGso {
    pub fn new() -> Self {
        Self {
            buf: vec![0; PKT + MAX_LEN + SAVED + TAILROOM],
            len: 0,
            iph: 0,
            seg: 0,
            count: 0,
            closed: false,
            first: [0; MAX_HDRS],
            plain_seg: None,
            saved: [0; SAVED],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds `pkt`; false when it cannot join the current super-packet (not
    /// a plain UDP datagram, another flow, larger than the segment size, or
    /// full): flush with [`finish`](Self::finish) and push again, or write it
    /// on its own if it is refused while empty.
    pub fn push(&mut self, pkt: &[u8]) -> bool {
        let Some(iph) = udp_header_len(pkt) else {
            return false;
        };
        let payload = pkt.len() - iph - UDP_HDR;
        if self.count == 0 {
            if pkt.len() > MAX_LEN || payload == 0 {
                return false;
            }
            self.buf[PKT..PKT + pkt.len()].copy_from_slice(pkt);
            self.start(iph, pkt.len(), None);
            return true;
        }
        if !self.continues(pkt, iph) {
            return false;
        }
        let at = PKT + self.len;
        self.buf[at..at + payload].copy_from_slice(&pkt[iph + UDP_HDR..]);
        self.append(payload, None);
        true
    }

    /// Starts a super-packet with the datagram of `len` bytes at PKT.
    fn start(&mut self, iph: usize, len: usize, plain: Option<usize>) {
        let hdrs = iph + UDP_HDR;
        self.first[..hdrs].copy_from_slice(&self.buf[PKT..PKT + hdrs]);
        (self.len, self.iph, self.seg, self.count) = (len, iph, len - hdrs, 1);
        self.closed = false;
        self.plain_seg = plain;
    }

    /// Whether the datagram `pkt` (IP header `iph` bytes) may follow.
    fn continues(&self, pkt: &[u8], iph: usize) -> bool {
        let payload = pkt.len() - iph - UDP_HDR;
        !self.closed
            && iph == self.iph
            && payload > 0
            && payload <= self.seg
            && self.count < MAX_SEGMENTS
            && self.len + payload <= MAX_LEN
            && same_flow(&self.first, pkt, iph)
    }

    /// Counts `payload` bytes appended at the end.
    fn append(&mut self, payload: usize, plain: Option<usize>) {
        self.len += payload;
        self.count += 1;
        self.closed = payload < self.seg;
        if !self.closed && plain.is_some() {
            self.plain_seg = plain;
        }
    }

    /// Where to put a plaintext packet of `plain_len` bytes so that,
    /// sealed in place, its UDP payload continues this super-packet:
    /// `esp_delta` is where the seal puts the ESP header relative to the
    /// plaintext's start (transport mode: its IP header length - 16;
    /// tunnel mode: -16), `hdrs` the sealed IP + UDP header length (for
    /// the first datagram). `None` if it would not fit or not join (a
    /// longer plaintext than the full segments', after a short one, full):
    /// finish the super-packet first. Saves the bytes it may overwrite.
    pub fn slot(&mut self, plain_len: usize, esp_delta: isize, hdrs: usize) -> Option<Slot> {
        let payload_at = PKT + if self.count == 0 { hdrs } else { self.len };
        // Conservative: the sealed payload is shorter than this.
        let grown = plain_len + HEADROOM + TAILROOM;
        if self.count > 0
            && (self.closed
                || self.count == MAX_SEGMENTS
                || self.len + grown > MAX_LEN
                || self.plain_seg.is_some_and(|p| plain_len > p))
        {
            return None;
        }
        let plain_at = payload_at.checked_add_signed(-esp_delta)?;
        let plain = plain_at..plain_at + plain_len;
        if plain_at < HEADROOM || plain.end + TAILROOM > self.buf.len() || hdrs > MAX_HDRS {
            return None;
        }
        let saved_from = payload_at.saturating_sub(SAVED).max(PKT);
        if self.count > 0 {
            self.saved[..payload_at - saved_from]
                .copy_from_slice(&self.buf[saved_from..payload_at]);
        }
        Some(Slot {
            plain,
            payload_at,
            saved_from,
        })
    }

    /// The buffer slots point into.
    pub fn buf_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Takes the datagram sealed at `buf_mut()[sealed]` from the plaintext
    /// of `slot` (`plain_len` bytes) into the super-packet if it continues
    /// it; [`Commit::Refused`] leaves it there for the caller.
    pub fn commit(&mut self, slot: &Slot, sealed: Range<usize>, plain_len: usize) -> Commit {
        let Some(pkt) = self.buf.get(sealed.clone()) else {
            return Commit::Refused;
        };
        let Some(iph) = udp_header_len(pkt) else {
            return Commit::Refused;
        };
        let payload = pkt.len() - iph - UDP_HDR;
        if self.count == 0 {
            if pkt.len() > MAX_LEN || payload == 0 {
                return Commit::Refused;
            }
            // Normally already at PKT; a wrong guess of `hdrs` moves it.
            self.buf.copy_within(sealed.clone(), PKT);
            self.start(iph, sealed.len(), Some(plain_len));
            return Commit::Joined;
        }
        if sealed.start + iph + UDP_HDR != slot.payload_at || !self.continues(pkt, iph) {
            return Commit::Refused;
        }
        self.restore(slot);
        self.append(payload, Some(plain_len));
        Commit::Joined
    }

    /// Puts back the bytes in front of the slot that the split and seal
    /// may have overwritten (the super-packet's tail).
    pub fn restore(&mut self, slot: &Slot) {
        if self.count > 0 {
            let n = slot.payload_at - slot.saved_from;
            self.buf[slot.saved_from..slot.payload_at].copy_from_slice(&self.saved[..n]);
        }
    }

    /// Completes the super-packet and returns what to write (virtio-net
    /// header included); the builder is empty afterwards.
    pub fn finish(&mut self) -> &[u8] {
        let count = std::mem::take(&mut self.count);
        let (len, iph) = (self.len, self.iph);
        let (hdr, pkt) = self.buf[FRONT..].split_at_mut(VIRTIO_NET_HDR_LEN);
        let pkt = &mut pkt[..len];
        if count <= 1 {
            // One datagram: no GSO, its checksum is already complete.
            hdr.fill(0);
            return &self.buf[FRONT..PKT + len];
        }
        let udp_len = (len - iph) as u16;
        pkt[iph + 4..iph + 6].copy_from_slice(&udp_len.to_be_bytes());
        let gso = Gso {
            gso_type: VIRTIO_NET_HDR_GSO_UDP_L4,
            hdr_len: iph + UDP_HDR,
            gso_size: self.seg,
            csum_offset: 6,
        };
        finish_super_packet(hdr, pkt, iph, IPPROTO_UDP, &gso);
        &self.buf[FRONT..PKT + len]
    }
}

/// IP header length of an unfragmented UDP datagram without IPv4 options
/// or IPv6 extension headers, whose length fields match `pkt`.
fn udp_header_len(pkt: &[u8]) -> Option<usize> {
    let iph = plain_ip_header_len(pkt, IPPROTO_UDP, UDP_HDR)?;
    let udp_len = usize::from(u16::from_be_bytes([pkt[iph + 4], pkt[iph + 5]]));
    (udp_len == pkt.len() - iph).then_some(iph)
}

/// Same ports and IP header fields ([`same_ip_header`]).
fn same_flow(first: &[u8], pkt: &[u8], iph: usize) -> bool {
    first[iph..iph + 4] == pkt[iph..iph + 4] && same_ip_header(first, pkt, iph)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use meshsec_esp::{ByteTally, Cipher, Encap, Mode, OutboundSa, SaKey};

    use super::*;
    use crate::datapath::offload::F_NEEDS_CSUM;
    use crate::datapath::tcp_split::TcpSplit;
    use crate::datapath::test_packets::{tcp_super_packet, tcp_vnet_hdr};

    fn datagram_v4(id: u16, payload: usize) -> Vec<u8> {
        let total = 28 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = IPPROTO_UDP;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20..22].copy_from_slice(&4500u16.to_be_bytes());
        p[22..24].copy_from_slice(&4500u16.to_be_bytes());
        p[24..26].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
        for (i, b) in p[28..].iter_mut().enumerate() {
            *b = (i as u8) ^ (id as u8);
        }
        p
    }

    #[test]
    fn test_coalesces_equal_then_one_short_and_sets_gso_header() {
        let mut g = UdpGso::new();
        let (a, b, c) = (datagram_v4(1, 100), datagram_v4(2, 100), datagram_v4(3, 40));
        assert!(g.push(&a) && g.push(&b) && g.push(&c));
        // Nothing may follow the short one, nor a larger one.
        assert!(!g.push(&datagram_v4(4, 40)));
        let out = g.finish().to_vec();
        assert!(g.is_empty());
        let hdr = &out[..VIRTIO_NET_HDR_LEN];
        assert_eq!(hdr[0], F_NEEDS_CSUM);
        assert_eq!(hdr[1], VIRTIO_NET_HDR_GSO_UDP_L4);
        assert_eq!(u16::from_ne_bytes([hdr[4], hdr[5]]), 100, "gso_size");
        assert_eq!(u16::from_ne_bytes([hdr[6], hdr[7]]), 20, "csum_start");
        let pkt = &out[VIRTIO_NET_HDR_LEN..];
        assert_eq!(pkt.len(), 28 + 240);
        assert_eq!(u16::from_be_bytes([pkt[2], pkt[3]]) as usize, pkt.len());
        assert_eq!(u16::from_be_bytes([pkt[24], pkt[25]]), 248, "UDP length");
        assert_eq!(
            tun_rs::checksum(&pkt[..20], 0),
            0xffff,
            "IPv4 header checksum"
        );
        assert_eq!(&pkt[28..128], &a[28..]);
        assert_eq!(&pkt[128..228], &b[28..]);
        assert_eq!(&pkt[228..], &c[28..]);
        // CHECKSUM_PARTIAL seed: the folded pseudo-header sum, by hand:
        // 10.0.0.1 + 10.0.0.2 (0x0a00 0x0001 0x0a00 0x0002) + proto 17 + len 248.
        let seed = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 17 + 248;
        assert_eq!(u16::from_be_bytes([pkt[26], pkt[27]]), seed);
    }

    #[test]
    fn test_single_datagram_is_written_unchanged_without_gso() {
        let mut g = UdpGso::new();
        let a = datagram_v4(7, 300);
        assert!(g.push(&a));
        let out = g.finish().to_vec();
        assert_eq!(&out[..VIRTIO_NET_HDR_LEN], &[0u8; VIRTIO_NET_HDR_LEN]);
        assert_eq!(&out[VIRTIO_NET_HDR_LEN..], &a[..]);
    }

    /// Seals every segment of `split` as the worker did before sealing in
    /// place: in its own buffer, then copied in with `push`. Completed
    /// super-packets go to `out`.
    fn seal_and_push(
        sa: &OutboundSa,
        split: &TcpSplit,
        pkt: &[u8],
        g: &mut UdpGso,
        out: &mut Vec<Vec<u8>>,
    ) {
        for i in 0..split.count() {
            let mut seg = vec![0u8; HEADROOM + 2000 + TAILROOM];
            let len = split.segment(pkt, i, &mut seg[HEADROOM..]).unwrap();
            let r = sa
                .seal(
                    &mut seg,
                    HEADROOM..HEADROOM + len,
                    &mut ByteTally::default(),
                )
                .unwrap();
            if !g.push(&seg[r.clone()]) {
                out.push(g.finish().to_vec());
                assert!(g.push(&seg[r]));
            }
        }
    }

    /// The same through slots: each segment cut to its place in the GSO
    /// buffer and sealed there.
    fn seal_in_slots(
        sa: &OutboundSa,
        split: &TcpSplit,
        pkt: &[u8],
        (esp_delta, hdrs): (isize, usize),
        g: &mut UdpGso,
        out: &mut Vec<Vec<u8>>,
    ) -> usize {
        let mut refused = 0;
        for i in 0..split.count() {
            let plain_len = split.segment_len(i);
            let slot = match g.slot(plain_len, esp_delta, hdrs) {
                Some(slot) => slot,
                None => {
                    out.push(g.finish().to_vec());
                    g.slot(plain_len, esp_delta, hdrs)
                        .expect("slot in an empty buffer")
                }
            };
            split
                .segment(pkt, i, &mut g.buf_mut()[slot.plain.clone()])
                .unwrap();
            let r = sa
                .seal(g.buf_mut(), slot.plain.clone(), &mut ByteTally::default())
                .unwrap();
            if g.commit(&slot, r.clone(), plain_len) == Commit::Refused {
                refused += 1;
                let sealed = g.buf_mut()[r].to_vec();
                g.restore(&slot);
                out.push(g.finish().to_vec());
                assert!(g.push(&sealed));
            }
        }
        refused
    }

    fn sa(mode: Mode) -> OutboundSa {
        let ends: (IpAddr, IpAddr) = ([192, 168, 77, 1].into(), [192, 168, 77, 2].into());
        let tunnel = (mode == Mode::Tunnel).then_some(ends);
        let key = SaKey::from_bytes(&[7; 20]).unwrap();
        OutboundSa::new(
            0x1234,
            Cipher::Aes128Gcm,
            key,
            mode,
            Encap::udp_default(),
            tunnel,
        )
        .unwrap()
    }

    #[test]
    fn test_sealing_in_slots_writes_what_sealing_then_pushing_wrote() {
        for (mode, v6) in [
            (Mode::Transport, false),
            (Mode::Transport, true),
            (Mode::Tunnel, false),
        ] {
            let iph = if v6 { 40 } else { 20 };
            let layout = match mode {
                Mode::Transport => (iph as isize - 16, iph + UDP_HDR),
                Mode::Tunnel => (-16, 20 + UDP_HDR),
            };
            // A: 3 full segments and a short one (closes the super-packet).
            // C: the same flow, 45 full segments: more than 64 KiB sealed,
            // so it continues in a second super-packet. B: another flow
            // (transport mode: other addresses outside too) after C's tail.
            let a = tcp_super_packet(v6, 3 * 1000 + 300, 12, 0x18);
            let c = tcp_super_packet(v6, 45 * 1448, 12, 0x10);
            let mut b = tcp_super_packet(v6, 2 * 1448, 12, 0x10);
            b[iph - 1] ^= 1; // last byte of the destination address
            let mut old = Vec::new();
            let mut new = Vec::new();
            let (sa_old, sa_new) = (sa(mode), sa(mode));
            let (mut g_old, mut g_new) = (UdpGso::new(), UdpGso::new());
            let mut refused = 0;
            for (pkt, gso) in [(&a, 1000), (&c, 1448), (&b, 1448)] {
                let hdr = tcp_vnet_hdr(v6, gso, iph + 32);
                let split = TcpSplit::new(pkt, &hdr, 64).unwrap().unwrap();
                seal_and_push(&sa_old, &split, pkt, &mut g_old, &mut old);
                refused += seal_in_slots(&sa_new, &split, pkt, layout, &mut g_new, &mut new);
            }
            old.push(g_old.finish().to_vec());
            new.push(g_new.finish().to_vec());
            let what = format!("{mode:?} v6 {v6}");
            assert_eq!(old.len(), new.len(), "{what}: super-packets written");
            assert!(old.len() >= 3, "{what}: the test breaks super-packets");
            for (i, (o, n)) in old.iter().zip(&new).enumerate() {
                assert_eq!(o, n, "{what}: super-packet {i}");
            }
            let breaks = if mode == Mode::Transport { 1 } else { 0 };
            assert_eq!(refused, breaks, "{what}: only the flow break was refused");
        }
    }

    #[test]
    fn test_slot_refused_after_a_short_datagram_or_for_a_longer_one() {
        let sa = sa(Mode::Transport);
        let pkt = tcp_super_packet(false, 1000 + 300, 12, 0x10);
        let split = TcpSplit::new(&pkt, &tcp_vnet_hdr(false, 1000, 52), 64)
            .unwrap()
            .unwrap();
        let mut g = UdpGso::new();
        let mut out = Vec::new();
        // The first segment alone: a longer plaintext is predicted not to
        // join; an equal one gets a slot.
        let slot = g.slot(split.segment_len(0), 4, 28).unwrap();
        split
            .segment(&pkt, 0, &mut g.buf_mut()[slot.plain.clone()])
            .unwrap();
        let r = sa
            .seal(g.buf_mut(), slot.plain.clone(), &mut ByteTally::default())
            .unwrap();
        assert_eq!(g.commit(&slot, r, split.segment_len(0)), Commit::Joined);
        assert!(g.slot(split.segment_len(0) + 1, 4, 28).is_none());
        assert!(g.slot(split.segment_len(0), 4, 28).is_some());
        // After the short one nothing may follow.
        assert_eq!(
            seal_in_slots(&sa, &split, &pkt, (4, 28), &mut g, &mut out),
            0
        );
        assert!(out.is_empty());
        assert!(g.slot(split.segment_len(1), 4, 28).is_none());
    }

    #[test]
    fn test_refuses_other_flows_and_non_udp() {
        let mut g = UdpGso::new();
        assert!(g.push(&datagram_v4(1, 100)));
        let mut other_port = datagram_v4(2, 100);
        other_port[20] = 1;
        assert!(!g.push(&other_port));
        let mut other_dst = datagram_v4(2, 100);
        other_dst[19] = 9;
        assert!(!g.push(&other_dst));
        let mut larger = datagram_v4(2, 101);
        larger[19] = 2;
        assert!(!g.push(&larger));
        let mut tcp = datagram_v4(2, 100);
        tcp[9] = 6;
        assert!(!g.push(&tcp));
        let mut fragment = datagram_v4(2, 100);
        fragment[6] = 0x20; // more fragments
        assert!(!g.push(&fragment));
        let mut bad_len = datagram_v4(2, 100);
        bad_len[3] ^= 1;
        assert!(!g.push(&bad_len));
        assert!(!g.push(&[0x45; 10]));
        assert!(g.push(&datagram_v4(2, 100)), "same flow still joins");
    }
}
