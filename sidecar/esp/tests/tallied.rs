//! `seal_tallied` / `add_tally`: the same wire packets and sequence numbers
//! as `seal`, the protected bytes counted in the caller's tally and reaching
//! the SA (and its soft byte limit) exactly when the tally is added.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use meshsec_esp::{Backend, ByteTally};

fn packets(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| match i % 2 {
            0 => ipv4_packet(17, &vec![i as u8; 1 + i * 13]),
            _ => ipv6_packet(6, &[], &vec![0x5a; 20 + i]),
        })
        .collect()
}

#[test]
fn tallied_seal_matches_seal_and_counts_on_add() {
    for &backend in Backend::ALL {
        for (cipher, mode, encap, tunnel) in configs() {
            let (reference, _) = pair(backend, cipher, mode, encap, tunnel);
            let (out, inb) = pair(backend, cipher, mode, encap, tunnel);
            let ps = packets(12);
            let mut tally = ByteTally::default();
            for p in &ps {
                let (mut want, range) = framed(p);
                let want_r = reference.seal(&mut want, range.clone()).unwrap();
                let (mut got, range) = framed(p);
                let got_r = out.seal_tallied(&mut got, range, &mut tally).unwrap();
                assert_eq!(got_r, want_r, "{cipher:?} {mode:?} {encap:?}");
                assert_eq!(got, want, "{cipher:?} {mode:?} {encap:?}");
                let plain = inb.open(&mut got, got_r).unwrap();
                assert_eq!(&got[plain], &p[..]);
            }
            let exact = reference.bytes_sent();
            assert!(exact > 0);
            assert_eq!(out.packets_sent(), 12);
            // Not on the SA until added; then exactly the single seals' count.
            assert_eq!(out.bytes_sent(), 0);
            assert_eq!(tally.pending(), exact);
            out.add_tally(&mut tally);
            assert_eq!(out.bytes_sent(), exact);
            assert_eq!(tally.pending(), 0);
            out.add_tally(&mut tally);
            assert_eq!(out.bytes_sent(), exact, "an emptied tally adds nothing");
        }
    }
}

#[test]
fn soft_byte_limit_sees_tallied_bytes_once_added() {
    let (cipher, mode, encap, tunnel) = configs()[0];
    let (out, _) = pair(Backend::default(), cipher, mode, encap, tunnel);
    out.set_soft_limits(u64::MAX, 1000);
    let mut tally = ByteTally::default();
    let p = ipv4_packet(17, &[7; 600]);
    for _ in 0..2 {
        let (mut buf, range) = framed(&p);
        out.seal_tallied(&mut buf, range, &mut tally).unwrap();
    }
    assert!(tally.pending() >= 1000);
    assert!(!out.needs_rekey(), "lags until the tally is added");
    out.add_tally(&mut tally);
    assert!(out.needs_rekey());
}

#[test]
fn tallied_and_plain_seals_share_the_sequence_counter() {
    let (cipher, mode, encap, tunnel) = configs()[0];
    let (out, inb) = pair(Backend::default(), cipher, mode, encap, tunnel);
    let p = ipv4_packet(17, &[1; 100]);
    let mut tally = ByteTally::default();
    for i in 0..10 {
        let (mut buf, range) = framed(&p);
        let r = if i % 2 == 0 {
            out.seal_tallied(&mut buf, range, &mut tally).unwrap()
        } else {
            out.seal(&mut buf, range).unwrap()
        };
        // In order, each number once: the window accepts every packet.
        inb.open(&mut buf, r).unwrap();
        assert_eq!(inb.highest_seq(), i + 1);
    }
    out.add_tally(&mut tally);
    assert_eq!(out.packets_sent(), 10);
    // Transport mode: the upper-layer bytes of each packet.
    assert_eq!(out.bytes_sent(), 10 * 100);
}
