//! What the timing bench (`seal_open.rs`) and the instruction count
//! (`examples/open_instructions.rs`) share: the packets, keys, SAs and the
//! bare AEAD baseline, so both measure the same thing.

// A failed setup should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::ops::Range;

use meshsec_esp::aead::{Aead, new_aead};
use meshsec_esp::wire::ipv4;
use meshsec_esp::{Backend, Cipher, Encap, HEADROOM, InboundSa, Mode, OutboundSa, SaKey, TAILROOM};

pub const SPI: u32 = 0x4000_0101;
/// IPv4 header + UDP encap + ESP header + IV in front of the ciphertext.
pub const CT_OFFSET: usize = 20 + 8 + 8 + 8;

pub fn key(cipher: Cipher) -> SaKey {
    let m: Vec<u8> = (0..cipher.material_len() as u8).collect();
    SaKey::from_bytes(&m).unwrap_or_else(|e| panic!("{e}"))
}

/// A UDP-in-IPv4 packet of `size` bytes in a frame with head/tail room.
pub fn frame(size: usize) -> Vec<u8> {
    let mut f = vec![0u8; HEADROOM + size + TAILROOM];
    let p = &mut f[HEADROOM..HEADROOM + size];
    p[..20].copy_from_slice(&[
        0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 1, 0, 5, 10, 2, 0, 7,
    ]);
    p[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    for (i, b) in p[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    ipv4::Packet::new_unchecked(&mut p[..]).fill_checksum();
    f
}

/// Bytes the AEAD processes for a packet of `size`: L4 payload + padding +
/// pad length + next header.
pub fn ct_len(size: usize) -> usize {
    let payload = size - 20;
    payload + meshsec_esp::wire::esp::pad_len(payload) + 2
}

/// `hi32 || lo64` as 12 bytes, stored as 8 + 4 bytes: how `meshsec-esp`
/// builds the nonce (salt || IV) and the GCM AAD (SPI || 64-bit seq).
pub fn be96(hi32: u32, lo64: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&((u64::from(hi32) << 32) | (lo64 >> 32)).to_be_bytes());
    n[8..].copy_from_slice(&(lo64 as u32).to_be_bytes());
    n
}

/// The bare AEAD: the same backend object type the SA uses, no ESP.
pub struct Bare {
    aead: Box<dyn Aead>,
    salt: u32,
}

impl Bare {
    pub fn new(backend: Backend, cipher: Cipher) -> Self {
        let k = key(cipher);
        Bare {
            aead: new_aead(backend, cipher, k.aes_key()).unwrap_or_else(|e| panic!("{e}")),
            salt: u32::from_be_bytes(k.salt()),
        }
    }

    /// Encrypts the `size`-byte packet's payload (+ trailer) where seal
    /// puts the ciphertext, with the tag after it.
    pub fn seal(&self, f: &mut [u8], size: usize, seq: u64) {
        let ct = HEADROOM + 20;
        let (head, tail) = f.split_at_mut(ct + ct_len(size));
        let tag: &mut [u8; 16] = (&mut tail[..16]).try_into().unwrap();
        self.aead
            .seal_in_place(&be96(self.salt, seq), &be96(SPI, seq), &mut head[ct..], tag)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Verifies and decrypts a packet sealed by the SA (range `r`).
    pub fn open(&self, f: &mut [u8], r: &Range<usize>) {
        let esp = r.start + CT_OFFSET - 16;
        let spi = u32::from_be_bytes(f[esp..esp + 4].try_into().unwrap());
        // Our IV is the 64-bit sequence number (what the SA infers).
        let iv = u64::from_be_bytes(f[esp + 8..esp + 16].try_into().unwrap());
        self.aead
            .open_in_place(
                &be96(self.salt, iv),
                &be96(spi, iv),
                &mut f[esp + 16..r.end],
            )
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

pub fn sas(backend: Backend, cipher: Cipher) -> (OutboundSa, InboundSa) {
    let out = OutboundSa::with_backend(
        backend,
        SPI,
        cipher,
        key(cipher),
        Mode::Transport,
        Encap::udp_default(),
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let inb = InboundSa::with_backend(
        backend,
        SPI,
        cipher,
        key(cipher),
        Mode::Transport,
        Encap::udp_default(),
        8192,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (out, inb)
}
