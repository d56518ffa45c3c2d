//! ICMPv6 "packet too big" (RFC 4443 §3.2, RFC 8201).

use core::net::Ipv6Addr;

use super::IcmpError;
use crate::wire::{icmpv6, ip_proto, ipv6};

/// RFC 4443 §2.4(c): the message must not exceed the minimum IPv6 MTU.
const MAX_MESSAGE: usize = 1280;
const HOP_LIMIT: u8 = 64;

/// Writes into `out` an IPv6 packet from `from` to the sender of
/// `original` saying the MTU is `mtu` (raised to 1280 if lower, RFC 8201
/// §4), quoting as much of the original as fits in 1280 bytes. Returns the
/// length written.
pub fn packet_too_big(
    original: &[u8],
    mtu: u32,
    from: Ipv6Addr,
    out: &mut [u8],
) -> Result<usize, IcmpError> {
    let orig = ipv6::Packet::new_checked(original)?;
    check_applicable(&orig, original)?;
    let hdr = ipv6::HEADER_LEN + icmpv6::HEADER_LEN;
    let quote_len = orig
        .total_len()
        .min(MAX_MESSAGE - hdr)
        .min(out.len().saturating_sub(hdr));
    if quote_len < ipv6::HEADER_LEN {
        return Err(IcmpError::BufferTooSmall);
    }
    let total = hdr + quote_len;
    out[hdr..total].copy_from_slice(&original[..quote_len]);
    let dst = orig.src_addr();
    let mut icmp = icmpv6::Packet::new_unchecked(&mut out[ipv6::HEADER_LEN..total]);
    icmp.set_packet_too_big(mtu.max(1280));
    icmp.fill_checksum(from, dst);
    let mut ip = ipv6::Packet::new_unchecked(&mut out[..total]);
    ip.set_version_tc(0);
    ip.set_payload_len((total - ipv6::HEADER_LEN) as u16);
    ip.set_next_header(ip_proto::ICMPV6);
    ip.set_hop_limit(HOP_LIMIT);
    ip.set_src_addr(from);
    ip.set_dst_addr(dst);
    Ok(total)
}

/// RFC 4443 §2.4(e): never about an ICMPv6 error, never to a multicast or
/// unspecified source. (Packet too big may answer multicast destinations.)
fn check_applicable(orig: &ipv6::Packet<&[u8]>, bytes: &[u8]) -> Result<(), IcmpError> {
    let src = orig.src_addr();
    if src.is_unspecified() || src.is_multicast() {
        return Err(IcmpError::NotApplicable);
    }
    let ul = orig.upper_layer()?;
    if ul.protocol == ip_proto::ICMPV6 && !ul.non_first_fragment {
        match bytes.get(ul.offset) {
            Some(ty) if icmpv6::is_error(*ty) => return Err(IcmpError::NotApplicable),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(len: usize, nh: u8, first: u8) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        p[6] = nh;
        p[7] = 64;
        p[8..24].copy_from_slice(&"fd00::5".parse::<Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&"fd00::7".parse::<Ipv6Addr>().unwrap().octets());
        p[40] = first;
        p
    }

    #[test]
    fn builds_valid_message() {
        let orig = packet(1500, 17, 0);
        let mut out = [0u8; 1500];
        let from: Ipv6Addr = "fd00::1".parse().unwrap();
        let n = packet_too_big(&orig, 1400, from, &mut out).unwrap();
        assert_eq!(n, 1280);
        let ip = ipv6::Packet::new_checked(&out[..n]).unwrap();
        assert_eq!(ip.next_header(), 58);
        assert_eq!(ip.dst_addr(), "fd00::5".parse::<Ipv6Addr>().unwrap());
        let icmp = icmpv6::Packet::new_checked(&out[40..n]).unwrap();
        assert!(icmp.verify_checksum(from, ip.dst_addr()));
        assert_eq!((icmp.msg_type(), icmp.mtu()), (2, 1400));
        assert_eq!(&out[48..88], &orig[..40]);
        let n = packet_too_big(&orig, 1000, from, &mut out).unwrap();
        assert_eq!(
            icmpv6::Packet::new_checked(&out[40..n]).unwrap().mtu(),
            1280
        );
    }

    #[test]
    fn never_about_errors() {
        let orig = packet(200, 58, 1);
        let mut out = [0u8; 1500];
        assert_eq!(
            packet_too_big(&orig, 1400, Ipv6Addr::LOCALHOST, &mut out),
            Err(IcmpError::NotApplicable)
        );
        let orig = packet(200, 58, 128);
        assert!(packet_too_big(&orig, 1400, Ipv6Addr::LOCALHOST, &mut out).is_ok());
    }
}
