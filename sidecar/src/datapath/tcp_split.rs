//! Splits a TCP super-packet read from the TUN (virtio-net `GSO_TCPV4/6`)
//! into MSS-sized segments, each with complete IP and TCP headers and
//! checksums: what tun-rs's `gso_split` does for TCP, which copied each
//! segment's payload and then read it again to checksum it. Here the
//! payload is summed while it is copied ([`copy_and_sum`]) and the header
//! sums come from the fields' values, once per super-packet plus the few
//! words that change per segment. Output is byte for byte tun-rs's (test).

use std::io;

use tun_rs::VirtioNetHdr;

use super::csum::{copy_and_sum, fold, ne_to_be, sum_be_words_except};
use super::offload::IPPROTO_TCP;

const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Header layout of a super-packet this split handles.
struct Layout {
    v6: bool,
    /// IP header length (IPv6: with extension headers), = csum_start.
    iph: usize,
    /// IP + TCP header length.
    hdrs: usize,
    gso_size: usize,
}

/// Splits `pkt` into `segs` (each at `offset`), returning how many; `None`
/// if its headers are not the kind this split handles (the caller then
/// uses tun-rs's split, which reports what is wrong).
pub fn split(
    pkt: &[u8],
    hdr: &VirtioNetHdr,
    segs: &mut [Vec<u8>],
    sizes: &mut [usize],
    offset: usize,
) -> Option<io::Result<usize>> {
    let l = layout(pkt, hdr)?;
    let payload = &pkt[l.hdrs..];
    let n = payload.len().div_ceil(l.gso_size);
    if n > segs.len().min(sizes.len()) {
        return Some(Err(io::Error::other(
            "TCP super-packet has too many segments",
        )));
    }
    // Sums shared by every segment: pseudo-header addresses and protocol,
    // the TCP header without sequence number, offset/flags and checksum,
    // the IPv4 header without total length, identification and checksum.
    let addrs = if l.v6 { &pkt[8..40] } else { &pkt[12..20] };
    let pseudo = sum_be_words_except(addrs, &[]) + u64::from(IPPROTO_TCP);
    let tcp = &pkt[l.iph..l.hdrs];
    let tcp_base = sum_be_words_except(tcp, &[2, 3, 6, 8]);
    let ip_base = if l.v6 {
        0
    } else {
        sum_be_words_except(&pkt[..l.iph], &[1, 2, 5])
    };
    let seq0 = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let id0 = u16::from_be_bytes([pkt[4], pkt[5]]);
    for (i, chunk) in payload.chunks(l.gso_size).enumerate() {
        let total = l.hdrs + chunk.len();
        let Some(out) = segs[i].get_mut(offset..offset + total) else {
            return Some(Err(io::Error::other(
                "segment larger than a segment buffer",
            )));
        };
        out[..l.hdrs].copy_from_slice(&pkt[..l.hdrs]);
        if l.v6 {
            out[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        } else {
            let id = id0.wrapping_add(i as u16);
            out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            out[4..6].copy_from_slice(&id.to_be_bytes());
            let check = !fold(ip_base + total as u64 + u64::from(id));
            out[10..12].copy_from_slice(&check.to_be_bytes());
        }
        let seq = seq0.wrapping_add((i * l.gso_size) as u32);
        let mut flags = tcp[13];
        if i > 0 {
            // As the kernel's TSO: CWR only on the first segment, FIN and
            // PSH only on the last.
            flags &= !TCP_CWR;
        }
        if i + 1 < n {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        let t = l.iph;
        out[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        out[t + 13] = flags;
        let data = ne_to_be(fold(copy_and_sum(&mut out[l.hdrs..], chunk)));
        let sum = pseudo
            + (total - t) as u64
            + tcp_base
            + u64::from(seq >> 16)
            + u64::from(seq & 0xffff)
            + u64::from(u16::from_be_bytes([tcp[12], flags]))
            + u64::from(data);
        out[t + 16..t + 18].copy_from_slice(&(!fold(sum)).to_be_bytes());
        sizes[i] = total;
    }
    Some(Ok(n))
}

/// The layout of a TCP super-packet with consistent headers: IPv4 header
/// length from its IHL, IPv6 at least the fixed header, TCP header whole,
/// a payload and a segment size.
fn layout(pkt: &[u8], hdr: &VirtioNetHdr) -> Option<Layout> {
    let iph = usize::from(hdr.csum_start);
    let version = pkt.first()? >> 4;
    let v6 = match (hdr.gso_type, version) {
        (GSO_TCPV4, 4) if iph >= 20 && iph == usize::from(pkt[0] & 0x0f) * 4 => false,
        (GSO_TCPV6, 6) if iph >= 40 => true,
        _ => return None,
    };
    let tcph = usize::from(pkt.get(iph + 12)? >> 4) * 4;
    let hdrs = iph + tcph;
    let gso_size = usize::from(hdr.gso_size);
    (hdr.csum_offset == 16 && tcph >= 20 && hdrs < pkt.len() && gso_size > 0).then_some(Layout {
        v6,
        iph,
        hdrs,
        gso_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::offload::F_NEEDS_CSUM;

    /// A TCP super-packet with `payload` bytes, `opts` bytes of TCP
    /// options and `flags`.
    fn super_packet(v6: bool, payload: usize, opts: usize, flags: u8) -> Vec<u8> {
        let iph = if v6 { 40 } else { 20 };
        let tcph = 20 + opts;
        let mut p = vec![0u8; iph + tcph + payload];
        let len = p.len();
        if v6 {
            p[0] = 0x60;
            p[1] = 0x12;
            p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            p[6] = IPPROTO_TCP;
            p[7] = 64;
            p[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            p[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            p[0] = 0x45;
            p[1] = 0x02;
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[4..6].copy_from_slice(&0xfff0u16.to_be_bytes());
            p[6] = 0x40;
            p[8] = 64;
            p[9] = IPPROTO_TCP;
            p[12..16].copy_from_slice(&[10, 77, 1, 10]);
            p[16..20].copy_from_slice(&[10, 77, 2, 10]);
        }
        let t = iph;
        p[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
        p[t + 2..t + 4].copy_from_slice(&5201u16.to_be_bytes());
        p[t + 4..t + 8].copy_from_slice(&0xffff_fc00u32.to_be_bytes());
        p[t + 8..t + 12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        p[t + 12] = ((tcph / 4) as u8) << 4;
        p[t + 13] = flags;
        p[t + 14..t + 16].copy_from_slice(&502u16.to_be_bytes());
        p[t + 16..t + 18].copy_from_slice(&[0x5a, 0xa5]); // partial sum: replaced
        for (i, b) in p[t + 20..t + tcph].iter_mut().enumerate() {
            *b = 1 + i as u8;
        }
        for (i, b) in p[t + tcph..].iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        p
    }

    fn hdr(v6: bool, gso_size: u16, hdr_len: usize) -> VirtioNetHdr {
        VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: hdr_len as u16,
            gso_size,
            csum_start: if v6 { 40 } else { 20 },
            csum_offset: 16,
        }
    }

    fn bufs() -> (Vec<Vec<u8>>, Vec<usize>) {
        (vec![vec![0u8; 8 + 2000]; 8], vec![0; 8])
    }

    #[test]
    fn test_split_matches_tun_rs_byte_for_byte() {
        for v6 in [false, true] {
            for (payload, gso, opts, flags) in [
                (4000, 1448, 12, 0x10 | TCP_PSH | TCP_CWR),
                (2896, 1448, 12, 0x10 | TCP_FIN),
                (1001, 333, 0, 0x10),
                (7, 1448, 40, 0x10 | TCP_PSH),
                (2999, 1000, 4, 0x10),
            ] {
                let pkt = super_packet(v6, payload, opts, flags);
                let h = hdr(v6, gso, pkt.len() - payload);
                let (mut ours, mut our_sizes) = bufs();
                let n = split(&pkt, &h, &mut ours, &mut our_sizes, 8)
                    .expect("handled")
                    .expect("split");
                let (mut theirs, mut their_sizes) = bufs();
                let mut input = pkt.clone();
                let m = tun_rs::gso_split(&mut input, h, &mut theirs, &mut their_sizes, 8, v6)
                    .expect("tun-rs split");
                assert_eq!(n, m, "segments, v6 {v6} payload {payload}");
                assert_eq!(n, payload.div_ceil(usize::from(gso)));
                for i in 0..n {
                    assert_eq!(our_sizes[i], their_sizes[i]);
                    assert_eq!(
                        ours[i][8..8 + our_sizes[i]],
                        theirs[i][8..8 + their_sizes[i]],
                        "segment {i}, v6 {v6} payload {payload} gso {gso}"
                    );
                }
            }
        }
    }

    #[test]
    fn test_odd_headers_left_to_tun_rs_and_too_many_segments_refused() {
        let (mut segs, mut sizes) = bufs();
        let pkt = super_packet(false, 1000, 0, 0x10);
        let mut h = hdr(false, 100, 40);
        h.csum_start = 24; // disagrees with the IHL
        assert!(split(&pkt, &h, &mut segs, &mut sizes, 8).is_none());
        let mut h = hdr(false, 100, 40);
        h.gso_type = GSO_TCPV6; // disagrees with the version
        assert!(split(&pkt, &h, &mut segs, &mut sizes, 8).is_none());
        let no_payload = super_packet(false, 0, 0, 0x10);
        assert!(split(&no_payload, &hdr(false, 100, 40), &mut segs, &mut sizes, 8).is_none());
        let e = split(&pkt, &hdr(false, 100, 40), &mut segs, &mut sizes, 8)
            .expect("handled")
            .unwrap_err();
        assert!(e.raw_os_error().is_none());
    }
}
