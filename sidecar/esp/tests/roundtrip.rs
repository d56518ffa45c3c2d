//! open(seal(p)) == p for every configuration, header fix-ups checked from
//! the bytes, and every single-bit flip of a sealed packet is rejected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use meshsec_esp::wire::{ipv4, ipv6, udp};
use meshsec_esp::{Backend, Encap, Inbound, Mode, OpenError, classify, overhead};
use proptest::prelude::*;

fn sample_packets() -> Vec<Vec<u8>> {
    let hbh_then_frag = [44u8, 0, 1, 4, 0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 9];
    vec![
        ipv4_packet(17, &[1, 2, 3, 4, 5, 6, 7, 8, 9]),
        ipv4_packet(6, &[0u8; 0]),
        ipv4_packet(1, &[8, 0, 0, 0, 0, 1, 0, 1, 0xaa]),
        ipv4_packet(17, &[0x5a; 1400]),
        // Options: the general path (the others take the IPv4 fast path).
        ipv4_packet_with_options(17, &[3; 77]),
        ipv4_packet_with_options(6, &[0x5a; 1400]),
        ipv6_packet(17, &[], &[9; 33]),
        ipv6_packet(0, &hbh_then_frag, &[7; 100]),
    ]
}

#[test]
fn every_config_round_trips_with_fixed_headers() {
    for &backend in Backend::ALL {
        for (cipher, mode, encap, tunnel) in configs() {
            let (out, inb) = pair(backend, cipher, mode, encap, tunnel);
            for p in sample_packets() {
                let (mut buf, range) = framed(&p);
                let sealed = out.seal_counted(&mut buf, range).unwrap();
                let wire = &buf[sealed.clone()];
                let outer_family = match (mode, tunnel) {
                    (Mode::Tunnel, Some((a, _))) if a.is_ipv6() => meshsec_esp::Family::V6,
                    (Mode::Tunnel, _) => meshsec_esp::Family::V4,
                    _ if p[0] >> 4 == 6 => meshsec_esp::Family::V6,
                    _ => meshsec_esp::Family::V4,
                };
                assert!(wire.len() <= p.len() + overhead(mode, encap, outer_family, cipher));
                check_outer(wire, encap);
                let class = classify(wire).unwrap();
                assert_eq!(class.spi(), Some(SPI), "{class:?}");
                if cipher.encrypts() && p.len() > 100 {
                    assert!(
                        !wire.windows(32).any(|w| w == &p[p.len() - 32..]),
                        "plaintext visible"
                    );
                }
                let opened = inb.open(&mut buf, sealed).unwrap();
                assert_eq!(
                    &buf[opened],
                    &p[..],
                    "{cipher:?} {mode:?} {encap:?} {tunnel:?}"
                );
            }
        }
    }
}

/// Length fields, checksum and protocol of the sealed packet as a capture
/// tool would read them.
fn check_outer(wire: &[u8], encap: Encap) {
    let (proto, l4) = if wire[0] >> 4 == 4 {
        let p = ipv4::Packet::new_checked(wire).unwrap();
        assert_eq!(usize::from(p.total_len()), wire.len());
        assert!(p.verify_checksum());
        (p.protocol(), p.header_len())
    } else {
        let p = ipv6::Packet::new_checked(wire).unwrap();
        assert_eq!(p.total_len(), wire.len());
        let ul = p.upper_layer().unwrap();
        (ul.protocol, ul.offset)
    };
    match encap {
        Encap::None => assert_eq!(proto, 50),
        Encap::Udp { dport, .. } => {
            assert_eq!(proto, 17);
            let u = udp::Packet::new_checked(&wire[l4..]).unwrap();
            assert_eq!(u.dst_port(), dport);
            assert_eq!(usize::from(u.len()), wire.len() - l4);
        }
    }
}

