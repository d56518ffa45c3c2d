//! `seal_batch` / `open_batch`: the same packets as one-at-a-time seal and
//! open, consecutive sequence numbers that are never handed out twice,
//! per-packet errors that leave the rest of the batch alone, and the replay
//! window updated once per batch with the same verdicts as `open`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ops::Range;

use common::*;
use meshsec_esp::wire::esp;
use meshsec_esp::{Backend, OpenError, SealError};

type Sealed = Result<Range<usize>, SealError>;
type Opened = Result<Range<usize>, OpenError>;

fn packets(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| match i % 3 {
            0 => ipv4_packet(17, &vec![i as u8; 1 + i * 7]),
            1 => ipv4_packet(6, &vec![0xa5; 40 + i]),
            _ => ipv6_packet(17, &[], &vec![i as u8; 3 + i]),
        })
        .collect()
}

/// Frames every packet; returns buffers and ranges.
fn frame_all(ps: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Range<usize>>) {
    ps.iter().map(|p| framed(p)).unzip()
}

/// Sequence number in the ESP header of a sealed packet.
fn seq_of(buf: &[u8], sealed: &Range<usize>) -> u64 {
    let p = &buf[sealed.clone()];
    // The IV carries the full 64-bit sequence number (RFC 4106 §3.1).
    let esp_at = (0..p.len())
        .find(|&i| p[i..].starts_with(&SPI.to_be_bytes()))
        .unwrap();
    u64::from_be_bytes(esp::Packet::new_checked(&p[esp_at..]).unwrap().iv())
}

#[test]
fn batches_round_trip_in_every_config() {
    for &backend in Backend::ALL {
        for (cipher, mode, encap, tunnel) in configs() {
            let (out, inb) = pair(backend, cipher, mode, encap, tunnel);
            // 150 packets: open_batch works through more than one chunk.
            let ps = packets(150);
            let (mut bufs, ranges) = frame_all(&ps);
            let mut sealed: Vec<Sealed> = vec![Ok(0..0); ps.len()];
            out.seal_batch(&mut bufs, &ranges, &mut sealed);
            let sealed: Vec<Range<usize>> = sealed.into_iter().map(Result::unwrap).collect();
            let seqs: Vec<u64> = bufs
                .iter()
                .zip(&sealed)
                .map(|(b, r)| seq_of(b, r))
                .collect();
            assert_eq!(
                seqs,
                (1..=150).collect::<Vec<u64>>(),
                "{cipher:?} {mode:?} {encap:?}"
            );
            assert_eq!(out.packets_sent(), 150);
            let mut opened: Vec<Opened> = vec![Ok(0..0); ps.len()];
            inb.open_batch(&mut bufs, &sealed, &mut opened);
            for ((b, r), p) in bufs.iter().zip(opened).zip(&ps) {
                assert_eq!(
                    &b[r.unwrap()],
                    &p[..],
                    "{cipher:?} {mode:?} {encap:?} {tunnel:?}"
                );
            }
            assert_eq!(inb.highest_seq(), 150);
        }
    }
}

#[test]
fn batch_and_single_interleave_without_reusing_a_number() {
    let (cipher, mode, encap, tunnel) = configs()[0];
    let (out, inb) = pair(Backend::default(), cipher, mode, encap, tunnel);
    let ps = packets(10);
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..5 {
        let (mut bufs, ranges) = frame_all(&ps);
        // A truncated range fails on its own; its number is skipped.
        let mut ranges = ranges;
        ranges[3] = ranges[3].start..ranges[3].start + 10;
        let mut sealed: Vec<Sealed> = vec![Ok(0..0); ps.len()];
        out.seal_batch(&mut bufs, &ranges, &mut sealed);
        assert_eq!(sealed[3], Err(SealError::Truncated), "round {round}");
        for (i, (b, r)) in bufs.iter().zip(&sealed).enumerate() {
            if let Ok(r) = r {
                assert!(
                    seen.insert(seq_of(b, r)),
                    "number reused in round {round}, packet {i}"
                );
            }
        }
        let (mut one, range) = framed(&ps[0]);
        let r = out.seal_counted(&mut one, range).unwrap();
        assert!(seen.insert(seq_of(&one, &r)), "single seal reused a number");
        assert_eq!(inb.open(&mut one, r).unwrap().len(), ps[0].len());
    }
    // 5 rounds x (10 reserved + 1 single) numbers handed out, in order.
    assert_eq!(out.packets_sent(), 55);
    assert_eq!(*seen.last().unwrap(), 55);
    assert_eq!(seen.len(), 50, "9 sealed + 1 single per round");
}

