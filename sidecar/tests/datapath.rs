//! The datapath on real kernel networking: two node namespaces, one pod
//! each, a sidecar per node; traffic between the pods must arrive and the
//! underlay must only ever carry ESP for it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::capture::Kind;
use common::{
    Mesh, assert_each_generation_reached_peer, echo_until_rekeys, exchange_encrypted, serial,
};

/// Traffic both ways, v4 and v6, ping/TCP/UDP, seen only as `esp_kind`
/// on the underlay and never in clear; then the counters must show it.
fn exercise(mesh: &Mesh, esp_kind: Kind) {
    exchange_encrypted(mesh, esp_kind, 7000);
    for i in 0..2 {
        let out = mesh.metric(i, "meshsec_datapath_packets_out_total");
        let inn = mesh.metric(i, "meshsec_datapath_packets_in_total");
        assert!(out > 50 && inn > 50, "node {i} counters out={out} in={inn}");
        let peer = 2 - i;
        let per_peer = mesh.metric(
            i,
            &format!("meshsec_peer_packets_total{{peer=\"{peer}\",direction=\"out\"}}"),
        );
        assert_eq!(per_peer, out, "single peer carries all traffic");
    }
}

#[test]
fn transport_udp_encap() {
    let _s = serial();
    let mesh = Mesh::new("");
    exercise(&mesh, Kind::UdpEsp);
}

#[test]
fn transport_raw_esp() {
    let _s = serial();
    let mesh = Mesh::new("  encap: none\n");
    exercise(&mesh, Kind::Esp);
}

/// `datapath.steering: hybrid`: the steering program is loaded, worker
/// `i` is pinned to CPU `i`, and traffic flows and stays encrypted as
/// before (the program steers packets above 1024 bytes by flow or peer:
/// the TCP exchange's 1000-byte writes (1052-byte packets) and the bulk
/// transfer cross that path, pings and ACKs the per-CPU one).
#[test]
fn hybrid_steering_pins_workers_and_keeps_traffic_encrypted() {
    let _s = serial();
    let mesh = Mesh::new("  mode: transport\ndatapath:\n  steering: hybrid\n");
    let cpus = std::thread::available_parallelism().unwrap().get();
    for node in 0..2 {
        let pid = mesh.pid(node).unwrap();
        let mut pinned = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let dir = task.unwrap().path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap();
            let Some(q) = comm.trim().strip_prefix("meshsec-q") else {
                continue;
            };
            let status = std::fs::read_to_string(dir.join("status")).unwrap();
            let cpus_allowed = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .unwrap()
                .trim()
                .to_string();
            pinned.push((q.parse::<usize>().unwrap(), cpus_allowed));
        }
        pinned.sort();
        let want: Vec<(usize, String)> = (0..cpus).map(|i| (i, i.to_string())).collect();
        assert_eq!(pinned, want, "node {node}: one worker per CPU, pinned");
        let bpf_progs = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
            .filter(|l| l.to_string_lossy() == "anon_inode:bpf-prog")
            .count();
        assert_eq!(bpf_progs, 1, "node {node}: steering program loaded");
    }
    exercise(&mesh, Kind::UdpEsp);
    // Bulk (super-packets, steered by flow, while the sender's small
    // packets go to their CPU's queue): every byte arrives, in order.
    let total = 32 << 20;
    let got = common::tcp_bulk(
        &mesh.pod_ns(0),
        &mesh.pod_ns(1),
        mesh.pod_ip(1, false),
        7500,
        total,
    );
    assert_eq!(got, total, "bulk TCP intact");
}

#[test]
fn tunnel_udp_encap() {
    let _s = serial();
    let mut mesh = Mesh::new("  mode: tunnel\n");
    exercise(&mesh, Kind::UdpEsp);
    // Tunnel mode moved the kernel's local rule below ours; SIGTERM must
    // put it back at priority 0 and take the copy away.
    let local_rules = |mesh: &Mesh| {
        mesh.ip(0, &["-4", "rule", "show"])
            .lines()
            .filter(|l| l.ends_with("lookup local"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(local_rules(&mesh), ["106:\tfrom all lookup local"]);
    assert!(mesh.sigterm(0).unwrap().success());
    assert_eq!(local_rules(&mesh), ["0:\tfrom all lookup local"]);
}

#[test]
fn tunnel_raw_esp() {
    let _s = serial();
    let mesh = Mesh::new("  mode: tunnel\n  encap: none\n");
    exercise(&mesh, Kind::Esp);
}

#[test]
fn rekeys_before_the_packet_limit_without_disturbing_traffic() {
    let _s = serial();
    let mesh = Mesh::new("  rekeyAfterPackets: 300\n");
    // At least ~2000 packets each way over ~3 s, crossing several soft
    // limits, and on until 2 rekeys happened.
    let pause = Duration::from_millis(3);
    let n = echo_until_rekeys(&mesh, 7500, pause, 20_000, Duration::from_secs(3), 2);
    assert!(n >= 100_000, "{n} bytes echoed");
    // Let a rekey the stream's last packets asked for finish (100 ms tick),
    // so the counter and the persisted generation are read at rest.
    std::thread::sleep(Duration::from_millis(250));
    let rekeys = mesh.metric(0, "meshsec_rekeys_total");
    assert!(
        rekeys >= 2,
        "rekeys: {rekeys}\n{}",
        mesh.http(0, "/metrics").unwrap_or_default()
    );
    let generation: u32 = std::fs::read_to_string(mesh.dir().join("node1.gen"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        u64::from(generation),
        rekeys,
        "each rekey persisted a new generation first"
    );
    assert_each_generation_reached_peer(&mesh);
}
