//! Packet builders and SA configurations shared by the integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::IpAddr;
use std::ops::Range;

use meshsec_esp::wire::{checksum, ipv4};
use meshsec_esp::{
    Backend, ByteTally, Cipher, Encap, HEADROOM, InboundSa, Mode, OutboundSa, SaKey, SealError,
    TAILROOM,
};

pub const SPI: u32 = 0x4000_1234;

/// A valid IPv4 packet with the given protocol and payload.
pub fn ipv4_packet(proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![
        0x45,
        0x10,
        (total >> 8) as u8,
        total as u8,
        0x12,
        0x34,
        0x40,
        0,
        63,
        proto,
        0,
        0,
        10,
        1,
        0,
        5,
        10,
        2,
        0,
        7,
    ];
    p.extend_from_slice(payload);
    ipv4::Packet::new_unchecked(&mut p[..]).fill_checksum();
    p
}

/// [`ipv4_packet`] with a 4-byte options field (three NOPs and an
/// end-of-list): the layout seal and open take the general path for.
pub fn ipv4_packet_with_options(proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = ipv4_packet(proto, payload);
    p.splice(20..20, [1, 1, 1, 0]);
    p[0] = 0x46;
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[10..12].fill(0);
    ipv4::Packet::new_unchecked(&mut p[..]).fill_checksum();
    p
}

/// A valid IPv6 packet; `ext` are extension headers (the first byte of
/// each names the next), `first_nh` the fixed header's next header.
pub fn ipv6_packet(first_nh: u8, ext: &[u8], payload: &[u8]) -> Vec<u8> {
    let plen = ext.len() + payload.len();
    let mut p = vec![0x60, 0, 0, 0, (plen >> 8) as u8, plen as u8, first_nh, 64];
    p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
    p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    p.extend_from_slice(ext);
    p.extend_from_slice(payload);
    p
}

/// Whether an IPv4 header checksum is valid.
pub fn v4_checksum_ok(p: &[u8]) -> bool {
    checksum::checksum(&p[..usize::from(p[0] & 0xf) * 4]) == 0
}

/// One SA configuration: cipher, mode, encapsulation, tunnel endpoints.
pub type Config = (Cipher, Mode, Encap, Option<(IpAddr, IpAddr)>);

/// Every (cipher, mode, encap, tunnel family) combination.
pub fn configs() -> Vec<Config> {
    let mut v = Vec::new();
    let tunnels: [Option<(IpAddr, IpAddr)>; 2] = [
        Some(("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap())),
        Some((
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        )),
    ];
    for cipher in [Cipher::Aes128Gcm, Cipher::Aes256Gcm, Cipher::Aes128Gmac] {
        for encap in [Encap::None, Encap::udp_default()] {
            v.push((cipher, Mode::Transport, encap, None));
            for t in tunnels {
                v.push((cipher, Mode::Tunnel, encap, t));
            }
        }
    }
    v
}

pub fn key_for(cipher: Cipher, seed: u8) -> SaKey {
    let m: Vec<u8> = (0..cipher.material_len() as u8)
        .map(|i| i.wrapping_mul(7).wrapping_add(seed))
        .collect();
    SaKey::from_bytes(&m).unwrap()
}

/// A matching outbound/inbound pair.
pub fn pair(
    backend: Backend,
    cipher: Cipher,
    mode: Mode,
    encap: Encap,
    tunnel: Option<(IpAddr, IpAddr)>,
) -> (OutboundSa, InboundSa) {
    let out = OutboundSa::with_backend(
        backend,
        SPI,
        cipher,
        key_for(cipher, 1),
        mode,
        encap,
        tunnel,
    )
    .unwrap();
    let inb = InboundSa::with_backend(backend, SPI, cipher, key_for(cipher, 1), mode, encap, 1024)
        .unwrap();
    (out, inb)
}

/// Puts `packet` into a buffer with exactly HEADROOM/TAILROOM around it.
pub fn framed(packet: &[u8]) -> (Vec<u8>, Range<usize>) {
    let mut buf = vec![0xeeu8; HEADROOM + packet.len() + TAILROOM];
    buf[HEADROOM..HEADROOM + packet.len()].copy_from_slice(packet);
    (buf, HEADROOM..HEADROOM + packet.len())
}

/// Seal and count at once: [`OutboundSa::seal`] with a tally added to the
/// SA right away, so `bytes_sent` is exact after every packet.
pub trait SealCounted {
    fn seal_counted(&self, buf: &mut [u8], pkt: Range<usize>) -> Result<Range<usize>, SealError>;
}

impl SealCounted for OutboundSa {
    fn seal_counted(&self, buf: &mut [u8], pkt: Range<usize>) -> Result<Range<usize>, SealError> {
        let mut tally = ByteTally::default();
        let sealed = self.seal(buf, pkt, &mut tally);
        self.add_tally(&mut tally);
        sealed
    }
}