#[test]
fn bytes_are_counted_once_per_batch_exactly() {
    let (cipher, mode, encap, tunnel) = configs()[0];
    let (out, _) = pair(Backend::default(), cipher, mode, encap, tunnel);
    let ps = packets(20);
    let (mut single_bufs, ranges) = frame_all(&ps);
    let (reference, _) = pair(Backend::default(), cipher, mode, encap, tunnel);
    for (b, r) in single_bufs.iter_mut().zip(&ranges) {
        reference.seal_counted(b, r.clone()).unwrap();
    }
    let (mut bufs, ranges) = frame_all(&ps);
    let mut sealed: Vec<Sealed> = vec![Ok(0..0); ps.len()];
    out.seal_batch(&mut bufs, &ranges, &mut sealed);
    assert!(reference.bytes_sent() > 0);
    assert_eq!(out.bytes_sent(), reference.bytes_sent());
    // Same numbers, same keys: byte-identical wire packets.
    assert_eq!(bufs, single_bufs);
}

#[test]
fn open_batch_rejects_what_open_rejects_and_keeps_the_rest() {
    let (cipher, mode, encap, tunnel) = configs()[0];
    let (out, inb) = pair(Backend::default(), cipher, mode, encap, tunnel);
    let ps = packets(8);
    let (mut bufs, ranges) = frame_all(&ps);
    let mut sealed: Vec<Sealed> = vec![Ok(0..0); ps.len()];
    out.seal_batch(&mut bufs, &ranges, &mut sealed);
    let mut sealed: Vec<Range<usize>> = sealed.into_iter().map(Result::unwrap).collect();
    // 1: tampered; 2: truncated; 5 is sent twice (as 5 and 6) in one batch.
    let last = sealed[1].end - 1;
    bufs[1][last] ^= 0x40;
    sealed[2].end -= 20;
    bufs[6] = bufs[5].clone();
    sealed[6] = sealed[5].clone();
    let first_copy = bufs.clone();
    let mut opened: Vec<Opened> = vec![Ok(0..0); ps.len()];
    inb.open_batch(&mut bufs, &sealed, &mut opened);
    assert_eq!(opened[1], Err(OpenError::AuthFailed));
    assert!(opened[2].is_err(), "truncated accepted: {:?}", opened[2]);
    assert_eq!(opened[6], Err(OpenError::Replayed), "in-batch duplicate");
    for i in [0, 3, 4, 5, 7] {
        let r = opened[i].clone().unwrap();
        assert_eq!(&bufs[i][r], &ps[i][..], "packet {i}");
    }
    // The whole batch again: every good one is now a replay; the packet
    // that failed authentication (number 2) was never accepted, so a
    // correct copy of it would still be welcome.
    let mut again = first_copy;
    inb.open_batch(&mut again, &sealed, &mut opened);
    for i in [0, 3, 4, 5, 6, 7] {
        assert_eq!(opened[i], Err(OpenError::Replayed), "packet {i}");
    }
    assert_eq!(opened[1], Err(OpenError::AuthFailed));
}

#[test]
fn open_batch_from_threads_accepts_each_packet_once() {
    let (cipher, mode, encap, tunnel) = configs()[0];
    let (out, inb) = pair(Backend::default(), cipher, mode, encap, tunnel);
    let ps = packets(64);
    let (mut bufs, ranges) = frame_all(&ps);
    let mut sealed: Vec<Sealed> = vec![Ok(0..0); ps.len()];
    out.seal_batch(&mut bufs, &ranges, &mut sealed);
    let sealed: Vec<Range<usize>> = sealed.into_iter().map(Result::unwrap).collect();
    let accepted = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            let mut copy = bufs.clone();
            let (inb, sealed, accepted) = (&inb, &sealed, &accepted);
            s.spawn(move || {
                let mut opened: Vec<Opened> = vec![Ok(0..0); copy.len()];
                inb.open_batch(&mut copy, sealed, &mut opened);
                let ok = opened.iter().filter(|r| r.is_ok()).count();
                accepted.fetch_add(ok, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    assert_eq!(accepted.into_inner(), 64);
}
