//! Fuzz target bodies, shared by the cargo-fuzz targets (fuzz_targets/) and
//! by the plain test `tests/fuzz_bodies.rs`, which runs them over a seed
//! corpus and random inputs on stable Rust. Each body must never panic; the
//! round-trip bodies also assert correctness.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, KeyInit, Nonce};
use meshsec_esp::wire::{esp, icmpv4, icmpv6, ipv4, ipv6, tcp, udp};
use meshsec_esp::{
    ByteTally, Cipher, Encap, HEADROOM, InboundSa, Mode, OpenError, OutboundSa, SaKey, TAILROOM,
    classify, path,
};

const SPI: u32 = 0x4000_0100;
const KEY: [u8; 36] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,
    27, 28, 29, 30, 31, 32, 33, 34, 35, 36,
];

type Config = (Cipher, Mode, Encap, Option<(IpAddr, IpAddr)>);

fn config(sel: u8) -> Config {
    let cipher = match sel % 3 {
        0 => Cipher::Aes128Gcm,
        1 => Cipher::Aes256Gcm,
        _ => Cipher::Aes128Gmac,
    };
    let encap = if sel & 0x10 != 0 {
        Encap::udp_default()
    } else {
        Encap::None
    };
    let (mode, tunnel) = match (sel >> 5) % 3 {
        0 => (Mode::Transport, None),
        1 => (
            Mode::Tunnel,
            Some((
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
            )),
        ),
        _ => (
            Mode::Tunnel,
            Some((
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            )),
        ),
    };
    (cipher, mode, encap, tunnel)
}

fn key(cipher: Cipher) -> SaKey {
    SaKey::from_bytes(&KEY[..cipher.material_len()]).unwrap()
}

fn sas(sel: u8) -> (OutboundSa, InboundSa) {
    let (cipher, mode, encap, tunnel) = config(sel);
    let out = OutboundSa::new(SPI, cipher, key(cipher), mode, encap, tunnel).unwrap();
    let inb = InboundSa::new(SPI, cipher, key(cipher), mode, encap, 64).unwrap();
    (out, inb)
}

/// `open` on arbitrary bytes: first byte picks the SA configuration.
pub fn open(data: &[u8]) {
    let Some((&sel, pkt)) = data.split_first() else {
        return;
    };
    let (_, inb) = sas(sel);
    let mut buf = pkt.to_vec();
    if let Ok(r) = inb.open(&mut buf, 0..pkt.len()) {
        // Only reachable with a valid tag: the result must lie in the buffer.
        assert!(r.end <= buf.len());
    }
    let _ = classify(pkt);
}

/// `open` on packets with a *valid* AES-128-GCM tag around fuzzer-chosen
/// plaintext (payload, padding, pad length, next header) and a
/// fuzzer-chosen IP header: reaches the post-authentication checks
/// (padding, next header, inner packet, header restore).
pub fn open_authenticated(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Some((&hdr_len, rest)) = rest.split_first() else {
        return;
    };
    let hdr_len = usize::from(hdr_len % 64).min(rest.len());
    let (ip_hdr, plain) = rest.split_at(hdr_len);
    let mode = if sel & 1 == 0 {
        Mode::Transport
    } else {
        Mode::Tunnel
    };
    let inb = InboundSa::new(
        SPI,
        Cipher::Aes128Gcm,
        key(Cipher::Aes128Gcm),
        mode,
        Encap::None,
        64,
    )
    .unwrap();
    let seq: u64 = 1;
    let mut pkt = ip_hdr.to_vec();
    let esp_at = pkt.len();
    pkt.extend_from_slice(&SPI.to_be_bytes());
    pkt.extend_from_slice(&(seq as u32).to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    let ct_at = pkt.len();
    pkt.extend_from_slice(plain);
    let aead = Aes128Gcm::new_from_slice(&KEY[..16]).unwrap();
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&KEY[16..20]);
    nonce[4..].copy_from_slice(&seq.to_be_bytes());
    let mut aad = [0u8; 12];
    aad[..4].copy_from_slice(&SPI.to_be_bytes());
    aad[4..].copy_from_slice(&seq.to_be_bytes());
    let tag = aead
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut pkt[ct_at..])
        .unwrap();
    pkt.extend_from_slice(&tag);
    let _ = esp_at;
    let mut buf = pkt.clone();
    match inb.open(&mut buf, 0..pkt.len()) {
        Ok(r) => assert!(r.end <= buf.len() && r.start <= r.end),
        Err(e) => assert!(!e.as_label().is_empty()),
    }
}

/// seal(arbitrary) either refuses with a typed error or opens back to the
/// identical bytes.
pub fn seal_roundtrip(data: &[u8]) {
    let Some((&sel, pkt)) = data.split_first() else {
        return;
    };
    let (out, inb) = sas(sel);
    let mut buf = vec![0u8; HEADROOM + pkt.len() + TAILROOM];
    buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
    let range = HEADROOM..HEADROOM + pkt.len();
    let mut tally = ByteTally::default();
    let sealed = out.seal(&mut buf, range, &mut tally);
    out.add_tally(&mut tally);
    // Protected bytes are part of the input packet.
    assert!(out.bytes_sent() <= pkt.len() as u64);
    let Ok(sealed) = sealed else {
        return;
    };
    let opened = match inb.open(&mut buf, sealed) {
        Ok(r) => r,
        // A packet whose upper layer is itself ESP/no-next-header may not
        // round-trip in transport mode; anything else must.
        Err(OpenError::DummyPacket | OpenError::UnexpectedEncapsulation) => return,
        Err(e) => panic!("sealed packet did not open: {e:?}"),
    };
    // The sealed-and-opened packet equals the input up to its own length
    // field (trailing bytes beyond the IP length are not part of it), but
    // for the IPv4 header checksum in transport mode, which is updated
    // incrementally (RFC 1624 eqn. 3): an invalid one stays invalid but its
    // value may change, and a valid 0xffff (the other ones'-complement
    // zero, which stacks do not emit) comes back as the equivalent 0x0000.
    // Every other valid checksum is preserved exactly.
    let got = buf[opened].to_vec();
    let mut want = pkt[..got.len().min(pkt.len())].to_vec();
    if config(sel).1 == Mode::Transport && got.len() >= 12 {
        canonical_v4_checksum(&mut want, &got);
    }
    assert_eq!(got, want);
}

