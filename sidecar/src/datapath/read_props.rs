//! Property tests of the read path: whatever bytes a TUN read returns
//! (virtio-net header and packet; a pod with CAP_NET_RAW or a host on the
//! underlay chooses most of them), [`vnet_read::parse`] either refuses
//! them with an error, which the worker counts as `malformed`, or cuts
//! them into packets that fit their buffers and have consistent headers.
//! It never panics. Cases are valid super-packets with corrupted headers
//! and fields, truncated, or plain garbage.

use proptest::prelude::*;
use tun_rs::{VIRTIO_NET_HDR_GSO_UDP_L4, VIRTIO_NET_HDR_LEN, VirtioNetHdr};

use super::offload::{F_NEEDS_CSUM, UDP_HDR};
use super::test_packets::{tcp_super_packet, udp4_super_packet};
use super::vnet_read::{self, Read};

const PORT: u16 = 4500;
const OFFSET: usize = 4;
const SEG_BUF: usize = OFFSET + 9000;
const GSO_TYPES: [u8; 6] = [0, 1, 3, 4, VIRTIO_NET_HDR_GSO_UDP_L4, 0x81];

/// Payload bytes of a super-packet: none or a few (edge cases) as often
/// as up to a few segments.
fn payload() -> impl Strategy<Value = usize> {
    prop_oneof![0..3usize, 0..6000usize]
}

/// A packet to start from: a TCP or ESP-in-UDP super-packet, or garbage.
fn base_packet() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (any::<bool>(), payload(), 0..11usize, any::<u8>())
            .prop_map(|(v6, n, opts, flags)| tcp_super_packet(v6, n, opts * 4, flags)),
        payload().prop_map(|n| udp4_super_packet(n, PORT)),
        prop::collection::vec(any::<u8>(), 0..300),
    ]
}

/// The header the kernel would write for `pkt`, now and then with a
/// field replaced by chance.
fn header_for(pkt: &[u8]) -> impl Strategy<Value = VirtioNetHdr> + use<> {
    let v6 = pkt.first().is_some_and(|b| b >> 4 == 6);
    let iph = if v6 { 40 } else { 20 };
    let udp = pkt.get(9) == Some(&17);
    let l4 = if udp { UDP_HDR } else { 20 };
    let right = match (udp, v6) {
        (true, _) => VIRTIO_NET_HDR_GSO_UDP_L4,
        (false, false) => 1,
        (false, true) => 4,
    };
    let gso = (
        prop_oneof![3 => Just(right), 1 => prop::sample::select(GSO_TYPES.to_vec())],
        prop_oneof![2 => Just(1400u16), 1 => 1..2000u16, 1 => any::<u16>()],
    );
    (gso, any::<[u16; 3]>(), any::<u8>(), 0..8u8).prop_map(
        move |((gso_type, gso_size), wild, flags, which)| {
            let mut h = VirtioNetHdr {
                flags: F_NEEDS_CSUM,
                gso_type,
                hdr_len: (iph + l4) as u16,
                gso_size,
                csum_start: iph as u16,
                csum_offset: if udp { 6 } else { 16 },
            };
            match which {
                0 => h.hdr_len = wild[0],
                1 => (h.csum_start, h.csum_offset) = (wild[1], wild[2]),
                2 => h.flags = flags,
                _ => {}
            }
            h
        },
    )
}

/// A TUN read: header, then the packet with up to 8 bytes of its first 80
/// overwritten and perhaps cut short; and the ESP-in-UDP port, if any.
fn read_bytes() -> impl Strategy<Value = (Vec<u8>, Option<u16>)> {
    base_packet()
        .prop_flat_map(|pkt| {
            let len = pkt.len();
            (
                Just(pkt.clone()),
                header_for(&pkt),
                prop_oneof![
                    Just(Vec::new()),
                    prop::collection::vec((0..80usize, any::<u8>()), 1..8)
                ],
                prop_oneof![3 => Just(len), 1 => 0..=len],
                prop::option::of(Just(PORT)),
            )
        })
        .prop_map(|(mut pkt, hdr, flips, cut, port)| {
            for (at, b) in flips {
                if let Some(x) = pkt.get_mut(at) {
                    *x = b;
                }
            }
            pkt.truncate(cut);
            let mut raw = vec![0u8; VIRTIO_NET_HDR_LEN + pkt.len()];
            // Cannot fail: the buffer holds a header.
            hdr.encode(&mut raw[..VIRTIO_NET_HDR_LEN]).unwrap();
            raw[VIRTIO_NET_HDR_LEN..].copy_from_slice(&pkt);
            (raw, port)
        })
}

