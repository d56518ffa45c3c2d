//! One TUN read with its virtio-net header, split into segments: what
//! tun-rs `recv_multiple` does, except for IPv4 ESP-in-UDP and TCP. RFC
//! 3948 §2.1 lets IPv4 ESP-in-UDP carry a zero UDP checksum and its
//! receiver skip verifying it (the ESP ICV authenticates the payload), and
//! these datagrams end in this process (opened, or dropped and counted).
//! So their super-packets are not split here at all but cut in place in
//! the read buffer while they are handled (`esp_split`), without a
//! checksum pass over every datagram, which tun-rs would compute; a single
//! such datagram gets UDP checksum 0. IPv6 ESP-in-UDP keeps tun-rs's split:
//! a zero checksum is not allowed there. TCP super-packets are left in the
//! read buffer too, for `tcp_split` to cut one segment at a time where the
//! worker wants it (one pass per payload byte for copy and checksum);
//! everything else (other UDP, headers that split does not handle) goes
//! through tun-rs's split unchanged.

use std::io;

use tun_rs::{VIRTIO_NET_HDR_GSO_UDP_L4, VIRTIO_NET_HDR_LEN, VirtioNetHdr};

use super::esp_split::EspSplit;
use super::offload::{F_NEEDS_CSUM, IPPROTO_UDP, UDP_HDR};
use super::tcp_split::TcpSplit;

const GSO_NONE: u8 = 0;

/// What one read left for the worker.
pub enum Read {
    /// This many segments in the segment buffers.
    Segments(usize),
    /// An IPv4 ESP-in-UDP super-packet in the read buffer, after the
    /// virtio-net header, to be cut in place.
    Esp(EspSplit),
    /// A TCP super-packet in the read buffer, after the virtio-net header,
    /// to be cut one segment at a time where the caller wants each.
    Tcp(TcpSplit),
}

/// Splits one TUN read, `raw` (virtio-net header + packet), into `segs`
/// (each at `offset`), or leaves an IPv4 ESP-in-UDP or a TCP super-packet
/// in `raw` to be cut in place. An error means the read was unusable (bad
/// virtio header or headers); it has no OS error code, and the worker
/// drops the read and counts it. Apart from the device, so tests can feed
/// it any bytes.
pub fn parse(
    raw: &mut [u8],
    segs: &mut [Vec<u8>],
    sizes: &mut [usize],
    offset: usize,
    esp_port: Option<u16>,
) -> io::Result<Read> {
    if raw.len() <= VIRTIO_NET_HDR_LEN {
        return Err(io::Error::other(
            "TUN read shorter than the virtio-net header",
        ));
    }
    let hdr = VirtioNetHdr::decode(&raw[..VIRTIO_NET_HDR_LEN])?;
    let pkt = &mut raw[VIRTIO_NET_HDR_LEN..];
    if hdr.gso_type == VIRTIO_NET_HDR_GSO_UDP_L4
        && let Some(iph) = esp_port.and_then(|port| esp_in_udp_v4(pkt, port))
    {
        let gso_size = usize::from(hdr.gso_size);
        return EspSplit::new(pkt, iph, gso_size, segs.len()).map(Read::Esp);
    }
    if hdr.gso_type != GSO_NONE
        && let Some(tcp) = TcpSplit::new(pkt, &hdr, segs.len())
    {
        return tcp.map(Read::Tcp);
    }
    split(hdr, pkt, segs, sizes, offset, esp_port).map(Read::Segments)
}

