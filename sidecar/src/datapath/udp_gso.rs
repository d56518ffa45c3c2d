//! Coalesces sealed ESP-in-UDP packets of one flow into one UDP GSO
//! super-packet (virtio-net `GSO_UDP_L4`) so a whole split TCP super-packet
//! goes back to the kernel in one TUN write. The kernel cuts it at exactly
//! the boundaries we appended at (`gso_size` = the first datagram's
//! payload), so every segment on the underlay is one of the sealed packets
//! the MTU logic already bounded; a receiver whose TUN has USO enabled
//! reads it back as one super-packet. Only the last datagram may be shorter
//! (the kernel's rule); anything else starts a new super-packet.

use tun_rs::VIRTIO_NET_HDR_LEN;

use super::offload::{
    Gso, IPPROTO_UDP, UDP_HDR, finish_super_packet, plain_ip_header_len, same_ip_header,
};

const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
/// The kernel refuses UDP GSO packets with more segments (UDP_MAX_SEGMENTS).
const MAX_SEGMENTS: usize = 64;
/// IPv4 total length / IPv6 payload length are 16 bits.
const MAX_LEN: usize = 65535;

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
}

impl UdpGso {
    pub fn new() -> Self {
        Self {
            buf: vec![0; VIRTIO_NET_HDR_LEN + MAX_LEN],
            len: 0,
            iph: 0,
            seg: 0,
            count: 0,
            closed: false,
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
            self.buf[VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + pkt.len()].copy_from_slice(pkt);
            (self.len, self.iph, self.seg, self.count) = (pkt.len(), iph, payload, 1);
            self.closed = false;
            return true;
        }
        let first = &self.buf[VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + self.iph + UDP_HDR];
        if self.closed
            || iph != self.iph
            || payload == 0
            || payload > self.seg
            || self.count == MAX_SEGMENTS
            || self.len + payload > MAX_LEN
            || !same_flow(first, pkt, iph)
        {
            return false;
        }
        let at = VIRTIO_NET_HDR_LEN + self.len;
        self.buf[at..at + payload].copy_from_slice(&pkt[iph + UDP_HDR..]);
        self.len += payload;
        self.count += 1;
        self.closed = payload < self.seg;
        true
    }

    /// Completes the super-packet and returns what to write (virtio-net
    /// header included); the builder is empty afterwards.
    pub fn finish(&mut self) -> &[u8] {
        let count = std::mem::take(&mut self.count);
        let (len, iph) = (self.len, self.iph);
        let (hdr, pkt) = self.buf.split_at_mut(VIRTIO_NET_HDR_LEN);
        let pkt = &mut pkt[..len];
        if count <= 1 {
            // One datagram: no GSO, its checksum is already complete.
            hdr.fill(0);
            return &self.buf[..VIRTIO_NET_HDR_LEN + len];
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
        &self.buf[..VIRTIO_NET_HDR_LEN + len]
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
    use super::*;
    use crate::datapath::offload::F_NEEDS_CSUM;

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
