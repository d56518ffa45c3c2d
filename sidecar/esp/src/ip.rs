//! Family-independent facts about an IP packet that seal and open need:
//! where the upper layer starts and which byte names it.

use crate::Family;
use crate::wire::{WireError, be16, checksum, ipv4, ipv6, put16};

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
    #[inline(always)]
    pub fn parse(packet: &[u8]) -> Result<Self, WireError> {
        Self::parse_with(packet, ipv6::Walk::ToUpperLayer)
    }

    /// Parses for transport-mode sealing: IPv6 stops where ESP goes.
    #[inline(always)]
    pub fn parse_for_seal(packet: &[u8]) -> Result<Self, WireError> {
        Self::parse_with(packet, ipv6::Walk::EspInsertion)
    }

    /// The layout of an IPv4 header without options whose length field
    /// fits in `packet` (nearly every packet), without the general parse.
    /// Its fields are constants but for protocol and length, so code
    /// inlined on this result is specialized for that layout.
    #[inline(always)]
    pub fn plain_ipv4(packet: &[u8]) -> Option<Self> {
        match *packet {
            [0x45, _, hi, lo, _, _, _, _, _, protocol, ..] => {
                let total_len = usize::from(u16::from_be_bytes([hi, lo]));
                (ipv4::HEADER_LEN..=packet.len())
                    .contains(&total_len)
                    .then_some(IpLayout {
                        family: Family::V4,
                        next_header_at: 9,
                        protocol,
                        upper_offset: ipv4::HEADER_LEN,
                        total_len,
                    })
            }
            _ => None,
        }
    }

    #[inline(always)]
    fn parse_with(packet: &[u8], walk: ipv6::Walk) -> Result<Self, WireError> {
        if let Some(ip) = Self::plain_ipv4(packet) {
            return Ok(ip);
        }
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

/// Family and total length of the IP packet at the start of `packet`,
/// checking only the fixed header (tunnel mode carries any IP packet whole,
/// so its extension headers are none of our business).
pub(crate) fn family_and_len(packet: &[u8]) -> Result<(Family, usize), WireError> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => Ok((
            Family::V4,
            usize::from(ipv4::Packet::new_checked(packet)?.total_len()),
        )),
        Some(6) => Ok((Family::V6, ipv6::Packet::new_checked(packet)?.total_len())),
        Some(_) => Err(WireError::Malformed),
        None => Err(WireError::Truncated),
    }
}

/// Transport mode's header move: the IP header (with IPv6 extension
/// headers, `ip.upper_offset` bytes) goes from `from` to `to` (left on
/// seal, right on open) with its protocol / next header set to `protocol`,
/// its length field(s) to `total_len` and the IPv4 checksum updated for
/// both (RFC 1624). An IPv4 header without options, nearly every packet,
/// takes [`move_plain_ipv4_header`].
#[inline(always)]
pub(crate) fn move_transport_header(
    buf: &mut [u8],
    from: usize,
    to: usize,
    ip: &IpLayout,
    protocol: u8,
    total_len: usize,
) {
    if ip.family == Family::V4 && ip.upper_offset == ipv4::HEADER_LEN {
        move_plain_ipv4_header(buf, from, to, protocol, total_len);
        return;
    }
    buf.copy_within(from..from + ip.upper_offset, to);
    rewrite_header(
        &mut buf[to..to + total_len],
        ip.family,
        ip.next_header_at,
        protocol,
        total_len,
        Checksum::Incremental,
    );
}