/// A valid IPv4 header checksum written as 0xffff (the other
/// ones'-complement zero; stacks emit 0x0000) comes back from seal + open
/// as 0x0000, still valid, everything else unchanged: the RFC 1624 eqn. 3
/// update cannot produce 0xffff. Found by the `seal_roundtrip` fuzz
/// target (this is its input without the configuration byte).
#[test]
fn valid_checksum_0xffff_comes_back_as_0x0000() {
    let input = [
        0x46, 0x02, 0x00, 0x1c, 0x15, 0x7f, 0x0a, 0x23, 0x01, 0xff, 0xff, 0xff, 0x00, 0x32, 0x00,
        0x00, 0x38, 0x00, 0x00, 0xaf, 0xaf, 0xaf, 0xaf, 0xaf, 0xaf, 0xe7, 0xaf, 0xaf,
    ];
    let p = ipv4::Packet::new_checked(&input[..]).unwrap();
    assert_eq!(p.checksum(), 0xffff);
    assert!(p.verify_checksum(), "the input is a valid header");
    for &backend in Backend::ALL {
        for (cipher, mode, encap, tunnel) in configs() {
            let (out, inb) = pair(backend, cipher, mode, encap, tunnel);
            let (mut buf, range) = framed(&input);
            let sealed = out.seal_counted(&mut buf, range).unwrap();
            let opened = inb.open(&mut buf, sealed).unwrap();
            let got = &buf[opened];
            let mut want = input.to_vec();
            if mode == Mode::Transport {
                want[10..12].copy_from_slice(&[0, 0]);
            }
            assert_eq!(got, &want[..], "{cipher:?} {mode:?} {encap:?}");
            assert!(ipv4::Packet::new_checked(got).unwrap().verify_checksum());
        }
    }
}

#[test]
fn replay_and_keepalive() {
    let (out, inb) = pair(
        Backend::default(),
        meshsec_esp::Cipher::Aes128Gcm,
        Mode::Transport,
        Encap::udp_default(),
        None,
    );
    let p = ipv4_packet(17, &[1; 20]);
    let (mut buf, r) = framed(&p);
    let s = out.seal_counted(&mut buf, r).unwrap();
    let copy = buf.clone();
    inb.open(&mut buf, s.clone()).unwrap();
    let mut again = copy.clone();
    assert_eq!(inb.open(&mut again, s), Err(OpenError::Replayed));
    let ka = ipv4_packet(17, &[0x11, 0x94, 0x11, 0x94, 0, 9, 0, 0, 0xff]);
    assert_eq!(classify(&ka), Ok(Inbound::NatKeepalive));
    let mut b = ka.clone();
    assert_eq!(inb.open(&mut b, 0..ka.len()), Err(OpenError::NatKeepalive));
}

#[test]
fn wrong_key_is_auth_failure_and_does_not_move_window() {
    let cipher = meshsec_esp::Cipher::Aes256Gcm;
    let out = meshsec_esp::OutboundSa::new(
        SPI,
        cipher,
        key_for(cipher, 9),
        Mode::Transport,
        Encap::None,
        None,
    )
    .unwrap();
    let (_, inb) = pair(
        Backend::default(),
        cipher,
        Mode::Transport,
        Encap::None,
        None,
    );
    let p = ipv4_packet(6, &[3; 40]);
    let (mut buf, r) = framed(&p);
    let s = out.seal_counted(&mut buf, r).unwrap();
    assert_eq!(inb.open(&mut buf, s), Err(OpenError::AuthFailed));
    assert_eq!(inb.highest_seq(), 0);
}