/// Splits `pkt` as described by `hdr` with tun-rs (see [`parse`], which
/// has already left the super-packets `esp_split` and `tcp_split` cut in
/// place).
pub fn split(
    mut hdr: VirtioNetHdr,
    pkt: &mut [u8],
    segs: &mut [Vec<u8>],
    sizes: &mut [usize],
    offset: usize,
    esp_port: Option<u16>,
) -> io::Result<usize> {
    if hdr.gso_type == GSO_NONE {
        if hdr.flags & F_NEEDS_CSUM != 0 {
            match esp_port.and_then(|port| esp_in_udp_v4(pkt, port)) {
                Some(iph) => pkt[iph + 6..iph + 8].fill(0),
                None => complete_checksum(pkt, hdr.csum_start, hdr.csum_offset)?,
            }
        }
        let out = segs
            .first_mut()
            .and_then(|s| s.get_mut(offset..offset + pkt.len()))
            .ok_or_else(|| io::Error::other("packet larger than a segment buffer"))?;
        out.copy_from_slice(pkt);
        sizes[0] = pkt.len();
        return Ok(1);
    }
    // tun-rs's own read fixes hdr_len up first: the kernel may report the
    // whole first packet there on the forwarding path.
    let start = usize::from(hdr.csum_start);
    let l4 = if hdr.gso_type == VIRTIO_NET_HDR_GSO_UDP_L4 {
        UDP_HDR
    } else {
        let off = pkt
            .get(start + 12)
            .ok_or_else(|| io::Error::other("TCP header truncated"))?;
        usize::from(off >> 4) * 4
    };
    if !(UDP_HDR..=60).contains(&l4) || start + l4 > pkt.len() {
        return Err(io::Error::other("bad transport header length"));
    }
    hdr.hdr_len = (start + l4) as u16;
    let is_v6 = pkt.first().is_some_and(|b| b >> 4 == 6);
    match tun_rs::gso_split(pkt, hdr, segs, sizes, offset, is_v6) {
        // tun-rs cuts headers without payload into nothing: a read that
        // must be counted as malformed, not silently vanish.
        Ok(0) => Err(io::Error::other("GSO super-packet without payload")),
        Ok(n) => Ok(n),
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

/// IP header length if `pkt` is an unfragmented IPv4 UDP datagram to
/// `port` (its UDP header included).
fn esp_in_udp_v4(pkt: &[u8], port: u16) -> Option<usize> {
    let first = *pkt.first()?;
    let iph = usize::from(first & 0x0f) * 4;
    let unfragmented = pkt.get(6)? & 0x3f == 0 && *pkt.get(7)? == 0;
    let dport = u16::from_be_bytes([*pkt.get(iph + 2)?, *pkt.get(iph + 3)?]);
    (first >> 4 == 4
        && iph >= 20
        && pkt[9] == IPPROTO_UDP
        && unfragmented
        && pkt.len() >= iph + UDP_HDR
        && dport == port)
        .then_some(iph)
}

/// CHECKSUM_PARTIAL: the field at `start + offset` holds the pseudo-header
/// sum; the checksum over `pkt[start..]` completes it.
fn complete_checksum(pkt: &mut [u8], start: u16, offset: u16) -> io::Result<()> {
    let (start, at) = (usize::from(start), usize::from(start) + usize::from(offset));
    if at + 2 > pkt.len() {
        return Err(io::Error::other("checksum field beyond the packet"));
    }
    let initial = u16::from_be_bytes([pkt[at], pkt[at + 1]]);
    pkt[at..at + 2].fill(0);
    let sum = !tun_rs::checksum(&pkt[start..], u64::from(initial));
    pkt[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::test_packets;

    const PORT: u16 = 4500;

    fn super_packet(n: usize) -> Vec<u8> {
        test_packets::udp4_super_packet(n, PORT)
    }

    fn gso_hdr(gso_size: u16) -> VirtioNetHdr {
        VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_UDP_L4,
            hdr_len: 28,
            gso_size,
            csum_start: 20,
            csum_offset: 6,
        }
    }

    fn bufs() -> (Vec<Vec<u8>>, Vec<usize>) {
        (vec![vec![0; 4 + 2000]; 4], vec![0; 4])
    }

    #[test]
    fn test_other_udp_port_keeps_checksum() {
        let mut pkt = super_packet(1500);
        let (mut segs, mut sizes) = bufs();
        let n = split(
            gso_hdr(1000),
            &mut pkt,
            &mut segs,
            &mut sizes,
            4,
            Some(PORT + 1),
        )
        .unwrap();
        assert_eq!(n, 2);
        for (i, seg) in segs.iter().take(2).enumerate() {
            let d = &seg[4..4 + sizes[i]];
            assert_ne!(&d[26..28], &[0, 0], "tun-rs computed a checksum");
        }
    }

    #[test]
    fn test_gso_headers_without_payload_refused() {
        // Found by read_props: tun-rs cut this into zero segments, and the
        // read vanished uncounted.
        let (mut segs, mut sizes) = bufs();
        let mut tcp = test_packets::tcp_super_packet(false, 0, 0, 0x10);
        let hdr = test_packets::tcp_vnet_hdr(false, 1400, 40);
        let err = split(hdr, &mut tcp, &mut segs, &mut sizes, 4, None).unwrap_err();
        assert!(err.to_string().contains("without payload"), "{err}");
        let mut udp = super_packet(0);
        let err = split(gso_hdr(1000), &mut udp, &mut segs, &mut sizes, 4, None).unwrap_err();
        assert!(err.to_string().contains("without payload"), "{err}");
    }

    #[test]
    fn test_single_esp_datagram_checksum_zeroed_other_completed() {
        let mut hdr = gso_hdr(0);
        hdr.gso_type = GSO_NONE;
        let (mut segs, mut sizes) = bufs();
        let mut esp = super_packet(100);
        assert_eq!(
            split(hdr, &mut esp, &mut segs, &mut sizes, 4, Some(PORT)).unwrap(),
            1
        );
        assert_eq!(&segs[0][4 + 26..4 + 28], &[0, 0]);
        assert_eq!(segs[0][4..4 + sizes[0]][28..], esp[28..]);

        let mut other = super_packet(100);
        other[26..28].fill(0);
        split(hdr, &mut other, &mut segs, &mut sizes, 4, None).unwrap();
        // Initial field 0 = no pseudo-header: the sum over the UDP part
        // with the written checksum folds to all ones.
        assert_eq!(tun_rs::checksum(&segs[0][4 + 20..4 + sizes[0]], 0), 0xffff);
    }
}
