//! Header arithmetic shared by the TUN offload paths (the TCP coalescer,
//! the UDP GSO coalescer and the ESP-in-UDP split): which packets are plain
//! enough to coalesce, the IP fields every segment shares, length and
//! checksum fix-ups, and the virtio-net header of a GSO super-packet.

/// virtio-net `VIRTIO_NET_HDR_F_NEEDS_CSUM` (CHECKSUM_PARTIAL).
pub const F_NEEDS_CSUM: u8 = 1;
/// virtio-net `VIRTIO_NET_HDR_F_DATA_VALID` (CHECKSUM_UNNECESSARY): the
/// kernel does not verify the packet's transport checksum.
pub const F_DATA_VALID: u8 = 2;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const UDP_HDR: usize = 8;

/// IP header length (20 or 40) of an unfragmented `proto` packet without
/// IPv4 options or IPv6 extension headers, whose length field matches
/// `pkt` and which has at least `min_l4` bytes after the IP header.
pub fn plain_ip_header_len(pkt: &[u8], proto: u8, min_l4: usize) -> Option<usize> {
    match pkt.first()? >> 4 {
        4 if pkt.len() >= 20 + min_l4 => {
            let unfragmented = pkt[6] & 0x3f == 0 && pkt[7] == 0;
            let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
            (pkt[0] == 0x45 && pkt[9] == proto && unfragmented && total == pkt.len()).then_some(20)
        }
        6 if pkt.len() >= 40 + min_l4 => {
            let payload = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
            (pkt[6] == proto && payload + 40 == pkt.len()).then_some(40)
        }
        _ => None,
    }
}

/// The IP header fields the kernel copies from a super-packet into every
/// segment are equal: IPv4 TOS, flags, TTL, protocol, addresses (IDs may
/// differ: the kernel numbers the segments from the first); IPv6 traffic
/// class, flow label, next header, hop limit, addresses.
pub fn same_ip_header(first: &[u8], pkt: &[u8], iph: usize) -> bool {
    if iph == 20 {
        first[..2] == pkt[..2]
            && first[6] == pkt[6]
            && first[8..10] == pkt[8..10]
            && first[12..20] == pkt[12..20]
    } else {
        first[..4] == pkt[..4] && first[6..40] == pkt[6..40]
    }
}

/// Recomputes the checksum of the IPv4 header `ip` (options included).
pub fn set_ipv4_header_checksum(ip: &mut [u8]) {
    ip[10..12].fill(0);
    let sum = !tun_rs::checksum(ip, 0);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// Folded pseudo-header sum of `pkt` (IP header length `iph`) for a
/// transport header of `proto` and `l4_len` bytes.
pub fn pseudo_header(pkt: &[u8], iph: usize, proto: u8, l4_len: u16) -> u16 {
    let addrs = if iph == 20 { &pkt[12..20] } else { &pkt[8..40] };
    let len = l4_len.to_be_bytes();
    let sum = tun_rs::checksum_no_fold(addrs, 0);
    tun_rs::checksum(&[0, proto, len[0], len[1]], sum)
}

/// What the virtio-net header of a GSO super-packet says.
pub struct Gso {
    pub gso_type: u8,
    /// IP and transport headers: where the segments' payload starts.
    pub hdr_len: usize,
    /// Payload bytes per segment.
    pub gso_size: usize,
    /// Offset of the transport checksum field in the transport header.
    pub csum_offset: usize,
}

/// Completes a coalesced super-packet `pkt` (IP header length `iph`,
/// transport `proto`) for one TUN write: IP length (and IPv4 header
/// checksum), the transport checksum field set to the folded pseudo-header
/// sum (CHECKSUM_PARTIAL: the kernel completes it for every segment), and
/// the virtio-net header `hdr`.
pub fn finish_super_packet(hdr: &mut [u8], pkt: &mut [u8], iph: usize, proto: u8, gso: &Gso) {
    let len = pkt.len();
    let l4_len = (len - iph) as u16;
    if pkt[0] >> 4 == 4 {
        pkt[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        set_ipv4_header_checksum(&mut pkt[..iph]);
    } else {
        pkt[4..6].copy_from_slice(&l4_len.to_be_bytes());
    }
    let pseudo = pseudo_header(pkt, iph, proto, l4_len);
    let at = iph + gso.csum_offset;
    pkt[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
    hdr[0] = F_NEEDS_CSUM;
    hdr[1] = gso.gso_type;
    hdr[2..4].copy_from_slice(&(gso.hdr_len as u16).to_ne_bytes());
    hdr[4..6].copy_from_slice(&(gso.gso_size as u16).to_ne_bytes());
    hdr[6..8].copy_from_slice(&(iph as u16).to_ne_bytes());
    hdr[8..10].copy_from_slice(&(gso.csum_offset as u16).to_ne_bytes());
}
