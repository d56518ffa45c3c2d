//! Lifecycle: SIGKILL fails closed (nothing in clear while down, blackholes
//! stay), a restart reconciles instead of duplicating and carries traffic
//! again within a second under fresh keys, SIGTERM removes everything.
//! Also the MTU contract: ICMP errors for oversize DF packets, no
//! fragments under bulk TCP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::capture::Kind;
use common::{MARKER, Mesh, ping, serial, tcp_bulk, udp_exchange, udp_first_reply};

fn our_rules(mesh: &Mesh, node: usize) -> Vec<String> {
    let mut out = Vec::new();
    for fam in ["-4", "-6"] {
        out.extend(
            mesh.ip(node, &[fam, "rule", "show"])
                .replace(" [detached]", "")
                .lines()
                .filter(|l| {
                    l.split(':')
                        .next()
                        .and_then(|p| p.trim().parse::<u32>().ok())
                        .is_some_and(|p| (100..110).contains(&p))
                })
                .map(|l| format!("{fam} {l}")),
        );
    }
    out
}

fn table(mesh: &Mesh, node: usize, fam: &str, t: &str) -> String {
    mesh.ip(node, &[fam, "route", "show", "table", t])
}

#[test]
fn sigkill_fails_closed_and_restart_recovers_within_a_second() {
    let _s = serial();
    let mut mesh = Mesh::new("");
    let (pod0, pod1) = (mesh.pod_ns(0), mesh.pod_ns(1));
    let (ip0, ip1) = (mesh.pod_ip(0, false), mesh.pod_ip(1, false));
    assert_eq!(udp_exchange(&pod0, &pod1, ip1, 7300, 3), 3);
    let rules_before = our_rules(&mesh, 0);
    assert_eq!(rules_before.len(), 8, "{rules_before:?}");

    mesh.sigkill(0);
    let cap = mesh.capture("down");
    // Both directions, v4 and v6, while node 0's sidecar is dead.
    assert_eq!(
        udp_exchange(&pod0, &pod1, ip1, 7301, 5),
        0,
        "traffic flowed without a sidecar"
    );
    assert_eq!(udp_exchange(&pod1, &pod0, ip0, 7302, 5), 0);
    assert!(!ping(&pod0, mesh.pod_ip(1, true), 2, &[]));
    let packets = cap.stop();
    let member = |ip: Option<std::net::IpAddr>| {
        ip.is_some_and(|ip| {
            ip == ip0 || ip == ip1 || ip == mesh.pod_ip(0, true) || ip == mesh.pod_ip(1, true)
        })
    };
    let clear: Vec<_> = packets
        .iter()
        .filter(|p| {
            (member(p.src) || member(p.dst)) && p.kind != Kind::UdpEsp && p.kind != Kind::Esp
        })
        .collect();
    assert!(
        clear.is_empty(),
        "plaintext member packets while down: {clear:?}"
    );
    assert!(packets.iter().all(|p| !p.contains(MARKER)));
    // The blackholes and rules outlive the process.
    assert!(table(&mesh, 0, "-4", "2480").contains("blackhole 10.77.2.0/24"));
    assert!(table(&mesh, 0, "-6", "2480").contains("blackhole fd77:2::/64"));
    assert_eq!(our_rules(&mesh, 0), rules_before);
    // What the layout before one `lookup 2480` rule per family left behind
    // (a rule per remote prefix) is replaced on restart, not kept beside it.
    mesh.ip(
        0,
        &[
            "-4",
            "rule",
            "add",
            "to",
            "10.77.2.0/24",
            "lookup",
            "2480",
            "priority",
            "104",
        ],
    );
    assert_eq!(our_rules(&mesh, 0).len(), 9);

    let t0 = Instant::now();
    mesh.spawn(0);
    let recovered = udp_first_reply(&pod0, &pod1, ip1, 7303, t0, Duration::from_secs(5));
    let recovered = recovered.expect("traffic never recovered");
    eprintln!("traffic restored {recovered:?} after restart");
    assert!(
        recovered <= Duration::from_secs(1),
        "recovery took {recovered:?}"
    );
    assert_eq!(
        udp_exchange(&pod1, &pod0, ip0, 7304, 3),
        3,
        "reverse direction after restart"
    );
    // Reconciled, not duplicated.
    assert_eq!(our_rules(&mesh, 0), rules_before);
    assert_eq!(
        table(&mesh, 0, "-4", "2480").lines().count(),
        2,
        "one TUN route and one blackhole"
    );
    // Fresh keys: the restarted sidecar sends under a new generation, so
    // node 1 had to derive a second inbound SA.
    assert!(
        mesh.log(1).matches("inbound SA derived").count() >= 2,
        "{}",
        mesh.log(1)
    );

    let status = mesh.sigterm(0).expect("exit status");
    assert!(
        status.success(),
        "clean shutdown failed: {status:?}\n{}",
        mesh.log(0)
    );
    assert!(our_rules(&mesh, 0).is_empty(), "rules left after SIGTERM");
    assert!(table(&mesh, 0, "-4", "2480").trim().is_empty());
    assert!(table(&mesh, 0, "-6", "2481").trim().is_empty());
    assert!(!mesh.ip(0, &["link"]).contains("meshsec0"));
}

