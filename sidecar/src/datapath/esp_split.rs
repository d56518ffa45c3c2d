//! Cuts an IPv4 ESP-in-UDP super-packet (virtio-net `GSO_UDP_L4`) into its
//! datagrams *in the read buffer*, one at a time, instead of copying each
//! out into a segment buffer first: datagram `i`'s IP and UDP headers are
//! written into the bytes in front of its payload, which belong to
//! datagram `i - 1`, already opened and handed on (the caller goes in
//! order, and opening only shrinks a datagram within its own bytes).
//!
//! As the kernel's UDP segmentation would: payloads of `gso_size` bytes
//! (the last may be shorter); IP total length, identification (+1 per
//! datagram) and header checksum, and UDP length, set per datagram. The UDP
//! checksum is 0: RFC 3948 §2.1 lets IPv4 ESP-in-UDP carry a zero checksum
//! and its receiver skip verifying it (the ICV authenticates the payload),
//! and these datagrams end in this process (opened, or dropped and
//! counted). The header checksum comes from a sum computed once.

use std::io;
use std::ops::Range;

use meshsec_esp::wire::checksum::fold;

use super::csum::sum_be_words_except;
use super::offload::UDP_HDR;

/// Longest IPv4 header (with options) plus the UDP header.
const MAX_HDRS: usize = 60 + UDP_HDR;

/// How a super-packet left in the read buffer is cut.
#[derive(Debug)]
pub struct EspSplit {
    /// The super-packet's IP and UDP headers (the template of every
    /// datagram's), `hdrs` bytes of it.
    header: [u8; MAX_HDRS],
    iph: usize,
    hdrs: usize,
    gso_size: usize,
    /// Bytes of the super-packet.
    len: usize,
    count: usize,
    id: u16,
    /// IPv4 header sum without total length, identification and checksum.
    header_sum: u64,
}

impl EspSplit {
    /// The split of `pkt`, an IPv4 UDP super-packet with an IP header of
    /// `iph` bytes, into at most `max` datagrams of `gso_size` payload.
    pub fn new(pkt: &[u8], iph: usize, gso_size: usize, max: usize) -> io::Result<Self> {
        let hdrs = iph + UDP_HDR;
        if hdrs > MAX_HDRS || pkt.len() <= hdrs || gso_size == 0 {
            return Err(io::Error::other("malformed UDP super-packet"));
        }
        let count = (pkt.len() - hdrs).div_ceil(gso_size);
        if count > max {
            return Err(io::Error::other("UDP super-packet has too many segments"));
        }
        let mut header = [0u8; MAX_HDRS];
        header[..hdrs].copy_from_slice(&pkt[..hdrs]);
        Ok(Self {
            header,
            iph,
            hdrs,
            gso_size,
            len: pkt.len(),
            count,
            id: u16::from_be_bytes([pkt[4], pkt[5]]),
            header_sum: sum_be_words_except(&pkt[..iph], &[1, 2, 5]),
        })
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Makes datagram `i` whole in `pkt` (the super-packet it was made
    /// from) and returns its range. Overwrites the end of datagram `i - 1`:
    /// call in order, once that one is no longer needed.
    pub fn datagram(&self, pkt: &mut [u8], i: usize) -> Range<usize> {
        let (iph, hdrs) = (self.iph, self.hdrs);
        let at = i * self.gso_size;
        let end = (at + hdrs + self.gso_size).min(self.len);
        let total = end - at;
        let out = &mut pkt[at..end];
        out[..hdrs].copy_from_slice(&self.header[..hdrs]);
        let id = self.id.wrapping_add(i as u16);
        out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        out[4..6].copy_from_slice(&id.to_be_bytes());
        let check = !fold(self.header_sum + total as u64 + u64::from(id));
        out[10..12].copy_from_slice(&check.to_be_bytes());
        out[iph + 4..iph + 6].copy_from_slice(&((total - iph) as u16).to_be_bytes());
        out[iph + 6..iph + 8].fill(0);
        at..end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn super_packet(n: usize) -> Vec<u8> {
        crate::datapath::test_packets::udp4_super_packet(n, 4500)
    }

    #[test]
    fn test_cut_in_place_in_order_without_udp_checksum() {
        let original = super_packet(2500);
        let mut pkt = original.clone();
        let s = EspSplit::new(&pkt, 20, 1000, 64).unwrap();
        assert_eq!(s.count(), 3);
        let mut payload = Vec::new();
        let mut sizes = Vec::new();
        for i in 0..s.count() {
            let r = s.datagram(&mut pkt, i);
            let d = pkt[r.clone()].to_vec();
            sizes.push(d.len());
            assert_eq!(
                u16::from_be_bytes([d[2], d[3]]) as usize,
                d.len(),
                "total length"
            );
            assert_eq!(
                u16::from_be_bytes([d[4], d[5]]),
                0xfffeu16.wrapping_add(i as u16)
            );
            assert_eq!(
                tun_rs::checksum(&d[..20], 0),
                0xffff,
                "IPv4 header checksum"
            );
            assert_eq!(&d[..2], &original[..2]);
            assert_eq!(&d[8..10], &original[8..10]);
            assert_eq!(&d[12..24], &original[12..24], "addresses and ports");
            assert_eq!(u16::from_be_bytes([d[24], d[25]]) as usize, d.len() - 20);
            assert_eq!(&d[26..28], &[0, 0], "UDP checksum zero (RFC 3948)");
            payload.extend_from_slice(&d[28..]);
            // The caller is done with it: the next call may overwrite it.
            pkt[r].fill(0xee);
        }
        assert_eq!(sizes, [1028, 1028, 528]);
        assert_eq!(payload, original[28..], "payload cut at gso_size, in order");
    }

    #[test]
    fn test_too_many_segments_and_malformed_refused() {
        let pkt = super_packet(5000);
        let e = EspSplit::new(&pkt, 20, 1000, 4).unwrap_err();
        assert!(e.raw_os_error().is_none());
        assert!(EspSplit::new(&pkt, 20, 0, 64).is_err());
        assert!(EspSplit::new(&pkt[..28], 20, 1000, 64).is_err());
        assert!(
            EspSplit::new(&pkt, 64, 1000, 64).is_err(),
            "header too long"
        );
    }
}