/// [`move_transport_header`] for a 20-byte IPv4 header: the changed
/// fields are read first, the header is copied whole (the ranges may
/// overlap), then the three fields are stored over the copy. No load
/// follows a store to the same bytes, which could not be forwarded from a
/// narrower store and would wait for every pending one, the freshly
/// decrypted packet included (docs/protocol.md §8).
///
/// The checksum update (RFC 1624 eqn. 3) adds the words as they lie in
/// memory: a ones' complement sum does not depend on byte order (RFC 1071
/// §2 (B)), so no byte swaps. TTL stays, so word 4 changes by the
/// protocol byte alone.
#[inline(always)]
fn move_plain_ipv4_header(buf: &mut [u8], from: usize, to: usize, protocol: u8, total_len: usize) {
    const V4: usize = ipv4::HEADER_LEN;
    let h = &buf[from..from + V4];
    let word = |at: usize| u32::from(u16::from_ne_bytes([h[at], h[at + 1]]));
    let new_len = (total_len as u16).to_be_bytes();
    let new_word4 = u32::from(u16::from_ne_bytes([h[8], protocol]));
    let sum = (0xffff - word(10))
        + (0xffff - word(2))
        + u32::from(u16::from_ne_bytes(new_len))
        + (0xffff - word(8))
        + new_word4;
    // Five 16-bit terms: two folds always reach 16 bits.
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    let check = !(sum as u16);
    let mut copy = [0u8; V4];
    copy.copy_from_slice(h);
    let h = &mut buf[to..to + V4];
    h.copy_from_slice(&copy);
    h[2..4].copy_from_slice(&new_len);
    h[9] = protocol;
    h[10..12].copy_from_slice(&check.to_ne_bytes());
}

/// How to bring an IPv4 header checksum up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checksum {
    /// The header was valid before: update for the changed words only
    /// (RFC 1624; an already wrong checksum stays wrong, as a router would
    /// leave it).
    Incremental,
    /// A freshly written header: compute from scratch.
    Full,
}

/// Sets the protocol / next-header byte at `next_header_at` and the length
/// field(s), and for IPv4 the header checksum. `packet` starts at the IP
/// header; `total_len` is the new header + payload length (checked by the
/// caller to fit the length field).
#[inline(always)]
pub(crate) fn rewrite_header(
    packet: &mut [u8],
    family: Family,
    next_header_at: usize,
    protocol: u8,
    total_len: usize,
    checksum: Checksum,
) {
    match family {
        Family::V4 => {
            debug_assert_eq!(next_header_at, 9);
            // Words 1 (total length) and 4 (TTL | protocol) change. Every
            // old value is read before anything is written: a 2-byte load
            // over a just-written protocol byte could not be forwarded from
            // that store and would wait for all pending stores (the whole
            // packet) to drain, ~5 ns a packet (docs/protocol.md §8).
            let old_len = be16(packet, 2);
            let old_ttl_proto = be16(packet, 8);
            let old_check = be16(packet, 10);
            let new_len = total_len as u16;
            let new_ttl_proto = (old_ttl_proto & 0xff00) | u16::from(protocol);
            put16(packet, 2, new_len);
            put16(packet, 8, new_ttl_proto);
            match checksum {
                Checksum::Full => ipv4::Packet::new_unchecked(packet).fill_checksum(),
                Checksum::Incremental => {
                    let c = checksum::update(
                        old_check,
                        &[(old_len, new_len), (old_ttl_proto, new_ttl_proto)],
                    );
                    put16(packet, 10, c);
                }
            }
        }
        Family::V6 => {
            packet[next_header_at] = protocol;
            let mut p = ipv6::Packet::new_unchecked(packet);
            p.set_payload_len((total_len - ipv6::HEADER_LEN) as u16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The in-memory-order checksum update gives what a full
        /// recomputation gives, for any valid header, protocol and length,
        /// both directions, overlapping or not.
        #[test]
        fn plain_ipv4_move_keeps_the_checksum_valid(
            mut header in proptest::array::uniform20(any::<u8>()),
            protocol in any::<u8>(),
            total_len in 20u16..,
            shift in 0usize..40,
            right in any::<bool>(),
        ) {
            header[0] = 0x45;
            ipv4::Packet::new_unchecked(&mut header[..]).fill_checksum();
            let mut buf = vec![0u8; 100];
            let (from, to) = if right { (10, 10 + shift) } else { (10 + shift, 10) };
            buf[from..from + 20].copy_from_slice(&header);
            move_plain_ipv4_header(&mut buf, from, to, protocol, usize::from(total_len));
            let mut want = header;
            want[2..4].copy_from_slice(&total_len.to_be_bytes());
            want[9] = protocol;
            ipv4::Packet::new_unchecked(&mut want[..]).fill_checksum();
            prop_assert_eq!(&buf[to..to + 20], &want[..]);
        }
    }
}