#[test]
fn sequence_never_wraps() {
    let cipher = meshsec_esp::Cipher::Aes128Gcm;
    let out = meshsec_esp::OutboundSa::new(
        SPI,
        cipher,
        key_for(cipher, 1),
        Mode::Transport,
        Encap::None,
        None,
    )
    .unwrap()
    .with_next_seq(meshsec_esp::SEQ_LIMIT - 1)
    .unwrap();
    let p = ipv4_packet(6, &[3; 40]);
    let (mut buf, r) = framed(&p);
    assert!(out.seal_counted(&mut buf, r.clone()).is_ok());
    let (mut buf, r) = framed(&p);
    assert_eq!(
        out.seal_counted(&mut buf, r.clone()),
        Err(meshsec_esp::SealError::SequenceExhausted)
    );
    assert_eq!(
        out.seal_counted(&mut buf, r),
        Err(meshsec_esp::SealError::SequenceExhausted)
    );
}

#[test]
fn counters_count_packets_and_protected_bytes() {
    let tunnel = Some(("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()));
    for (mode, tunnel) in [(Mode::Transport, None), (Mode::Tunnel, tunnel)] {
        let (out, _) = pair(
            Backend::default(),
            meshsec_esp::Cipher::Aes128Gcm,
            mode,
            Encap::None,
            tunnel,
        );
        let mut want = 0;
        for n in [0usize, 1, 100, 1400] {
            let p = ipv4_packet(17, &vec![1; n]);
            let (mut buf, r) = framed(&p);
            out.seal_counted(&mut buf, r).unwrap();
            want += if mode == Mode::Tunnel { p.len() } else { n } as u64;
        }
        assert_eq!(out.packets_sent(), 4);
        assert_eq!(out.bytes_sent(), want, "{mode:?}");
        assert!(!out.needs_rekey());
        out.set_soft_limits(u64::MAX, want);
        assert!(out.needs_rekey());
    }
}

#[test]
fn esn_high_bits_cross_2_pow_32() {
    for (cipher, mode, encap, tunnel) in configs() {
        let (out, inb) = pair(Backend::default(), cipher, mode, encap, tunnel);
        let out = out.with_next_seq((1 << 32) - 2).unwrap();
        let inb = inb.expect_next((1 << 32) - 2).unwrap();
        for _ in 0..4 {
            let p = ipv4_packet(17, &[4; 50]);
            let (mut buf, r) = framed(&p);
            let s = out.seal_counted(&mut buf, r).unwrap();
            let o = inb.open(&mut buf, s).unwrap();
            assert_eq!(&buf[o], &p[..]);
        }
        assert_eq!(inb.highest_seq(), (1 << 32) + 1);
    }
}

#[test]
fn room_is_checked() {
    let (out, _) = pair(
        Backend::default(),
        meshsec_esp::Cipher::Aes128Gcm,
        Mode::Tunnel,
        Encap::udp_default(),
        Some((
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        )),
    );
    let p = ipv4_packet(17, &[1; 10]);
    let mut buf = vec![0u8; p.len() + 100];
    buf[10..10 + p.len()].copy_from_slice(&p);
    assert_eq!(
        out.seal_counted(&mut buf, 10..10 + p.len()),
        Err(meshsec_esp::SealError::NoHeadroom)
    );
    let mut buf = vec![0u8; 64 + p.len() + 5];
    buf[64..64 + p.len()].copy_from_slice(&p);
    assert_eq!(
        out.seal_counted(&mut buf, 64..64 + p.len()),
        Err(meshsec_esp::SealError::NoTailroom)
    );
}

fn arb_packet() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..1500)).prop_map(|(proto, pl)| {
            let proto = if proto == 50 || proto == 59 {
                17
            } else {
                proto
            };
            ipv4_packet(proto, &pl)
        }),
        (
            prop_oneof![Just(6u8), Just(17), Just(58)],
            proptest::collection::vec(any::<u8>(), 0..1500)
        )
            .prop_map(|(nh, pl)| ipv6_packet(nh, &[], &pl)),
    ]
}