/// The IPv4 header checksum of `ip` verifies.
fn ipv4_checksum_ok(ip: &[u8]) -> bool {
    let iph = usize::from(ip[0] & 0x0f) * 4;
    meshsec_esp::wire::checksum::checksum(&ip[..iph]) == 0
}

/// Cuts every datagram of an ESP-in-UDP super-packet, in order, and checks
/// each is a whole IPv4 UDP datagram: lengths and header checksum right,
/// the last ending where the super-packet ends.
fn check_esp(pkt: &mut [u8], split: &super::esp_split::EspSplit) {
    let mut end = 0;
    for i in 0..split.count() {
        let r = split.datagram(pkt, i);
        assert!(r.end <= pkt.len() && r.start < r.end, "datagram {i}: {r:?}");
        let d = &pkt[r.clone()];
        let iph = usize::from(d[0] & 0x0f) * 4;
        assert_eq!(usize::from(u16::from_be_bytes([d[2], d[3]])), d.len());
        assert_eq!(
            usize::from(u16::from_be_bytes([d[iph + 4], d[iph + 5]])),
            d.len() - iph
        );
        assert!(ipv4_checksum_ok(d), "datagram {i}: bad header checksum");
        end = r.end;
    }
    assert_eq!(end, pkt.len());
}

/// Cuts every segment of a TCP super-packet and checks each has the length
/// the split announced and, for IPv4, a right total length and checksum.
fn check_tcp(pkt: &[u8], split: &super::tcp_split::TcpSplit) {
    let mut out = vec![0u8; 70_000];
    for i in 0..split.count() {
        let n = split.segment(pkt, i, &mut out);
        assert_eq!(n, Some(split.segment_len(i)), "segment {i}");
        let seg = &out[..split.segment_len(i)];
        if seg[0] >> 4 == 4 {
            assert_eq!(usize::from(u16::from_be_bytes([seg[2], seg[3]])), seg.len());
            assert!(ipv4_checksum_ok(seg), "segment {i}: bad header checksum");
        } else {
            assert_eq!(
                usize::from(u16::from_be_bytes([seg[4], seg[5]])),
                seg.len() - 40
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_tun_read_is_refused_or_cut_within_bounds(
        (mut raw, port) in read_bytes(),
        nsegs in prop::sample::select(vec![1usize, 8, 64]),
    ) {
        let mut segs = vec![vec![0u8; SEG_BUF]; nsegs];
        let mut sizes = vec![0usize; nsegs];
        let Ok(read) = vnet_read::parse(&mut raw, &mut segs, &mut sizes, OFFSET, port) else {
            return Ok(());
        };
        let pkt = &mut raw[VIRTIO_NET_HDR_LEN..];
        match read {
            Read::Segments(n) => {
                prop_assert!(n >= 1 && n <= nsegs, "n {} of {} segment buffers, read of {} bytes", n, nsegs, raw.len());
                prop_assert!(sizes[..n].iter().all(|&s| s > 0 && OFFSET + s <= SEG_BUF));
            }
            Read::Esp(split) => {
                prop_assert!(split.count() >= 1 && split.count() <= nsegs);
                check_esp(pkt, &split);
            }
            Read::Tcp(split) => {
                prop_assert!(split.count() >= 1 && split.count() <= nsegs);
                check_tcp(pkt, &split);
            }
        }
    }
}
