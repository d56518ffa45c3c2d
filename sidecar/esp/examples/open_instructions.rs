//! Instructions `InboundSa::open` executes beyond the bare AEAD call, per
//! packet: deterministic where the paired timing bench moves by ±3 points
//! on a shared VM. Run under callgrind (`sidecar/esp/benches/instructions`
//! does, and prints the figure):
//!
//! `valgrind --tool=callgrind --toggle-collect='*open_all*'
//!  --toggle-collect='*bare_all*' <this example> [packets] [size]`
//!
//! Both loops open the same packets (IPv4, UDP-encapsulated transport
//! mode, AES-128-GCM, sealed by the SA) with the same backend object type;
//! the bare one builds nonce and AAD like the paired bench's `Bare::open`.

// A failed setup should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::ops::Range;

use meshsec_esp::aead::{Aead, new_aead};
use meshsec_esp::wire::ipv4;
use meshsec_esp::{Backend, Cipher, Encap, HEADROOM, InboundSa, Mode, OutboundSa, SaKey, TAILROOM};

const SPI: u32 = 0x4000_0101;
const CIPHER: Cipher = Cipher::Aes128Gcm;

fn key() -> SaKey {
    let m: Vec<u8> = (0..CIPHER.material_len() as u8).collect();
    SaKey::from_bytes(&m).unwrap()
}

fn frame(size: usize) -> Vec<u8> {
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

fn be96(hi32: u32, lo64: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&((u64::from(hi32) << 32) | (lo64 >> 32)).to_be_bytes());
    n[8..].copy_from_slice(&(lo64 as u32).to_be_bytes());
    n
}

#[inline(never)]
fn open_all(sa: &InboundSa, bufs: &mut [Vec<u8>], r: &Range<usize>) {
    for b in bufs {
        black_box(sa.open(b, r.clone()).unwrap());
    }
}

#[inline(never)]
fn bare_all(aead: &dyn Aead, salt: u32, bufs: &mut [Vec<u8>], r: &Range<usize>) {
    let esp = r.start + 20 + 8;
    for f in bufs {
        let spi = u32::from_be_bytes(f[esp..esp + 4].try_into().unwrap());
        let iv = u64::from_be_bytes(f[esp + 8..esp + 16].try_into().unwrap());
        aead.open_in_place(&be96(salt, iv), &be96(spi, iv), &mut f[esp + 16..r.end])
            .unwrap();
        black_box(&f);
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: [packets] [size]"))
        .collect();
    let packets = args.first().copied().unwrap_or(20_000);
    let size = args.get(1).copied().unwrap_or(1400);
    let backend = *Backend::ALL.last().unwrap();
    let out = OutboundSa::with_backend(
        backend,
        SPI,
        CIPHER,
        key(),
        Mode::Transport,
        Encap::udp_default(),
        None,
    )
    .unwrap();
    let inb = InboundSa::with_backend(
        backend,
        SPI,
        CIPHER,
        key(),
        Mode::Transport,
        Encap::udp_default(),
        8192,
    )
    .unwrap();
    let template = frame(size);
    let mut sealed = Vec::with_capacity(packets);
    let mut range = 0..0;
    for _ in 0..packets {
        let mut f = template.clone();
        range = out.seal(&mut f, HEADROOM..HEADROOM + size).unwrap();
        sealed.push(f);
    }
    let k = key();
    let aead = new_aead(backend, CIPHER, k.aes_key()).unwrap();
    let salt = u32::from_be_bytes(k.salt());
    let mut for_bare = sealed.clone();
    bare_all(aead.as_ref(), salt, &mut for_bare, &range);
    open_all(&inb, &mut sealed, &range);
    println!("backend {backend:?}, {packets} packets of {size} B opened twice");
}