/// Makes `want`'s IPv4 header checksum what seal + open may turn it into
/// (see [`seal_roundtrip`]), after checking `got`'s is that.
fn canonical_v4_checksum(want: &mut [u8], got: &[u8]) {
    let Ok(input) = ipv4::Packet::new_checked(&want[..]) else {
        return;
    };
    let output = ipv4::Packet::new_unchecked(got);
    if !input.verify_checksum() {
        assert!(!output.verify_checksum());
        want[10..12].copy_from_slice(&got[10..12]);
    } else if input.checksum() == 0xffff && output.checksum() == 0 {
        assert!(output.verify_checksum());
        want[10..12].copy_from_slice(&[0, 0]);
    }
}

/// Path helpers on arbitrary packets.
pub fn path(data: &[u8]) {
    let mut p = data.to_vec();
    let _ = path::clamp_mss(&mut p, 1200);
    let mut out = [0u8; 1500];
    let _ = path::icmp::frag_needed(data, 1400, Ipv4Addr::new(10, 0, 0, 1), &mut out);
    let _ = path::icmpv6::packet_too_big(data, 1400, Ipv6Addr::LOCALHOST, &mut out);
    let _ = path::icmp::frag_needed(data, 1400, Ipv4Addr::new(10, 0, 0, 1), &mut out[..30]);
}

pub fn view_ipv4(data: &[u8]) {
    if let Ok(p) = ipv4::Packet::new_checked(data) {
        let _ = (
            p.version(),
            p.header_len(),
            p.dscp_ecn(),
            p.total_len(),
            p.ident(),
        );
        let _ = (
            p.dont_frag(),
            p.more_frags(),
            p.frag_offset(),
            p.ttl(),
            p.protocol(),
        );
        let _ = (
            p.checksum(),
            p.src_addr(),
            p.dst_addr(),
            p.verify_checksum(),
            p.payload(),
        );
        let mut b = data.to_vec();
        ipv4::Packet::new_unchecked(&mut b[..]).fill_checksum();
    }
}

pub fn view_ipv6(data: &[u8]) {
    if let Ok(p) = ipv6::Packet::new_checked(data) {
        let _ = (
            p.version(),
            p.traffic_class(),
            p.payload_len(),
            p.total_len(),
        );
        let _ = (p.next_header(), p.hop_limit(), p.src_addr(), p.dst_addr());
        if let Ok(ul) = p.upper_layer() {
            assert!(ul.offset <= p.total_len() && ul.next_header_at < ul.offset.max(7));
        }
        if let Ok(ul) = p.esp_insertion() {
            assert!(ul.offset <= p.total_len());
        }
    }
}

pub fn view_udp(data: &[u8]) {
    if let Ok(p) = udp::Packet::new_checked(data) {
        let _ = (
            p.src_port(),
            p.dst_port(),
            p.len(),
            p.checksum(),
            p.payload(),
        );
    }
}

pub fn view_tcp(data: &[u8]) {
    if let Ok(p) = tcp::Packet::new_checked(data) {
        let _ = (
            p.src_port(),
            p.dst_port(),
            p.header_len(),
            p.flags(),
            p.syn(),
            p.checksum(),
        );
        let _ = p.options();
        if let Some(at) = p.mss_value_offset() {
            assert!(at + 2 <= p.header_len());
        }
    }
}

pub fn view_icmp(data: &[u8]) {
    if let Ok(p) = icmpv4::Packet::new_checked(data) {
        let _ = (
            p.msg_type(),
            p.code(),
            p.next_hop_mtu(),
            p.verify_checksum(),
        );
    }
    if let Ok(p) = icmpv6::Packet::new_checked(data) {
        let _ = (p.msg_type(), p.code(), p.mtu());
        let _ = p.verify_checksum(Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
    }
}

pub fn view_esp(data: &[u8]) {
    if let Ok(p) = esp::Packet::new_checked(data) {
        let _ = (p.spi(), p.seq_low(), p.iv(), p.ciphertext(), p.icv());
    }
}

/// A fuzz body.
pub type Body = fn(&[u8]);

/// Every body, by name (for the stable-Rust corpus test).
pub const ALL: &[(&str, Body)] = &[
    ("open", open),
    ("open_authenticated", open_authenticated),
    ("seal_roundtrip", seal_roundtrip),
    ("path", path),
    ("view_ipv4", view_ipv4),
    ("view_ipv6", view_ipv6),
    ("view_udp", view_udp),
    ("view_tcp", view_tcp),
    ("view_icmp", view_icmp),
    ("view_esp", view_esp),
];