/// `mtu = N` / `mtu=N` from ping's error output.
fn reported_mtu(text: &str) -> Option<u32> {
    let at = text.find("mtu")?;
    text[at + 3..]
        .trim_start_matches([' ', '='])
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn mtu_errors_and_bulk_tcp_without_fragments() {
    let _s = serial();
    let mesh = Mesh::new("");
    let pod0 = mesh.pod_ns(0);
    for (v6, size) in [(false, "1472"), (true, "1452")] {
        let dst = mesh.pod_ip(1, v6).to_string();
        let out = meshsec_e2e::topology::Topology::command(
            &pod0,
            "ping",
            &[
                "-c", "2", "-i", "0.3", "-W", "1", "-M", "do", "-s", size, &dst,
            ],
        )
        .output()
        .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "a 1500-byte DF ping went through: {text}"
        );
        let mtu = reported_mtu(&text).unwrap_or_else(|| panic!("no MTU in ICMP error: {text}"));
        assert!((1400..1500).contains(&mtu), "reported mtu {mtu}: {text}");
        // The announced MTU is right: a packet of exactly that size passes.
        let fits = (mtu - if v6 { 48 } else { 28 }).to_string();
        assert!(
            ping(&pod0, mesh.pod_ip(1, v6), 2, &["-M", "do", "-s", &fits]),
            "ping at announced mtu {mtu} failed"
        );
    }
    assert!(mesh.metric(0, "meshsec_datapath_drops_mtu_total") >= 2);

    // The sidecar writes sealed ESP-in-UDP as UDP GSO super-packets; a veth
    // carries those unsegmented (a capture would see 64 KiB "frames" no
    // wire ever does). Segment at the nodes' underlay interfaces, as a NIC
    // without UDP segmentation offload does, so the capture sees the frames
    // that would be on the wire.
    for node in &mesh.topo.nodes {
        meshsec_e2e::topology::Topology::exec(
            &node.ns,
            "ethtool",
            &["-K", "eth0", "tx-udp-segmentation", "off"],
        )
        .unwrap();
    }
    let cap = common::capture::Capture::start_snaplen(
        &mesh.topo.underlay_ns,
        "br0",
        mesh.dir(),
        "bulk",
        96,
    );
    let total = 100 * 1024 * 1024;
    let t0 = Instant::now();
    let got = tcp_bulk(&pod0, &mesh.pod_ns(1), mesh.pod_ip(1, false), 7400, total);
    let took = t0.elapsed();
    let packets = cap.stop();
    assert!(got >= total, "received {got} of {total}");
    let frags = packets.iter().filter(|p| p.fragment).count();
    let biggest = packets.iter().map(|p| p.wire_len).max().unwrap_or(0);
    eprintln!(
        "100 MiB in {took:?}, {} packets, largest frame {biggest}",
        packets.len()
    );
    assert_eq!(frags, 0, "fragments on the underlay");
    assert!(
        biggest <= 1514,
        "frame of {biggest} bytes exceeds the underlay MTU"
    );
    assert!(packets.iter().filter(|p| p.kind == Kind::UdpEsp).count() > 50_000);
}

/// A tiny MSS makes the pod's TCP hand the TUN super-packets of hundreds of
/// segments; the sidecar caps the TUN's gso_max_segs at what a worker can
/// split, so the kernel segments those in software and the stream flows
/// (without the cap every such super-packet was dropped and TCP stalled).
#[test]
fn bulk_tcp_with_tiny_mss_flows() {
    let _s = serial();
    let mesh = Mesh::new("");
    let server = mesh.pod_ns(1);
    // The server advertises MSS 88: the client's segments carry 88 bytes.
    let out = meshsec_e2e::topology::Topology::exec(
        &server,
        "ip",
        &[
            "route",
            "change",
            "default",
            "via",
            "10.77.2.1",
            "advmss",
            "88",
        ],
    )
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let total = 4 * 1024 * 1024;
    let got = tcp_bulk(&mesh.pod_ns(0), &server, mesh.pod_ip(1, false), 7401, total);
    assert!(got >= total, "received {got} of {total}");
    assert_eq!(mesh.metric(1, "meshsec_datapath_drops_malformed_total"), 0);
    assert_eq!(mesh.metric(0, "meshsec_datapath_drops_malformed_total"), 0);
}
