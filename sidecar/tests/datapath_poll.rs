//! `datapath.busyPoll: always` (poll mode) on real kernel networking: the
//! workers never sleep, traffic still flows encrypted both ways, bulk TCP
//! arrives intact, a rekey takes effect although no worker ever sleeps
//! (the SA cache is checked by version per packet), and SIGTERM still
//! stops the sidecar promptly and cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::capture::Kind;
use common::{
    Mesh, assert_each_generation_reached_peer, echo_until_rekeys, exchange_encrypted, serial,
    tcp_bulk,
};

/// The `/proc` task directories of node `node`'s worker threads.
fn workers(mesh: &Mesh, node: usize) -> Vec<PathBuf> {
    let pid = mesh.pid(node).expect("sidecar running");
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| t.unwrap().path())
        .filter(|dir| {
            std::fs::read_to_string(dir.join("comm"))
                .is_ok_and(|c| c.trim().starts_with("meshsec-q"))
        })
        .collect()
}

/// The scheduler state letter of a task (`R` running or runnable, `S`
/// sleeping, ...), from its `stat` (after the parenthesised name).
fn state(task: &std::path::Path) -> char {
    let stat = std::fs::read_to_string(task.join("stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    after.trim_start().chars().next().unwrap()
}

/// Samples every worker's state while no traffic flows: a sparse-polling
/// worker sleeps in poll(2) (`S`), an always-polling one never does.
fn assert_workers_never_sleep(mesh: &Mesh, node: usize, expect: usize) {
    let tasks = workers(mesh, node);
    assert_eq!(tasks.len(), expect, "node {node}: worker threads");
    for _ in 0..50 {
        for t in &tasks {
            let s = state(t);
            assert_ne!(s, 'S', "node {node}: idle worker {t:?} asleep");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn always_polling_workers_carry_traffic_and_stop_on_sigterm() {
    let _s = serial();
    // Two queues per node whatever the CPU count: two spinning workers.
    let mut mesh = Mesh::new("  mode: transport\ndatapath:\n  busyPoll: always\n  queues: 2\n");
    for node in 0..2 {
        assert_workers_never_sleep(&mesh, node, 2);
    }
    exchange_encrypted(&mesh, Kind::UdpEsp, 7600);
    let total = 32 << 20;
    let got = tcp_bulk(
        &mesh.pod_ns(0),
        &mesh.pod_ns(1),
        mesh.pod_ip(1, false),
        7700,
        total,
    );
    assert_eq!(got, total, "bulk TCP intact");
    for node in 0..2 {
        for reason in ["auth_failed", "replayed", "malformed"] {
            let series = format!("meshsec_datapath_drops_{reason}_total");
            assert_eq!(mesh.metric(node, &series), 0, "node {node}: {series}");
        }
    }
    // Still polling after the traffic (no worker fell back to sleeping).
    assert_workers_never_sleep(&mesh, 0, 2);

    // Both workers spin on this node while it shuts down.
    let t0 = Instant::now();
    let status = mesh.sigterm(0).expect("exit status");
    let took = t0.elapsed();
    eprintln!("SIGTERM to exit: {took:?}");
    assert!(status.success(), "{status:?}\n{}", mesh.log(0));
    assert!(took < Duration::from_secs(3), "SIGTERM took {took:?}");
    assert!(
        mesh.ip(0, &["-4", "route", "show", "table", "2480"])
            .trim()
            .is_empty(),
        "routes left after SIGTERM"
    );
    assert!(!mesh.ip(0, &["link"]).contains("meshsec0"), "TUN left");
}

/// A worker that never sleeps never drops its cached SAs while packets
/// keep coming (gaps under a millisecond): the rekeys must still reach the
/// wire, which the peer shows by deriving one inbound SA per generation.
#[test]
fn always_polling_worker_seals_under_each_new_key() {
    let _s = serial();
    let mesh = Mesh::new("  rekeyAfterPackets: 300\ndatapath:\n  busyPoll: always\n  queues: 1\n");
    assert_workers_never_sleep(&mesh, 0, 1);
    // One connection, back to back, so the worker never idles long enough
    // to drop its cache, until 3 rekeys happened. Bounded by time (60 s),
    // not by messages: each rekey waits for an fsync, and right after a
    // build that took seconds (CI once showed 2.5 s between two rekeys;
    // 200,000 messages once went by with fewer than 3).
    let n = echo_until_rekeys(&mesh, 7800, Duration::ZERO, 5_000_000, Duration::ZERO, 3);
    let rekeys = mesh.metric(0, "meshsec_rekeys_total");
    eprintln!("{n} bytes echoed, {rekeys} rekeys");
    assert!(rekeys >= 3, "rekeys: {rekeys}\n{}", mesh.log(0));
    assert_each_generation_reached_peer(&mesh);
}
