//! TCP MSS clamping on SYN and SYN-ACK, so TCP never sends segments that
//! do not fit after ESP overhead.

use crate::Family;
use crate::ip::IpLayout;
use crate::wire::{WireError, be16, checksum, ip_proto, ipv4, put16, tcp};

/// The MSS for a plaintext MTU (no IP or TCP options assumed).
pub fn mss_for_mtu(mtu: usize, family: Family) -> u16 {
    mtu.saturating_sub(family.header_len() + tcp::HEADER_LEN)
        .min(usize::from(u16::MAX)) as u16
}

/// Lowers the MSS option of a TCP SYN to `mss` if it is larger, fixing the
/// TCP checksum incrementally (RFC 1624). Returns whether it changed.
/// Non-TCP packets, non-SYN segments and SYNs without an MSS option are
/// left alone.
pub fn clamp_mss(packet: &mut [u8], mss: u16) -> Result<bool, WireError> {
    let ip = IpLayout::parse(packet)?;
    if ip.protocol != ip_proto::TCP || is_non_first_fragment(packet, &ip)? {
        return Ok(false);
    }
    let seg = &mut packet[ip.upper_offset..ip.total_len];
    let t = tcp::Packet::new_checked(&*seg)?;
    if !t.syn() {
        return Ok(false);
    }
    let Some(at) = t.mss_value_offset() else {
        return Ok(false);
    };
    let old = be16(seg, at);
    if old <= mss {
        return Ok(false);
    }
    let c = checksum::update16(t.checksum(), old, mss);
    put16(seg, at, mss);
    tcp::Packet::new_unchecked(seg).set_checksum(c);
    Ok(true)
}

fn is_non_first_fragment(packet: &[u8], ip: &IpLayout) -> Result<bool, WireError> {
    Ok(match ip.family {
        Family::V4 => ipv4::Packet::new_checked(packet)?.frag_offset() != 0,
        Family::V6 => {
            crate::wire::ipv6::walk(
                &packet[..ip.total_len],
                crate::wire::ipv6::Walk::ToUpperLayer,
            )?
            .non_first_fragment
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    /// IPv4 TCP SYN with MSS 1460 and a correct checksum.
    fn syn_v4(mss: u16) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 44, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let mut t = vec![
            0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ];
        t.extend_from_slice(&[2, 4]);
        t.extend_from_slice(&mss.to_be_bytes());
        let sum = checksum::pseudo_v4(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            6,
            t.len() as u16,
        );
        let c = !checksum::fold(checksum::accumulate(sum, &t));
        t[16..18].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(&t);
        ipv4::Packet::new_unchecked(&mut p[..]).fill_checksum();
        p
    }

    #[test]
    fn clamps_and_keeps_checksum_valid() {
        let mut p = syn_v4(1460);
        assert_eq!(clamp_mss(&mut p, 1400), Ok(true));
        assert_eq!(p, syn_v4(1400));
        assert_eq!(clamp_mss(&mut p, 1420), Ok(false));
        assert_eq!(p, syn_v4(1400));
    }

    #[test]
    fn leaves_non_syn_alone() {
        let mut p = syn_v4(1460);
        p[20 + 13] = 0x10; // ACK only
        let before = p.clone();
        assert_eq!(clamp_mss(&mut p, 1000), Ok(false));
        assert_eq!(p, before);
    }

    #[test]
    fn rejects_garbage() {
        let mut p = syn_v4(1460);
        p.truncate(30);
        assert!(clamp_mss(&mut p, 1000).is_err());
    }

    #[test]
    fn mss_for_mtu_values() {
        assert_eq!(mss_for_mtu(1463, Family::V4), 1423);
        assert_eq!(mss_for_mtu(1463, Family::V6), 1403);
        assert_eq!(mss_for_mtu(10, Family::V6), 0);
    }
}
