//! Coalesces opened TCP segments of one flow, in sequence, into one TSO
//! super-packet (virtio-net `GSO_TCPV4/6`) so the kernel forwards a whole
//! burst to the pod in one traversal. Only consecutive segments join (one
//! super-packet in progress, no flow table): segments from one split
//! super-packet or one peer's burst arrive back to back. The rules follow
//! the kernel's own GRO: same addresses, ports, IP fields, TCP header
//! length and options, ACK number and window; the sequence number
//! continues the last one; flags only ACK (PSH ends the super-packet);
//! every segment the size of the first except a shorter last one. The
//! kernel recomputes the super-packet's checksum, so a segment that was not
//! authenticated (plaintext handed back) has its checksum verified before
//! it joins, which must not launder a bad one. An opened segment is not
//! verified: the ESP ICV already proved it is, byte for byte, what the peer
//! sealed, so transit corruption cannot reach here (the reasoning of the
//! kernel's WireGuard, which marks every decrypted packet
//! CHECKSUM_UNNECESSARY; docs/datapath.md). Nothing is allocated per packet.

use tun_rs::VIRTIO_NET_HDR_LEN;

use super::offload::{
    F_DATA_VALID, Gso, IPPROTO_TCP, finish_super_packet, plain_ip_header_len, pseudo_header,
    same_ip_header,
};

const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// Segments per super-packet, within the kernel's default gso_max_segs.
const MAX_SEGMENTS: usize = 64;
const MAX_LEN: usize = 65535;

/// The TCP super-packet being built: virtio-net header, the first
/// segment's headers, then the payloads.
pub struct TcpGro {
    buf: Vec<u8>,
    len: usize,
    /// IP header length and IP + TCP header length of the first segment.
    iph: usize,
    hdrs: usize,
    seg: usize,
    count: usize,
    next_seq: u32,
    closed: bool,
    /// Every segment in it was authenticated (see [`TcpGro::push`]).
    authenticated: bool,
}

/// Header lengths of a TCP segment that may be coalesced.
struct Candidate {
    iph: usize,
    hdrs: usize,
}

