//! Instructions `InboundSa::open` and `OutboundSa::seal` execute beyond
//! the bare AEAD call, per packet: deterministic where the paired timing bench moves by ±3 points
//! on a shared VM. Run under callgrind (`e2e/bench/esp-open-instructions`
//! does, and prints the figure):
//!
//! `valgrind --tool=callgrind --toggle-collect='*open_all*'
//!  --toggle-collect='*bare_all*' --toggle-collect='*seal_all*'
//!  <this example> [packets] [size]` (`bare_seal_all` matches `*seal_all*`)
//!
//! Both loops open the same packets (IPv4, UDP-encapsulated transport
//! mode, AES-128-GCM, sealed by the SA) with the paired bench's SAs and
//! bare baseline (`benches/support`), with the fastest backend built.

// A failed setup should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::ops::Range;

use meshsec_esp::{Backend, ByteTally, Cipher, HEADROOM, InboundSa, OutboundSa};

#[path = "../benches/support/mod.rs"]
mod support;
use support::{Bare, frame, sas};

#[inline(never)]
fn open_all(sa: &InboundSa, bufs: &mut [Vec<u8>], r: &Range<usize>) {
    for b in bufs {
        black_box(sa.open(b, r.clone()).unwrap());
    }
}

#[inline(never)]
fn bare_all(bare: &Bare, bufs: &mut [Vec<u8>], r: &Range<usize>) {
    for f in bufs {
        bare.open(f, r);
        black_box(&f);
    }
}

#[inline(never)]
fn seal_all(sa: &OutboundSa, bufs: &mut [Vec<u8>], r: &Range<usize>) -> Range<usize> {
    let mut sealed = 0..0;
    let mut tally = ByteTally::default();
    for b in bufs {
        sealed = black_box(sa.seal(b, r.clone(), &mut tally).unwrap());
    }
    sa.add_tally(&mut tally);
    sealed
}

#[inline(never)]
fn bare_seal_all(bare: &Bare, bufs: &mut [Vec<u8>], size: usize) {
    for (seq, f) in bufs.iter_mut().enumerate() {
        bare.seal(f, size, seq as u64 + 1);
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
    let cipher = Cipher::Aes128Gcm;
    let (out, inb) = sas(backend, cipher);
    let bare = Bare::new(backend, cipher);
    let template = frame(size);
    let mut sealed = vec![template.clone(); packets];
    bare_seal_all(&bare, &mut sealed.clone(), size);
    let range = seal_all(&out, &mut sealed, &(HEADROOM..HEADROOM + size));
    let mut for_bare = sealed.clone();
    bare_all(&bare, &mut for_bare, &range);
    open_all(&inb, &mut sealed, &range);
    println!("backend {backend:?}, {packets} packets of {size} B sealed and opened twice");
}
