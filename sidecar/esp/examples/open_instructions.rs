//! Instructions `InboundSa::open` executes beyond the bare AEAD call, per
//! packet: deterministic where the paired timing bench moves by ±3 points
//! on a shared VM. Run under callgrind (`e2e/bench/esp-open-instructions`
//! does, and prints the figure):
//!
//! `valgrind --tool=callgrind --toggle-collect='*open_all*'
//!  --toggle-collect='*bare_all*' <this example> [packets] [size]`
//!
//! Both loops open the same packets (IPv4, UDP-encapsulated transport
//! mode, AES-128-GCM, sealed by the SA) with the paired bench's SAs and
//! bare baseline (`benches/support`), with the fastest backend built.

// A failed setup should abort loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::ops::Range;

use meshsec_esp::{Backend, Cipher, HEADROOM, InboundSa};

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
    let template = frame(size);
    let mut sealed = Vec::with_capacity(packets);
    let mut range = 0..0;
    for _ in 0..packets {
        let mut f = template.clone();
        range = out.seal(&mut f, HEADROOM..HEADROOM + size).unwrap();
        sealed.push(f);
    }
    let mut for_bare = sealed.clone();
    bare_all(&Bare::new(backend, cipher), &mut for_bare, &range);
    open_all(&inb, &mut sealed, &range);
    println!("backend {backend:?}, {packets} packets of {size} B opened twice");
}
