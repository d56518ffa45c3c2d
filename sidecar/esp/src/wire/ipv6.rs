//! IPv6 header view (RFC 8200) and the extension-header walk that finds
//! where transport-mode ESP belongs (RFC 4303 §3.1.1).

use core::net::Ipv6Addr;

use super::{WireError, be16, ip_proto, put16};

mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// Fixed IPv6 header length.
pub const HEADER_LEN: usize = 40;

/// More extension headers than this is treated as malformed: it bounds the
/// walk's cost for hostile input.
const MAX_EXT_HEADERS: usize = 8;

/// A view of an IPv6 packet.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer and checks [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks version and payload length against the buffer. Jumbograms
    /// (payload length 0 with a payload present) are not supported.
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 6 {
            return Err(WireError::Malformed);
        }
        if b.len() < self.total_len() {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version nibble.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        let b = self.buffer.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }

    /// Payload length field.
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Header plus payload length.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// Next header after the fixed header.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        Ipv6Addr::from(a)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        Ipv6Addr::from(a)
    }

    /// Walks all hop-by-hop, routing, fragment and destination-options
    /// headers and returns where the upper layer (or ESP) starts.
    pub fn upper_layer(&self) -> Result<UpperLayer, WireError> {
        walk(
            &self.buffer.as_ref()[..self.total_len()],
            Walk::ToUpperLayer,
        )
    }

    /// Where transport-mode ESP is inserted: after hop-by-hop, routing, and
    /// destination options that precede a routing header — the
    /// "unfragmentable part" as Linux (`ip6_find_1stfragopt`) and scapy cut
    /// it. A fragment header or later destination options go inside ESP.
    pub fn esp_insertion(&self) -> Result<UpperLayer, WireError> {
        walk(
            &self.buffer.as_ref()[..self.total_len()],
            Walk::EspInsertion,
        )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes version 6, the traffic class and a zero flow label.
    pub fn set_version_tc(&mut self, tc: u8) {
        let b = self.buffer.as_mut();
        b[field::VER_TC_FLOW].copy_from_slice(&[0x60 | (tc >> 4), tc << 4, 0, 0]);
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH.start, v);
    }

    /// Sets the next header after the fixed header.
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }
}

/// Where the upper layer (or ESP) starts in an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// Offset of the next-header byte that names the upper layer (6 for the
    /// fixed header, else the first byte of the last extension header).
    pub next_header_at: usize,
    /// The upper-layer protocol.
    pub protocol: u8,
    /// Offset of the upper-layer header.
    pub offset: usize,
    /// Whether a fragment header with non-zero offset was seen (the upper
    /// layer header is then not in this packet).
    pub non_first_fragment: bool,
}

/// How far [`walk`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// Past every hop-by-hop, routing, fragment and destination-options
    /// header (finds TCP/UDP/ICMPv6, or a received ESP header).
    ToUpperLayer,
    /// Only past the headers that stay in front of ESP on the sending side.
    EspInsertion,
}

