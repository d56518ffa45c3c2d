//! Family-independent facts about an IP packet that seal and open need:
//! where the upper layer starts and which byte names it.

use crate::Family;
use crate::wire::{WireError, ipv4, ipv6};

/// Layout of an IP packet at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpLayout {
    pub family: Family,
    /// Offset of the byte naming the upper-layer protocol (IPv4 protocol
    /// field, or the last next-header field of the IPv6 chain).
    pub next_header_at: usize,
    /// The upper-layer protocol.
    pub protocol: u8,
    /// Offset of the upper-layer header (= length of everything ESP keeps
    /// in front of it in transport mode).
    pub upper_offset: usize,
    /// Header + payload length from the length field(s).
    pub total_len: usize,
}

impl IpLayout {
    /// Parses the IP header(s) at the start of `packet`, walking every IPv6
    /// extension header (receive side, upper-layer lookups).
    pub fn parse(packet: &[u8]) -> Result<Self, WireError> {
        Self::parse_with(packet, ipv6::Walk::ToUpperLayer)
    }

    /// Parses for transport-mode sealing: IPv6 stops where ESP goes.
    pub fn parse_for_seal(packet: &[u8]) -> Result<Self, WireError> {
        Self::parse_with(packet, ipv6::Walk::EspInsertion)
    }

    fn parse_with(packet: &[u8], walk: ipv6::Walk) -> Result<Self, WireError> {
        match packet.first().map(|b| b >> 4) {
            Some(4) => {
                let p = ipv4::Packet::new_checked(packet)?;
                Ok(IpLayout {
                    family: Family::V4,
                    next_header_at: 9,
                    protocol: p.protocol(),
                    upper_offset: p.header_len(),
                    total_len: usize::from(p.total_len()),
                })
            }
            Some(6) => {
                let p = ipv6::Packet::new_checked(packet)?;
                let ul = ipv6::walk(&packet[..p.total_len()], walk)?;
                Ok(IpLayout {
                    family: Family::V6,
                    next_header_at: ul.next_header_at,
                    protocol: ul.protocol,
                    upper_offset: ul.offset,
                    total_len: p.total_len(),
                })
            }
            Some(_) => Err(WireError::Malformed),
            None => Err(WireError::Truncated),
        }
    }
}

/// Rewrites the length field(s) and, for IPv4, the header checksum after the
/// payload changed. `packet` starts at the IP header; `total_len` is the new
/// header + payload length (checked by the caller to fit in 16 bits).
pub(crate) fn fix_lengths(packet: &mut [u8], family: Family, total_len: usize) {
    match family {
        Family::V4 => {
            let mut p = ipv4::Packet::new_unchecked(packet);
            p.set_total_len(total_len as u16);
            p.fill_checksum();
        }
        Family::V6 => {
            let mut p = ipv6::Packet::new_unchecked(packet);
            p.set_payload_len((total_len - ipv6::HEADER_LEN) as u16);
        }
    }
}
