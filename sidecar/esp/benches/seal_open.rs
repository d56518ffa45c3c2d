//! seal / open against a bare AEAD loop over the same buffers, per backend,
//! cipher and packet size, so the difference is the ESP work: parsing,
//! header moves, padding, sequence/replay, counters, length fix-ups.
//!
//! Fairness rules (docs/protocol.md §8 says why each matters):
//! - the bare loop calls the same backend object through the same `Aead`
//!   trait method, with the tag written into the packet buffer right after
//!   the ciphertext, as `meshsec-esp` does;
//! - it builds nonce and AAD per packet exactly as `meshsec-esp` does
//!   ([`be96`]), so neither side pays a store-forwarding stall the other
//!   does not;
//! - both sides work on a batch of packets copied before the clock starts
//!   (a packet arrives from a read long before it is sealed); a copy right
//!   before the call would leave ~1.5 KB of stores pending that the first
//!   locked instruction must wait for, while the bare AEAD overlaps them;
//! - both consume their result without a wide reload of it.
//!
//! `cargo bench -p meshsec-esp --features aws-lc` covers both backends;
//! `-- --paired [aes-gcm|aws-lc-rs]` prints only the paired table. Its
//! `seal` row is `seal` as the sidecar's datapath calls it: the byte tally
//! added to the SA every [`BATCH`] packets, as the datapath adds it once
//! per read. `seal_exact` adds it after every packet (the SA's byte count
//! exact at every moment: a second locked instruction per packet).

// A failed setup should abort the bench loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::ops::Range;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group};
use meshsec_esp::{Backend, ByteTally, Cipher, HEADROOM, InboundSa, OutboundSa};

mod support;
use support::{Bare, frame, sas};

const SIZES: [usize; 3] = [64, 512, 1400];
/// Packets per `seal_batch` / `open_batch` call: the datapath's segments
/// per read.
const BATCH: usize = 64;

/// Consumes a seal/open result like the bare side consumes its tag: kept
/// alive, not reloaded with a wide load.
fn consume<T, E: std::fmt::Display>(r: Result<T, E>) {
    black_box(&r);
    if let Err(e) = r {
        panic!("{e}");
    }
}

fn bench(c: &mut Criterion) {
    for &backend in Backend::ALL {
        for cipher in [Cipher::Aes128Gcm, Cipher::Aes256Gcm] {
            let mut g = c.benchmark_group(format!("{}/{}", backend.as_str(), cipher.as_str()));
            g.measurement_time(Duration::from_secs(2))
                .warm_up_time(Duration::from_millis(500))
                .sample_size(30);
            let bare = Bare::new(backend, cipher);
            for size in SIZES {
                g.throughput(Throughput::Bytes(size as u64));
                let template = frame(size);
                let range = HEADROOM..HEADROOM + size;
                let (out, inb) = sas(backend, cipher);

                // Seal: fresh plaintext copies are made in the untimed
                // batch setup for both sides.
                let fresh = || template.clone();
                let mut seq = 0u64;
                g.bench_function(BenchmarkId::new("bare_seal", size), |b| {
                    b.iter_batched_ref(
                        fresh,
                        |f| {
                            seq += 1;
                            bare.seal(f, size, seq);
                        },
                        BatchSize::SmallInput,
                    )
                });
                let mut tally = ByteTally::default();
                g.bench_function(BenchmarkId::new("seal", size), |b| {
                    b.iter_batched_ref(
                        fresh,
                        |f| consume(out.seal(f, range.clone(), &mut tally)),
                        BatchSize::SmallInput,
                    )
                });
                out.add_tally(&mut tally);

                // Open: each iteration needs a fresh sequence number, so
                // packets are sealed in the untimed batch setup for both.
                let sealer = sas(backend, cipher).0;
                let setup = || {
                    let mut f = template.clone();
                    let r = sealer
                        .seal(&mut f, range.clone(), &mut ByteTally::default())
                        .unwrap_or_else(|e| panic!("{e}"));
                    (f, r)
                };
                g.bench_function(BenchmarkId::new("bare_open", size), |b| {
                    b.iter_batched_ref(setup, |(f, r)| bare.open(f, r), BatchSize::SmallInput)
                });
                g.bench_function(BenchmarkId::new("open", size), |b| {
                    b.iter_batched_ref(
                        setup,
                        |(f, r)| consume(inb.open(f, r.clone())),
                        BatchSize::SmallInput,
                    )
                });
            }
            g.finish();
        }
    }
}

