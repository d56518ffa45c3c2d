//! Splits a TCP super-packet read from the TUN (virtio-net `GSO_TCPV4/6`)
//! into MSS-sized segments, each with complete IP and TCP headers and
//! checksums: what tun-rs's `gso_split` does for TCP, which copied each
//! segment's payload and then read it again to checksum it. Here the
//! payload is summed while it is copied ([`copy_and_sum`]) and the header
//! sums come from the fields' values, once per super-packet plus the few
//! words that change per segment. Output is byte for byte tun-rs's (test).

use std::io;

use meshsec_esp::wire::checksum::fold;
use tun_rs::VirtioNetHdr;

use super::csum::{copy_and_sum, ne_to_be, sum_be_words_except};
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

/// How a TCP super-packet left in the read buffer is cut into segments,
/// one at a time, each into a place the caller picks (a segment buffer,
/// or its final place in the UDP GSO super-packet it is sealed into).
pub struct TcpSplit {
    l: Layout,
    /// Bytes of the super-packet.
    len: usize,
    count: usize,
    /// Pseudo-header sum without the TCP length.
    pseudo: u64,
    /// TCP header sum without sequence number, offset/flags and checksum.
    tcp_base: u64,
    /// IPv4 header sum without total length, identification and checksum.
    ip_base: u64,
    seq0: u32,
    id0: u16,
}

impl TcpSplit {
    /// The split of `pkt` into at most `max` segments; `None` if its
    /// headers are not the kind this split handles (the caller then uses
    /// tun-rs's split, which reports what is wrong).
    pub fn new(pkt: &[u8], hdr: &VirtioNetHdr, max: usize) -> Option<io::Result<Self>> {
        let l = layout(pkt, hdr)?;
        let count = (pkt.len() - l.hdrs).div_ceil(l.gso_size);
        if count > max {
            return Some(Err(io::Error::other(
                "TCP super-packet has too many segments",
            )));
        }
        // Sums shared by every segment: pseudo-header addresses and
        // protocol, the TCP header without sequence number, offset/flags
        // and checksum, the IPv4 header without total length,
        // identification and checksum.
        let addrs = if l.v6 { &pkt[8..40] } else { &pkt[12..20] };
        let tcp = &pkt[l.iph..l.hdrs];
        Some(Ok(Self {
            pseudo: sum_be_words_except(addrs, &[]) + u64::from(IPPROTO_TCP),
            tcp_base: sum_be_words_except(tcp, &[2, 3, 6, 8]),
            ip_base: if l.v6 {
                0
            } else {
                sum_be_words_except(&pkt[..l.iph], &[1, 2, 5])
            },
            seq0: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            id0: u16::from_be_bytes([pkt[4], pkt[5]]),
            len: pkt.len(),
            count,
            l,
        }))
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// IP header length of every segment.
    pub fn ip_header_len(&self) -> usize {
        self.l.iph
    }

    /// Length of segment `i` (headers included).
    pub fn segment_len(&self, i: usize) -> usize {
        let payload = self.len - self.l.hdrs;
        let at = i * self.l.gso_size;
        self.l.hdrs + self.l.gso_size.min(payload.saturating_sub(at))
    }

    /// Writes segment `i` of `pkt` (the super-packet this split was made
    /// from) into the front of `out`, headers and checksums complete, and
    /// returns its length; `None` if `out` is too short.
    pub fn segment(&self, pkt: &[u8], i: usize, out: &mut [u8]) -> Option<usize> {
        let l = &self.l;
        let total = self.segment_len(i);
        let out = out.get_mut(..total)?;
        let at = l.hdrs + i * l.gso_size;
        let chunk = pkt.get(at..at + total - l.hdrs)?;
        out[..l.hdrs].copy_from_slice(&pkt[..l.hdrs]);
        if l.v6 {
            out[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        } else {
            let id = self.id0.wrapping_add(i as u16);
            out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            out[4..6].copy_from_slice(&id.to_be_bytes());
            let check = !fold(self.ip_base + total as u64 + u64::from(id));
            out[10..12].copy_from_slice(&check.to_be_bytes());
        }
        let seq = self.seq0.wrapping_add((i * l.gso_size) as u32);
        let t = l.iph;
        let mut flags = pkt[t + 13];
        if i > 0 {
            // As the kernel's TSO: CWR only on the first segment, FIN and
            // PSH only on the last.
            flags &= !TCP_CWR;
        }
        if i + 1 < self.count {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        out[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        out[t + 13] = flags;
        let data = ne_to_be(fold(copy_and_sum(&mut out[l.hdrs..], chunk)));
        let sum = self.pseudo
            + (total - t) as u64
            + self.tcp_base
            + u64::from(seq >> 16)
            + u64::from(seq & 0xffff)
            + u64::from(u16::from_be_bytes([pkt[t + 12], flags]))
            + u64::from(data);
        out[t + 16..t + 18].copy_from_slice(&(!fold(sum)).to_be_bytes());
        Some(total)
    }

    /// Writes every segment into `segs` (each at `offset`, its length in
    /// `sizes`) and returns how many.
    pub fn split_all(
        &self,
        pkt: &[u8],
        segs: &mut [Vec<u8>],
        sizes: &mut [usize],
        offset: usize,
    ) -> io::Result<usize> {
        if self.count > segs.len().min(sizes.len()) {
            return Err(io::Error::other("TCP super-packet has too many segments"));
        }
        for i in 0..self.count {
            let out = segs[i].get_mut(offset..);
            sizes[i] = out
                .and_then(|out| self.segment(pkt, i, out))
                .ok_or_else(|| io::Error::other("segment larger than a segment buffer"))?;
        }
        Ok(self.count)
    }
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
    use crate::datapath::test_packets::{tcp_super_packet as super_packet, tcp_vnet_hdr as hdr};

    /// The whole split: `None` if the headers are not the kind it handles.
    fn split(
        pkt: &[u8],
        hdr: &VirtioNetHdr,
        segs: &mut [Vec<u8>],
        sizes: &mut [usize],
        offset: usize,
    ) -> Option<io::Result<usize>> {
        let max = segs.len().min(sizes.len());
        Some(TcpSplit::new(pkt, hdr, max)?.and_then(|s| s.split_all(pkt, segs, sizes, offset)))
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