impl TcpGro {
    pub fn new() -> Self {
        Self {
            buf: vec![0; VIRTIO_NET_HDR_LEN + MAX_LEN],
            len: 0,
            iph: 0,
            hdrs: 0,
            seg: 0,
            count: 0,
            next_seq: 0,
            closed: false,
            authenticated: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds `pkt`; false when it cannot join (not a coalescible TCP segment,
    /// another flow, out of sequence, full, or a bad checksum): flush with
    /// [`finish`](Self::finish) and push again, or write it on its own if it
    /// is refused while empty. `authenticated`: `pkt` was opened (its ICV
    /// verified), so its checksum is not checked again.
    pub fn push(&mut self, pkt: &[u8], authenticated: bool) -> bool {
        let Some(c) = candidate(pkt) else {
            return false;
        };
        let payload = pkt.len() - c.hdrs;
        let seq = u32::from_be_bytes([
            pkt[c.iph + 4],
            pkt[c.iph + 5],
            pkt[c.iph + 6],
            pkt[c.iph + 7],
        ]);
        let psh = pkt[c.iph + 13] & TCP_PSH != 0;
        if self.count == 0 {
            if payload == 0 || !(authenticated || checksum_ok(pkt, c.iph)) {
                return false;
            }
            self.buf[VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + pkt.len()].copy_from_slice(pkt);
            (self.len, self.iph, self.hdrs, self.seg, self.count) =
                (pkt.len(), c.iph, c.hdrs, payload, 1);
            self.next_seq = seq.wrapping_add(payload as u32);
            self.closed = psh;
            self.authenticated = authenticated;
            return true;
        }
        let first = &self.buf[VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + self.hdrs];
        if self.closed
            || c.hdrs != self.hdrs
            || c.iph != self.iph
            || payload == 0
            || payload > self.seg
            || seq != self.next_seq
            || self.count == MAX_SEGMENTS
            || self.len + payload > MAX_LEN
            || !same_flow(first, pkt, c.iph)
            || !(authenticated || checksum_ok(pkt, c.iph))
        {
            return false;
        }
        let at = VIRTIO_NET_HDR_LEN + self.len;
        self.buf[at..at + payload].copy_from_slice(&pkt[c.hdrs..]);
        self.len += payload;
        self.count += 1;
        self.authenticated &= authenticated;
        self.next_seq = seq.wrapping_add(payload as u32);
        if psh {
            // The super-packet's PSH: the kernel sets it on the last segment.
            self.buf[VIRTIO_NET_HDR_LEN + self.iph + 13] |= TCP_PSH;
        }
        self.closed = psh || payload < self.seg;
        true
    }

    /// Completes the super-packet and returns what to write (virtio-net
    /// header included); the builder is empty afterwards.
    pub fn finish(&mut self) -> &[u8] {
        let count = std::mem::take(&mut self.count);
        let (len, iph) = (self.len, self.iph);
        let (hdr, pkt) = self.buf.split_at_mut(VIRTIO_NET_HDR_LEN);
        if count <= 1 {
            // One segment: no GSO, its checksum complete (verified), or
            // authenticated, which the kernel is told (DATA_VALID) as for
            // any opened packet written on its own.
            hdr.fill(0);
            if self.authenticated {
                hdr[0] = F_DATA_VALID;
            }
            return &self.buf[..VIRTIO_NET_HDR_LEN + len];
        }
        let gso_type = if pkt[0] >> 4 == 4 {
            VIRTIO_NET_HDR_GSO_TCPV4
        } else {
            VIRTIO_NET_HDR_GSO_TCPV6
        };
        let gso = Gso {
            gso_type,
            hdr_len: self.hdrs,
            gso_size: self.seg,
            csum_offset: 16,
        };
        finish_super_packet(hdr, &mut pkt[..len], iph, IPPROTO_TCP, &gso);
        &self.buf[..VIRTIO_NET_HDR_LEN + len]
    }
}

/// An unfragmented TCP segment without IPv4 options or IPv6 extension
/// headers, lengths consistent, flags ACK with at most PSH besides.
fn candidate(pkt: &[u8]) -> Option<Candidate> {
    let iph = plain_ip_header_len(pkt, IPPROTO_TCP, 20)?;
    let hdrs = iph + usize::from(pkt[iph + 12] >> 4) * 4;
    let flags = pkt[iph + 13];
    (hdrs >= iph + 20 && hdrs <= pkt.len() && flags & !TCP_PSH == TCP_ACK)
        .then_some(Candidate { iph, hdrs })
}

/// Same flow and the header fields every segment of a super-packet shares:
/// the IP ones ([`same_ip_header`]); TCP ports, ACK number, header length,
/// window and options.
fn same_flow(first: &[u8], pkt: &[u8], iph: usize) -> bool {
    let ip = same_ip_header(first, pkt, iph);
    let t = iph;
    ip && first[t..t + 4] == pkt[t..t + 4]
        && first[t + 8..t + 13] == pkt[t + 8..t + 13]
        && first[t + 14..t + 16] == pkt[t + 14..t + 16]
        && first[t + 20..] == pkt[t + 20..first.len()]
}

fn checksum_ok(pkt: &[u8], iph: usize) -> bool {
    let tcp_len = (pkt.len() - iph) as u16;
    let pseudo = pseudo_header(pkt, iph, IPPROTO_TCP, tcp_len);
    tun_rs::checksum(&pkt[iph..], u64::from(pseudo)) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::offload::F_NEEDS_CSUM;

    /// IPv4 TCP segment 10.0.0.1:1000 -> 10.0.0.2:2000, ACK, valid checksum.
    fn segment(seq: u32, payload: usize, flags: u8) -> Vec<u8> {
        let total = 40 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = IPPROTO_TCP;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20..22].copy_from_slice(&1000u16.to_be_bytes());
        p[22..24].copy_from_slice(&2000u16.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[28..32].copy_from_slice(&77u32.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = flags;
        p[34..36].copy_from_slice(&512u16.to_be_bytes());
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7) ^ (seq as u8);
        }
        fix(&mut p);
        p
    }

    fn fix(p: &mut [u8]) {
        p[10..12].fill(0);
        let ip = !tun_rs::checksum(&p[..20], 0);
        p[10..12].copy_from_slice(&ip.to_be_bytes());
        p[36..38].fill(0);
        let tcp = !tun_rs::checksum(
            &p[20..],
            u64::from(pseudo_header(p, 20, IPPROTO_TCP, (p.len() - 20) as u16)),
        );
        p[36..38].copy_from_slice(&tcp.to_be_bytes());
    }

    #[test]
    fn test_coalesces_in_sequence_and_sets_tso_header() {
        let mut g = TcpGro::new();
        let (a, b, c) = (
            segment(1000, 100, TCP_ACK),
            segment(1100, 100, TCP_ACK),
            segment(1200, 30, TCP_ACK | TCP_PSH),
        );
        assert!(g.push(&a, false) && g.push(&b, false) && g.push(&c, false));
        assert!(
            !g.push(&segment(1230, 30, TCP_ACK), false),
            "nothing after PSH / a short one"
        );
        let out = g.finish().to_vec();
        assert!(g.is_empty());
        let hdr = &out[..VIRTIO_NET_HDR_LEN];
        assert_eq!((hdr[0], hdr[1]), (F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4));
        assert_eq!(u16::from_ne_bytes([hdr[2], hdr[3]]), 40, "hdr_len");
        assert_eq!(u16::from_ne_bytes([hdr[4], hdr[5]]), 100, "gso_size");
        assert_eq!(u16::from_ne_bytes([hdr[6], hdr[7]]), 20, "csum_start");
        assert_eq!(u16::from_ne_bytes([hdr[8], hdr[9]]), 16, "csum_offset");
        let pkt = &out[VIRTIO_NET_HDR_LEN..];
        assert_eq!(pkt.len(), 40 + 230);
        assert_eq!(usize::from(u16::from_be_bytes([pkt[2], pkt[3]])), pkt.len());
        assert_eq!(
            tun_rs::checksum(&pkt[..20], 0),
            0xffff,
            "IPv4 header checksum"
        );
        assert_eq!(
            pkt[33],
            TCP_ACK | TCP_PSH,
            "PSH carried to the super-packet"
        );
        assert_eq!(&pkt[40..140], &a[40..]);
        assert_eq!(&pkt[140..240], &b[40..]);
        assert_eq!(&pkt[240..], &c[40..]);
        // Partial checksum seed by hand: 10.0.0.1 + 10.0.0.2 + proto 6 + len 250.
        assert_eq!(
            u16::from_be_bytes([pkt[36], pkt[37]]),
            0x0a00 + 1 + 0x0a00 + 2 + 6 + 250
        );
    }

    #[test]
    fn test_single_segment_is_written_unchanged() {
        let mut g = TcpGro::new();
        let a = segment(5, 200, TCP_ACK);
        assert!(g.push(&a, false));
        let out = g.finish().to_vec();
        assert_eq!(&out[..VIRTIO_NET_HDR_LEN], &[0u8; VIRTIO_NET_HDR_LEN]);
        assert_eq!(&out[VIRTIO_NET_HDR_LEN..], &a[..]);
    }

    #[test]
    fn test_refuses_gaps_other_flows_flags_and_bad_checksums() {
        let mut g = TcpGro::new();
        assert!(g.push(&segment(1000, 100, TCP_ACK), false));
        assert!(!g.push(&segment(1200, 100, TCP_ACK), false), "sequence gap");
        assert!(
            !g.push(&segment(1100, 101, TCP_ACK), false),
            "larger than the first"
        );
        assert!(!g.push(&segment(1100, 100, TCP_ACK | 0x01), false), "FIN");
        let mut other_port = segment(1100, 100, TCP_ACK);
        other_port[23] = 1;
        fix(&mut other_port);
        assert!(!g.push(&other_port, false));
        let mut other_ack = segment(1100, 100, TCP_ACK);
        other_ack[31] = 1;
        fix(&mut other_ack);
        assert!(!g.push(&other_ack, false));
        let mut other_window = segment(1100, 100, TCP_ACK);
        other_window[35] = 1;
        fix(&mut other_window);
        assert!(!g.push(&other_window, false));
        let mut corrupt = segment(1100, 100, TCP_ACK);
        corrupt[50] ^= 0xff;
        assert!(
            !g.push(&corrupt, false),
            "bad TCP checksum must not be laundered"
        );
        assert!(!g.push(&segment(1100, 0, TCP_ACK), false), "pure ACK");
        assert!(
            g.push(&segment(1100, 100, TCP_ACK), false),
            "the right one still joins"
        );
        let mut fresh = TcpGro::new();
        assert!(
            !fresh.push(&segment(1, 100, 0x02), false),
            "SYN never starts one"
        );
        assert!(!fresh.push(&[0x45; 30], false));
    }

    #[test]
    fn test_authenticated_segments_join_unverified_and_single_is_data_valid() {
        let mut g = TcpGro::new();
        let mut corrupt = segment(1000, 100, TCP_ACK);
        corrupt[50] ^= 0xff;
        assert!(!g.push(&corrupt, false), "unauthenticated: verified");
        assert!(g.push(&corrupt, true), "opened: the ICV vouched for it");
        let mut next = segment(1100, 100, TCP_ACK);
        next[60] ^= 0xff;
        assert!(g.push(&next, true));
        let out = g.finish().to_vec();
        assert_eq!(out[1], VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!(
            &out[VIRTIO_NET_HDR_LEN + 40..VIRTIO_NET_HDR_LEN + 140],
            &corrupt[40..]
        );

        assert!(g.push(&segment(5, 200, TCP_ACK), true));
        let out = g.finish().to_vec();
        assert_eq!(out[0], F_DATA_VALID, "a lone opened segment: DATA_VALID");
        assert!(g.push(&segment(5, 200, TCP_ACK), false));
        assert!(g.push(&segment(205, 200, TCP_ACK), true));
        assert!(g.push(&segment(405, 100, TCP_ACK), true));
        assert_eq!(g.finish()[0], F_NEEDS_CSUM);
        assert!(g.push(&segment(5, 200, TCP_ACK), false));
        assert_eq!(
            g.finish()[0],
            0,
            "a lone handed-back segment: kernel verifies"
        );
    }
}
