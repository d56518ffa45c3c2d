//! Proves that seal and open perform zero heap allocations per packet, with
//! a counting global allocator, for every configuration and backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A global allocator is the only way to observe allocations; it is test
// code and forwards to the system allocator.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;
use meshsec_esp::Backend;

struct Counting;

thread_local! {
    // const-initialised: touching them never allocates. Per thread, so
    // tests running in parallel do not see each other's allocations.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    if ARMED.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees carry over.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged (see impl comment).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn count<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let before = ALLOCS.with(Cell::get);
    ARMED.with(|a| a.set(true));
    let r = f();
    ARMED.with(|a| a.set(false));
    (ALLOCS.with(Cell::get) - before, r)
}

#[test]
fn the_counter_sees_allocations() {
    // Guards against a vacuous pass: the counter must see a Vec.
    let (n, v) = count(|| vec![1u8; 100]);
    assert!(n >= 1, "counting allocator is not active");
    drop(v);
}

#[test]
fn seal_and_open_do_not_allocate() {
    let packets = [ipv4_packet(17, &[7; 1400]), ipv6_packet(6, &[], &[9; 64])];
    for &backend in Backend::ALL {
        for (cipher, mode, encap, tunnel) in configs() {
            let (out, inb) = pair(backend, cipher, mode, encap, tunnel);
            for p in &packets {
                let (mut buf, range) = framed(p);
                let mut work = buf.clone();
                // Warm-up: one-time lazy initialisation is not per packet.
                let s = out.seal_counted(&mut work, range.clone()).unwrap();
                inb.open(&mut work, s).unwrap();
                for _ in 0..50 {
                    work.copy_from_slice(&buf);
                    let (n, r) = count(|| {
                        let s = out.seal_counted(&mut work, range.clone())?;
                        inb.open(&mut work, s)
                            .map_err(|_| meshsec_esp::SealError::Crypto)
                    });
                    let opened = r.unwrap();
                    assert_eq!(n, 0, "{backend:?} {cipher:?} {mode:?} {encap:?} allocated");
                    assert_eq!(&work[opened], &p[..]);
                }
                // A rejected packet must not allocate either.
                let s = out.seal_counted(&mut buf, range.clone()).unwrap();
                buf[s.end - 1] ^= 1;
                let (n, r) = count(|| inb.open(&mut buf, s));
                assert!(r.is_err());
                assert_eq!(n, 0, "rejecting allocated");
            }
        }
    }
}

#[test]
fn batches_do_not_allocate() {
    let p = ipv4_packet(17, &[7; 1400]);
    for &backend in Backend::ALL {
        for (cipher, mode, encap, tunnel) in configs() {
            let (out, inb) = pair(backend, cipher, mode, encap, tunnel);
            let (buf, range) = framed(&p);
            let mut bufs = vec![buf.clone(); 8];
            let ranges = vec![range; 8];
            let mut sealed = vec![Ok(0..0); 8];
            let mut opened = vec![Ok(0..0); 8];
            for round in 0..10 {
                bufs.iter_mut().for_each(|b| b.copy_from_slice(&buf));
                let (n, ()) = count(|| out.seal_batch(&mut bufs, &ranges, &mut sealed));
                assert_eq!(
                    n, 0,
                    "{backend:?} {cipher:?} {mode:?} {encap:?} seal_batch allocated"
                );
                let sealed_ranges: Vec<_> = sealed.iter().map(|r| r.clone().unwrap()).collect();
                let (n, ()) = count(|| inb.open_batch(&mut bufs, &sealed_ranges, &mut opened));
                // The first round may initialise lazily, like the warm-up above.
                assert!(
                    round == 0 || n == 0,
                    "{backend:?} {cipher:?} open_batch allocated"
                );
                assert!(opened.iter().all(|r| r.is_ok()));
            }
        }
    }
}