/// Walks `packet` (exactly header + payload) past extension headers.
pub fn walk(packet: &[u8], mode: Walk) -> Result<UpperLayer, WireError> {
    if packet.len() < HEADER_LEN {
        return Err(WireError::Truncated);
    }
    let mut at = field::NXT_HDR;
    let mut nh = packet[at];
    let mut off = HEADER_LEN;
    let mut non_first_fragment = false;
    let mut seen_routing = false;
    for _ in 0..=MAX_EXT_HEADERS {
        let stop = mode == Walk::EspInsertion
            && (nh == ip_proto::FRAGMENT || (nh == ip_proto::DEST_OPTS && seen_routing));
        seen_routing |= nh == ip_proto::ROUTING;
        let len = match nh {
            _ if stop => {
                return Ok(UpperLayer {
                    next_header_at: at,
                    protocol: nh,
                    offset: off,
                    non_first_fragment,
                });
            }
            ip_proto::HOP_BY_HOP | ip_proto::ROUTING | ip_proto::DEST_OPTS => {
                if off + 2 > packet.len() {
                    return Err(WireError::Truncated);
                }
                (usize::from(packet[off + 1]) + 1) * 8
            }
            ip_proto::FRAGMENT => {
                if off + 8 > packet.len() {
                    return Err(WireError::Truncated);
                }
                non_first_fragment |= be16(packet, off + 2) & 0xfff8 != 0;
                8
            }
            _ => {
                return Ok(UpperLayer {
                    next_header_at: at,
                    protocol: nh,
                    offset: off,
                    non_first_fragment,
                });
            }
        };
        if off + len > packet.len() {
            return Err(WireError::Truncated);
        }
        at = off;
        nh = packet[off];
        off += len;
    }
    Err(WireError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet_with(ext: &[u8], first_nh: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN];
        p[0] = 0x60;
        let plen = (ext.len() + payload.len()) as u16;
        p[4..6].copy_from_slice(&plen.to_be_bytes());
        p[6] = first_nh;
        p[7] = 64;
        p[8..24].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        p[24..40].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        p.extend_from_slice(ext);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn test_deconstruct() {
        let p = packet_with(&[], 17, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let v = Packet::new_checked(&p[..]).unwrap();
        assert_eq!(v.version(), 6);
        assert_eq!(v.payload_len(), 8);
        assert_eq!(v.next_header(), 17);
        assert_eq!(v.hop_limit(), 64);
        assert_eq!(v.src_addr(), Ipv6Addr::LOCALHOST);
        let ul = v.upper_layer().unwrap();
        assert_eq!((ul.next_header_at, ul.protocol, ul.offset), (6, 17, 40));
    }

    #[test]
    fn test_walk_ext_headers() {
        // hop-by-hop (8 bytes) -> routing (16 bytes) -> fragment (8) -> TCP
        let mut ext = vec![43, 0, 0, 0, 0, 0, 0, 0];
        ext.extend_from_slice(&[44, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 1]);
        let p = packet_with(&ext, 0, &[0; 20]);
        let v = Packet::new_checked(&p[..]).unwrap();
        let ul = v.upper_layer().unwrap();
        assert_eq!(ul.protocol, 6);
        assert_eq!(ul.offset, 40 + 32);
        assert_eq!(ul.next_header_at, 40 + 24);
        assert!(!ul.non_first_fragment);
        // ESP goes in front of the fragment header.
        let esp = v.esp_insertion().unwrap();
        assert_eq!(
            (esp.protocol, esp.offset, esp.next_header_at),
            (44, 40 + 24, 40 + 8)
        );
    }

    #[test]
    fn test_esp_insertion_dest_opts() {
        // dest opts (8) -> routing (8) -> dest opts (8) -> UDP: ESP goes
        // before the second dest opts, as Linux and scapy place it.
        let ext = [
            43, 0, 0, 0, 0, 0, 0, 0, 60, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0,
        ];
        let p = packet_with(&ext, 60, &[0; 8]);
        let v = Packet::new_checked(&p[..]).unwrap();
        let esp = v.esp_insertion().unwrap();
        assert_eq!((esp.protocol, esp.offset), (60, 56));
        assert_eq!(v.upper_layer().unwrap().offset, 64);
    }

    #[test]
    fn test_walk_truncated_ext() {
        let p = packet_with(&[6, 3, 0, 0], 0, &[]);
        assert_eq!(
            Packet::new_checked(&p[..]).unwrap().upper_layer(),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn test_walk_bounded() {
        let mut ext = Vec::new();
        for _ in 0..12 {
            ext.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        }
        let p = packet_with(&ext, 60, &[]);
        assert_eq!(
            Packet::new_checked(&p[..]).unwrap().upper_layer(),
            Err(WireError::Malformed)
        );
    }

    #[test]
    fn test_check_len() {
        let p = packet_with(&[], 17, &[0; 8]);
        assert_eq!(
            Packet::new_checked(&p[..39]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            Packet::new_checked(&p[..47]).unwrap_err(),
            WireError::Truncated
        );
        let mut q = p.clone();
        q[0] = 0x40;
        assert_eq!(
            Packet::new_checked(&q[..]).unwrap_err(),
            WireError::Malformed
        );
    }

    #[test]
    fn test_construct() {
        let mut b = [0u8; 40];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_version_tc(0xb8);
        p.set_payload_len(0);
        p.set_next_header(50);
        p.set_hop_limit(64);
        p.set_src_addr(Ipv6Addr::LOCALHOST);
        p.set_dst_addr(Ipv6Addr::UNSPECIFIED);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.next_header(), 50);
        assert_eq!(p.src_addr(), Ipv6Addr::LOCALHOST);
    }
}