/// Copies `template` into every buffer of `batch` (untimed preparation).
fn refill(batch: &mut [Vec<u8>], template: &[u8]) {
    for f in batch {
        f.copy_from_slice(template);
    }
}

/// Contention-robust overhead ratio at 1400 B: bare AEAD and full seal
/// (and open) are timed in alternating short rounds over batches prepared
/// the same way for both, in alternating order. Two estimates are printed:
/// the fastest round of each side (a round that lost the CPU to another
/// process does not count) and the median of the per-round ratios (the two
/// sides of one round ran a few microseconds apart, so frequency changes
/// and background load cancel out). Printed before the criterion output.
fn paired_overhead(only: Option<&str>) {
    const ROUNDS: usize = 1000;
    const ITERS: usize = 500;
    let size = 1400;
    println!(
        "paired overhead at {size} B ({ROUNDS} rounds x {ITERS} packets; fastest rounds, median per-round ratio):"
    );
    for &backend in Backend::ALL {
        if only.is_some_and(|b| b != backend.as_str()) {
            continue;
        }
        for cipher in [Cipher::Aes128Gcm, Cipher::Aes256Gcm] {
            let p = Paired::new(backend, cipher, size, ITERS);
            let mut rounds = Vec::with_capacity(ROUNDS);
            for round in 0..ROUNDS {
                rounds.push(p.round(round));
            }
            let best = |i: usize| rounds.iter().map(|r| r[i]).fold(f64::MAX, f64::min);
            let median_ratio = |i: usize, j: usize| {
                let mut v: Vec<f64> = rounds.iter().map(|r| r[i] / r[j]).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let pct = |x: f64| (x - 1.0) * 100.0;
            let gbps = |ns: f64| size as f64 / ns;
            println!(
                "  {:9} {:9}  seal {:6.1} ns ({:.2} GB/s) vs bare {:6.1} ns: {:+5.1}% (median {:+5.1}%)   open {:6.1} ns ({:.2} GB/s) vs bare {:6.1} ns: {:+5.1}% (median {:+5.1}%)",
                backend.as_str(),
                cipher.as_str(),
                best(1),
                gbps(best(1)),
                best(0),
                pct(best(1) / best(0)),
                pct(median_ratio(1, 0)),
                best(3),
                gbps(best(3)),
                best(2),
                pct(best(3) / best(2)),
                pct(median_ratio(3, 2)),
            );
            println!(
                "  {:9} {:9}  seal_batch {:6.1} ns: {:+5.1}% (median {:+5.1}%)   open_batch {:6.1} ns: {:+5.1}% (median {:+5.1}%)   (batches of {BATCH})",
                "",
                "",
                best(4),
                pct(best(4) / best(0)),
                pct(median_ratio(4, 0)),
                best(5),
                pct(best(5) / best(2)),
                pct(median_ratio(5, 2)),
            );
            println!(
                "  {:9} {:9}  seal_exact {:6.1} ns: {:+5.1}% (median {:+5.1}%)   (seal with the bytes added to the SA after every packet, not once per {BATCH})",
                "",
                "",
                best(6),
                pct(best(6) / best(0)),
                pct(median_ratio(6, 0)),
            );
        }
    }
}

/// State of one paired measurement (backend x cipher).
struct Paired {
    bare: Bare,
    out: OutboundSa,
    inb: InboundSa,
    template: Vec<u8>,
    range: Range<usize>,
    /// Where seal puts the ESP packet: the same for every packet.
    sealed_range: Range<usize>,
    size: usize,
    /// Seals the packets the batch side opens (the single side's were
    /// accepted by `inb` already).
    resealer: OutboundSa,
    /// Opens the batch side's packets: its own replay window.
    inb_batch: InboundSa,
    batch: std::cell::RefCell<Vec<Vec<u8>>>,
    seq: std::cell::Cell<u64>,
}

impl Paired {
    fn new(backend: Backend, cipher: Cipher, size: usize, iters: usize) -> Self {
        let (out, inb) = sas(backend, cipher);
        let template = frame(size);
        let range = HEADROOM..HEADROOM + size;
        let sealed_range = sas(backend, cipher)
            .0
            .seal(
                &mut template.clone(),
                range.clone(),
                &mut ByteTally::default(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let (resealer, inb_batch) = sas(backend, cipher);
        Paired {
            bare: Bare::new(backend, cipher),
            out,
            inb,
            resealer,
            inb_batch,
            batch: std::cell::RefCell::new(vec![template.clone(); iters]),
            template,
            range,
            sealed_range,
            size,
            seq: std::cell::Cell::new(0),
        }
    }

    /// One round: ns per packet for [bare seal, seal, bare open, open,
    /// seal_batch, open_batch, seal_exact]. The batch calls take the
    /// packets in groups of [`BATCH`], as the datapath hands over one
    /// read's segments; `seal` adds its byte tally to the SA once per
    /// group, as the datapath does once per read; `seal_exact` after every
    /// packet.
    fn round(&self, rotation: usize) -> [f64; 7] {
        let mut t = [0.0; 7];
        let mut batch = self.batch.borrow_mut();
        let n = batch.len() as f64;
        let time = |f: &mut dyn FnMut()| {
            let start = Instant::now();
            f();
            start.elapsed().as_nanos() as f64 / n
        };
        let mut order = [0, 1, 4, 6];
        order.rotate_left(rotation % 4);
        let pkts = vec![self.range.clone(); BATCH];
        let mut results = vec![Ok(0..0); BATCH];
        let mut sealed = Vec::new();
        for side in order {
            refill(&mut batch, &self.template);
            t[side] = time(&mut || match side {
                0 => {
                    for f in batch.iter_mut() {
                        self.seq.set(self.seq.get() + 1);
                        self.bare.seal(f, self.size, self.seq.get());
                    }
                }
                1 => {
                    let mut tally = ByteTally::default();
                    for group in batch.chunks_mut(BATCH) {
                        for f in group.iter_mut() {
                            consume(self.out.seal(f, self.range.clone(), &mut tally));
                        }
                        self.out.add_tally(&mut tally);
                    }
                }
                6 => {
                    let mut tally = ByteTally::default();
                    for f in batch.iter_mut() {
                        consume(self.out.seal(f, self.range.clone(), &mut tally));
                        self.out.add_tally(&mut tally);
                    }
                }
                _ => {
                    for group in batch.chunks_mut(BATCH) {
                        self.out.seal_batch(group, &pkts, &mut results);
                        results
                            .iter()
                            .take(group.len())
                            .for_each(|r| consume(r.clone()));
                    }
                }
            });
            if side == 1 {
                sealed = batch.clone();
            }
        }
        // Open what the SA just sealed; each side gets a copy made right
        // before its timed loop, so all find the packets equally warm. The
        // batch side opens packets sealed by a second run of the sealer
        // (fresh sequence numbers: the window has seen the first copies).
        let sealed_again = {
            let mut b = sealed.clone();
            refill(&mut b, &self.template);
            for f in b.iter_mut() {
                consume(
                    self.resealer
                        .seal(f, self.range.clone(), &mut ByteTally::default()),
                );
            }
            b
        };
        let sealed_pkts = vec![self.sealed_range.clone(); BATCH];
        let mut opened = vec![Ok(0..0); BATCH];
        let mut open_order = [2, 3, 5];
        open_order.rotate_left(rotation % 3);
        for side in open_order {
            let mut copies = if side == 5 {
                sealed_again.clone()
            } else {
                sealed.clone()
            };
            t[side] = time(&mut || match side {
                2 => copies
                    .iter_mut()
                    .for_each(|f| self.bare.open(f, &self.sealed_range)),
                3 => copies
                    .iter_mut()
                    .for_each(|f| consume(self.inb.open(f, self.sealed_range.clone()))),
                _ => {
                    for group in copies.chunks_mut(BATCH) {
                        self.inb_batch.open_batch(group, &sealed_pkts, &mut opened);
                        opened
                            .iter()
                            .take(group.len())
                            .for_each(|r| consume(r.clone()));
                    }
                }
            });
        }
        t
    }
}

criterion_group!(benches, bench);

/// `-- --paired [aes-gcm|aws-lc-rs]`: only the paired table, optionally for
/// one backend.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--paired") {
        paired_overhead(args.get(i + 1).map(String::as_str));
        return;
    }
    // A criterion `--profile-time` run is for perf: keep it pure.
    if !args.iter().any(|a| a == "--profile-time") {
        paired_overhead(None);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
