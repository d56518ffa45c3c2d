//! Property tests of the receive side's coalescing ([`TcpGro`]), checked
//! against the read path's split, its inverse (what the kernel's
//! segmentation does to the super-packet written to the TUN):
//! - the segments of a flow's TCP super-packets, opened and pushed in
//!   order, are coalesced (a new super-packet where one must end), and
//!   cutting what was written gives them back byte for byte;
//! - any packets at all, pushed as opened or not, coalesce into what the
//!   read path accepts and cuts into consistent segments, never a panic.

use proptest::prelude::*;
use tun_rs::VIRTIO_NET_HDR_LEN;

use super::tcp_gro::TcpGro;
use super::test_packets::{tcp_super_packet, tcp_vnet_hdr};
use super::vnet_read::{self, Read};

const SEGS: usize = 64;

/// What the read path makes of `raw` (virtio-net header + packet): the
/// packets, each whole; `None` if it refuses the read.
fn cut(raw: &mut [u8]) -> Option<Vec<Vec<u8>>> {
    let mut segs = vec![vec![0u8; 70_000]; SEGS];
    let mut sizes = vec![0usize; SEGS];
    let read = vnet_read::parse(raw, &mut segs, &mut sizes, 0, None).ok()?;
    let pkt = &raw[VIRTIO_NET_HDR_LEN..];
    Some(match read {
        Read::Segments(n) => (0..n).map(|i| segs[i][..sizes[i]].to_vec()).collect(),
        Read::Tcp(split) => (0..split.count())
            .map(|i| {
                let mut out = vec![0u8; split.segment_len(i)];
                assert_eq!(split.segment(pkt, i, &mut out), Some(out.len()));
                out
            })
            .collect(),
        Read::Esp(_) => panic!("no ESP port was given"),
    })
}

/// The segments the kernel's TSO would make of a TCP super-packet (v4 or
/// v6, `payload` bytes, `opts` bytes of options, ACK with or without PSH),
/// cut by the read path. Its sequence number is the builder's plus `seq`,
/// its IPv4 identification the builder's plus `id`.
fn segments(
    v6: bool,
    payload: usize,
    opts: usize,
    psh: bool,
    gso: u16,
    (seq, id): (u32, u16),
) -> Vec<Vec<u8>> {
    let flags = 0x10 | if psh { 0x08 } else { 0 };
    let mut pkt = tcp_super_packet(v6, payload, opts, flags);
    let iph = if v6 { 40 } else { 20 };
    let seq0 = u32::from_be_bytes([pkt[iph + 4], pkt[iph + 5], pkt[iph + 6], pkt[iph + 7]]);
    pkt[iph + 4..iph + 8].copy_from_slice(&seq0.wrapping_add(seq).to_be_bytes());
    if !v6 {
        let id0 = u16::from_be_bytes([pkt[4], pkt[5]]);
        pkt[4..6].copy_from_slice(&id0.wrapping_add(id).to_be_bytes());
    }
    let mut raw = vec![0u8; VIRTIO_NET_HDR_LEN];
    // Cannot fail: the buffer holds a header.
    tcp_vnet_hdr(v6, gso, iph + 20 + opts)
        .encode(&mut raw)
        .unwrap();
    raw.extend_from_slice(&pkt);
    // The builder's packets are well-formed: the split takes them.
    cut(&mut raw).unwrap()
}

/// Writes what `gro` holds, as the worker does, and checks the read path
/// takes it back: every packet in it an IPv4 or IPv6 packet whose length
/// field matches.
fn flush_and_check(gro: &mut TcpGro) -> Vec<Vec<u8>> {
    let mut raw = gro.finish().to_vec();
    let pkts = cut(&mut raw).expect("the read path refuses what coalescing wrote");
    assert!(!pkts.is_empty());
    for p in &pkts {
        match p[0] >> 4 {
            4 => assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len()),
            6 => assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])) + 40, p.len()),
            v => panic!("IP version {v} coalesced"),
        }
    }
    pkts
}

/// A packet to push: a segment of a real split, perhaps with some of its
/// first 60 bytes overwritten, or garbage; and whether it counts as opened.
fn pushed() -> impl Strategy<Value = (Vec<u8>, bool)> {
    let seg = (
        any::<bool>(),
        1..4000usize,
        0..3usize,
        any::<bool>(),
        0..4usize,
    )
        .prop_map(|(v6, n, opts, psh, i)| {
            let segs = segments(v6, n, opts * 4, psh, 1000, (0, 0));
            segs[i.min(segs.len() - 1)].clone()
        });
    let mutated = (
        seg.clone(),
        prop::collection::vec((0..60usize, any::<u8>()), 1..4),
    )
        .prop_map(|(mut p, flips)| {
            for (at, b) in flips {
                if let Some(x) = p.get_mut(at) {
                    *x = b;
                }
            }
            p
        });
    let garbage = prop::collection::vec(any::<u8>(), 1..200);
    (prop_oneof![seg, mutated, garbage], any::<bool>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn split_then_coalesced_then_split_is_identity(
        v6 in any::<bool>(),
        opts in 0..11usize,
        gso in 500..1500u16,
        writes in prop::collection::vec((1..20_000usize, any::<bool>()), 1..4),
    ) {
        // One flow: each write's super-packet continues the last one's
        // sequence numbers and (IPv4) identifications, as the kernel's.
        let mut seq = 0u32;
        let mut segs = Vec::new();
        for &(payload, psh) in &writes {
            segs.extend(segments(v6, payload, opts * 4, psh, gso, (seq, segs.len() as u16)));
            seq = seq.wrapping_add(payload as u32);
        }
        // As the worker: what does not join is written after what did.
        let mut gro = TcpGro::new();
        let mut out = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            if !gro.push(s, true) {
                prop_assert!(!gro.is_empty(), "segment {} refused by an empty builder", i);
                out.extend(flush_and_check(&mut gro));
                prop_assert!(gro.push(s, true), "segment {} refused after a flush", i);
            }
        }
        out.extend(flush_and_check(&mut gro));
        prop_assert_eq!(out, segs);
        prop_assert!(gro.is_empty());
    }

    #[test]
    fn any_pushes_coalesce_into_what_the_read_path_takes(
        pkts in prop::collection::vec(pushed(), 1..10),
    ) {
        let mut gro = TcpGro::new();
        for (p, opened) in &pkts {
            if gro.push(p, *opened) {
                continue;
            }
            if !gro.is_empty() {
                flush_and_check(&mut gro);
                // A refused packet starts the next super-packet, if it can.
                let _ = gro.push(p, *opened);
            }
        }
        if !gro.is_empty() {
            flush_and_check(&mut gro);
        }
    }
}
