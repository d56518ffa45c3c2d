//! ICMP "fragmentation needed and DF set" (RFC 792, RFC 1191).

use core::net::Ipv4Addr;

use super::IcmpError;
use crate::wire::{icmpv4, ip_proto, ipv4};

/// RFC 1812 §4.3.2.3: an ICMP error should not exceed 576 bytes.
const MAX_MESSAGE: usize = 576;
const TTL: u8 = 64;

/// Writes into `out` an IPv4 packet from `from` to the sender of
/// `original`, saying the next-hop MTU is `mtu`, quoting as much of the
/// original as fits in 576 bytes. Returns the length written.
pub fn frag_needed(
    original: &[u8],
    mtu: u16,
    from: Ipv4Addr,
    out: &mut [u8],
) -> Result<usize, IcmpError> {
    let orig = ipv4::Packet::new_checked(original)?;
    check_applicable(&orig)?;
    let hdr = ipv4::HEADER_LEN + icmpv4::HEADER_LEN;
    let min_quote = orig.header_len() + 8;
    let quote_len = usize::from(orig.total_len())
        .min(MAX_MESSAGE - hdr)
        .min(out.len().saturating_sub(hdr));
    if quote_len < min_quote.min(usize::from(orig.total_len())) {
        return Err(IcmpError::BufferTooSmall);
    }
    let total = hdr + quote_len;
    out[hdr..total].copy_from_slice(&original[..quote_len]);
    let mut icmp = icmpv4::Packet::new_unchecked(&mut out[ipv4::HEADER_LEN..total]);
    icmp.set_frag_needed(mtu);
    icmp.fill_checksum();
    let mut ip = ipv4::Packet::new_unchecked(&mut out[..total]);
    ip.set_version_and_header_len(ipv4::HEADER_LEN);
    ip.set_dscp_ecn(0);
    ip.set_total_len(total as u16);
    ip.set_ident(0);
    ip.set_dont_frag_only(true);
    ip.set_ttl(TTL);
    ip.set_protocol(ip_proto::ICMP);
    ip.set_src_addr(from);
    ip.set_dst_addr(orig.src_addr());
    ip.fill_checksum();
    Ok(total)
}

/// RFC 1122 §3.2.2 and RFC 1191: only for DF packets, never about ICMP
/// errors, non-first fragments, or to broadcast/multicast/unspecified.
fn check_applicable(orig: &ipv4::Packet<&[u8]>) -> Result<(), IcmpError> {
    let src = orig.src_addr();
    if !orig.dont_frag()
        || orig.frag_offset() != 0
        || src.is_unspecified()
        || src.is_multicast()
        || src.is_broadcast()
    {
        return Err(IcmpError::NotApplicable);
    }
    if orig.protocol() == ip_proto::ICMP {
        match orig.payload().first() {
            Some(ty) if icmpv4::is_error(*ty) => return Err(IcmpError::NotApplicable),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big_df_packet(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[..20].copy_from_slice(&[
            0x45,
            0,
            (len >> 8) as u8,
            len as u8,
            0,
            1,
            0x40,
            0,
            64,
            17,
            0,
            0,
            10,
            1,
            0,
            5,
            10,
            2,
            0,
            7,
        ]);
        ipv4::Packet::new_unchecked(&mut p[..]).fill_checksum();
        p
    }

    #[test]
    fn builds_valid_message() {
        let orig = big_df_packet(1500);
        let mut out = [0u8; 1500];
        let n = frag_needed(&orig, 1423, Ipv4Addr::new(10, 1, 0, 1), &mut out).unwrap();
        assert_eq!(n, 576);
        let ip = ipv4::Packet::new_checked(&out[..n]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 1, 0, 5));
        assert_eq!(ip.protocol(), 1);
        let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!(
            (icmp.msg_type(), icmp.code(), icmp.next_hop_mtu()),
            (3, 4, 1423)
        );
        assert_eq!(&out[28..48], &orig[..20]);
    }

    #[test]
    fn refuses_without_df_or_for_errors() {
        let mut orig = big_df_packet(100);
        orig[6] = 0;
        let mut out = [0u8; 600];
        assert_eq!(
            frag_needed(&orig, 1400, Ipv4Addr::LOCALHOST, &mut out),
            Err(IcmpError::NotApplicable)
        );
        let mut orig = big_df_packet(100);
        orig[9] = 1;
        orig[20] = 3;
        assert_eq!(
            frag_needed(&orig, 1400, Ipv4Addr::LOCALHOST, &mut out),
            Err(IcmpError::NotApplicable)
        );
        let orig = big_df_packet(100);
        assert_eq!(
            frag_needed(&orig, 1400, Ipv4Addr::LOCALHOST, &mut out[..40]),
            Err(IcmpError::BufferTooSmall)
        );
    }
}
