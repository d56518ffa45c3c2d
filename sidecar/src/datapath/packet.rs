//! The few header fields the dispatcher needs before handing a packet to
//! the ESP core: version, addresses, DF, and whether it is a TCP SYN.
//! Every accessor checks length first; a short packet yields `None`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const IPPROTO_TCP: u8 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpSummary {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 "don't fragment"; always true for IPv6 (routers never fragment).
    pub dont_fragment: bool,
    /// Upper-layer protocol of a packet without extension headers (IPv6
    /// extension headers are left to the ESP core and report their type).
    pub protocol: u8,
    /// Offset of the upper-layer header.
    pub l4_offset: usize,
}

pub fn summarize(p: &[u8]) -> Option<IpSummary> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            if ihl < 20 || p.len() < ihl {
                return None;
            }
            Some(IpSummary {
                src: IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15])),
                dst: IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19])),
                dont_fragment: p[6] & 0x40 != 0,
                protocol: p[9],
                l4_offset: ihl,
            })
        }
        6 if p.len() >= 40 => {
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&p[8..24]);
            d.copy_from_slice(&p[24..40]);
            Some(IpSummary {
                src: IpAddr::V6(Ipv6Addr::from(s)),
                dst: IpAddr::V6(Ipv6Addr::from(d)),
                dont_fragment: true,
                protocol: p[6],
                l4_offset: 40,
            })
        }
        _ => None,
    }
}

/// True for a TCP segment with SYN set (whose MSS option may need clamping).
pub fn is_tcp_syn(p: &[u8], s: &IpSummary) -> bool {
    s.protocol == IPPROTO_TCP
        && p.get(s.l4_offset + 13)
            .is_some_and(|flags| flags & 0x02 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_summarize_v4_v6_and_short() {
        let mut v4 = [0u8; 40];
        v4[0] = 0x45;
        v4[6] = 0x40;
        v4[9] = 6;
        v4[12..16].copy_from_slice(&[10, 0, 0, 1]);
        v4[16..20].copy_from_slice(&[10, 0, 0, 2]);
        v4[33] = 0x02;
        let s = summarize(&v4).unwrap();
        assert_eq!(s.dst, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert!(s.dont_fragment);
        assert!(is_tcp_syn(&v4, &s));
        assert!(summarize(&v4[..19]).is_none());
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[6] = 17;
        v6[39] = 1;
        let s = summarize(&v6).unwrap();
        assert_eq!(s.dst, "::1".parse::<IpAddr>().unwrap());
        assert!(!is_tcp_syn(&v6, &s));
        assert!(summarize(&[0x45]).is_none());
        assert!(summarize(&[]).is_none());
        let mut bad = v4;
        bad[0] = 0x44; // IHL below 5
        assert!(summarize(&bad).is_none());
    }
}
