//! `seal` counts the protected bytes in the caller's `ByteTally`; they reach
//! the SA (and its soft byte limit) exactly when the tally is added, and
//! when it is added does not change a byte on the wire.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use meshsec_esp::{Backend, ByteTally, Mode};

fn packets(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| match i % 2 {
            0 => ipv4_packet(17, &vec![i as u8; 1 + i * 13]),
            _ => ipv6_packet(6, &[], &vec![0x5a; 20 + i]),
        })
        .collect()
}

/// What ESP protects of `p` (RFC 4303 §2.3): the upper layer in transport
/// mode (these packets have no options or extension headers), the whole
/// inner packet in tunnel mode.
fn protected_len(p: &[u8], mode: Mode) -> u64 {
    let header = match (mode, p[0] >> 4) {
        (Mode::Tunnel, _) => 0,
        (Mode::Transport, 4) => 20,
        (Mode::Transport, _) => 40,
    };
    (p.len() - header) as u64
}

#[test]
fn tally_counts_protected_bytes_and_reaches_the_sa_on_add() {
    for &backend in Backend::ALL {
        for (cipher, mode, encap, tunnel) in configs() {
            let (reference, _) = pair(backend, cipher, mode, encap, tunnel);
            let (out, inb) = pair(backend, cipher, mode, encap, tunnel);
            let ps = packets(12);
            let mut tally = ByteTally::default();
            for p in &ps {
                let (mut want, range) = framed(p);
                let want_r = reference.seal_counted(&mut want, range.clone()).unwrap();
                let (mut got, range) = framed(p);
                let got_r = out.seal(&mut got, range, &mut tally).unwrap();
                assert_eq!(got_r, want_r, "{cipher:?} {mode:?} {encap:?}");
                assert_eq!(got, want, "{cipher:?} {mode:?} {encap:?}");
                let plain = inb.open(&mut got, got_r).unwrap();
                assert_eq!(&got[plain], &p[..]);
            }
            let exact: u64 = ps.iter().map(|p| protected_len(p, mode)).sum();
            assert_eq!(reference.bytes_sent(), exact, "{mode:?}");
            assert_eq!(out.packets_sent(), 12);
            // Not on the SA until added; then exactly the protected bytes.
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
        out.seal(&mut buf, range, &mut tally).unwrap();
    }
    assert!(tally.pending() >= 1000);
    assert!(!out.needs_rekey(), "lags until the tally is added");
    out.add_tally(&mut tally);
    assert!(out.needs_rekey());
}

#[test]
fn seals_with_different_tallies_share_the_sequence_counter() {
    // Two workers' tallies on one SA: one sequence, every number once.
    let (cipher, mode, encap, tunnel) = configs()[0];
    let (out, inb) = pair(Backend::default(), cipher, mode, encap, tunnel);
    let p = ipv4_packet(17, &[1; 100]);
    let mut tallies = [ByteTally::default(), ByteTally::default()];
    for i in 0..10 {
        let (mut buf, range) = framed(&p);
        let r = out.seal(&mut buf, range, &mut tallies[i % 2]).unwrap();
        // In order, each number once: the window accepts every packet.
        inb.open(&mut buf, r).unwrap();
        assert_eq!(inb.highest_seq(), i as u64 + 1);
    }
    for t in &mut tallies {
        assert_eq!(t.pending(), 5 * 100);
        out.add_tally(t);
    }
    assert_eq!(out.packets_sent(), 10);
    // Transport mode: the upper-layer bytes of each packet.
    assert_eq!(out.bytes_sent(), 10 * 100);
}