fn arb_config() -> impl Strategy<Value = usize> {
    0..configs().len()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn open_seal_is_identity(p in arb_packet(), c in arb_config(), b in 0..Backend::ALL.len()) {
        let (cipher, mode, encap, tunnel) = configs()[c];
        let (out, inb) = pair(Backend::ALL[b], cipher, mode, encap, tunnel);
        let (mut buf, r) = framed(&p);
        let s = out.seal_counted(&mut buf, r).unwrap();
        let o = inb.open(&mut buf, s).unwrap();
        prop_assert_eq!(&buf[o], &p[..]);
    }

    /// Flipping any one bit of the ESP part (SPI through ICV) is rejected.
    #[test]
    fn any_bit_flip_in_esp_rejected(p in arb_packet(), c in arb_config(), bit in any::<prop::sample::Index>()) {
        let (cipher, mode, encap, tunnel) = configs()[c];
        let (out, inb) = pair(Backend::default(), cipher, mode, encap, tunnel);
        let (mut buf, r) = framed(&p);
        let s = out.seal_counted(&mut buf, r).unwrap();
        let class = classify(&buf[s.clone()]).unwrap();
        prop_assert!(class.spi().is_some());
        let esp_start = esp_offset(&buf[s.clone()]);
        let nbits = (s.len() - esp_start) * 8;
        let i = bit.index(nbits);
        buf[s.start + esp_start + i / 8] ^= 1 << (i % 8);
        let got = inb.open(&mut buf, s);
        prop_assert!(matches!(got, Err(OpenError::AuthFailed | OpenError::UnknownSpi | OpenError::Replayed | OpenError::TooOld)), "{:?}", got);
    }

    /// Flipping any bit anywhere: ESP protects everything from the SPI on;
    /// the outer IP (and UDP) header is not covered by ESP (RFC 4303 §3.1,
    /// that is AH's job), so a flip there is either rejected or the
    /// protected content comes back unchanged — never altered content.
    #[test]
    fn any_bit_flip_never_alters_protected_content(p in arb_packet(), c in arb_config(), bit in any::<prop::sample::Index>()) {
        let (cipher, mode, encap, tunnel) = configs()[c];
        let (out, inb) = pair(Backend::default(), cipher, mode, encap, tunnel);
        let (mut buf, r) = framed(&p);
        let s = out.seal_counted(&mut buf, r).unwrap();
        let esp_start = esp_offset(&buf[s.clone()]);
        let i = bit.index(s.len() * 8);
        buf[s.start + i / 8] ^= 1 << (i % 8);
        match inb.open(&mut buf, s) {
            Err(_) => {}
            Ok(o) => {
                prop_assert!(i / 8 < esp_start, "flip in ESP part accepted");
                let got = &buf[o];
                match mode {
                    // The inner packet is entirely protected.
                    Mode::Tunnel => prop_assert_eq!(got, &p[..]),
                    // The upper-layer payload is protected; the IP header
                    // came from the wire.
                    Mode::Transport => {
                        let hl = got.len() - (p.len() - upper_offset(&p));
                        prop_assert_eq!(&got[hl..], &p[upper_offset(&p)..]);
                    }
                }
            }
        }
    }
}

/// Length of the IP header(s) that transport mode keeps in front of ESP.
fn upper_offset(p: &[u8]) -> usize {
    if p[0] >> 4 == 4 {
        ipv4::Packet::new_checked(p).unwrap().header_len()
    } else {
        ipv6::Packet::new_checked(p)
            .unwrap()
            .esp_insertion()
            .unwrap()
            .offset
    }
}

/// Offset of the ESP header in a sealed packet.
fn esp_offset(wire: &[u8]) -> usize {
    let (proto, l4) = if wire[0] >> 4 == 4 {
        let p = ipv4::Packet::new_checked(wire).unwrap();
        (p.protocol(), p.header_len())
    } else {
        let ul = ipv6::Packet::new_checked(wire)
            .unwrap()
            .upper_layer()
            .unwrap();
        (ul.protocol, ul.offset)
    };
    if proto == 17 { l4 + 8 } else { l4 }
}
