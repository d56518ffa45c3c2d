//! Attacks from the underlay: replayed, tampered, truncated and garbage ESP
//! injected next to a live TCP stream must be dropped, counted by reason,
//! and leave the stream intact. Plaintext from member pods is dropped in
//! strict mode (and, as a control, delivered without it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::capture::Kind;
use common::netns::inject;
use common::{Mesh, fix_ipv4_checksum, serial, tcp_echo_server, tcp_exchange, udp4_frame};

const ETH: usize = 14;

fn drops(mesh: &Mesh, node: usize, reason: &str) -> u64 {
    mesh.metric(node, &format!("meshsec_datapath_drops_{reason}_total"))
}

#[test]
fn injected_esp_is_dropped_and_counted_while_tcp_continues() {
    let _s = serial();
    let mesh = Mesh::new("");
    let (pod0, pod1) = (mesh.pod_ns(0), mesh.pod_ns(1));
    let dst: IpAddr = mesh.pod_ip(0, false);
    let server = tcp_echo_server(&pod0, 7100);
    let pod1c = pod1.clone();
    let stream =
        std::thread::spawn(move || tcp_exchange(&pod1c, dst, 7100, 150, Duration::from_millis(20)));

    // Learn what real ESP towards node 0 looks like.
    std::thread::sleep(Duration::from_millis(300));
    let cap = mesh.capture("sample");
    std::thread::sleep(Duration::from_millis(500));
    let all = cap.stop();
    let summary: Vec<_> = all
        .iter()
        .take(20)
        .map(|p| (p.kind.clone(), p.dst, p.data.len()))
        .collect();
    let sample: Vec<Vec<u8>> = all
        .into_iter()
        .filter(|p| p.kind == Kind::UdpEsp && p.dst == Some(dst) && p.data.len() > 200)
        .map(|p| p.data)
        .take(5)
        .collect();
    assert_eq!(sample.len(), 5, "no ESP sample captured: {summary:?}");

    let before =
        ["replayed", "auth_failed", "unknown_spi", "malformed"].map(|r| drops(&mesh, 0, r));
    let esp = ETH + 20 + 8; // Ethernet, IPv4 (no options), UDP
    let mut frames = Vec::new();
    for f in &sample {
        // Replayed: byte for byte what node 1 sent.
        frames.push(f.clone());
        // Tampered: one ciphertext bit flipped, under a sequence number the
        // receiver has not seen (with a seen one it is rejected as a replay
        // before the tag is even checked, RFC 4303 §3.4.3).
        let mut t = f.clone();
        bump_seq(&mut t[esp..]);
        t[esp + 40] ^= 0x01;
        frames.push(t);
        // Truncated: 20 bytes shorter, lengths fixed so the kernel forwards it.
        let mut t = f[..f.len() - 20].to_vec();
        bump_seq(&mut t[esp..]);
        let ip_len = (t.len() - ETH) as u16;
        t[ETH + 2..ETH + 4].copy_from_slice(&ip_len.to_be_bytes());
        t[ETH + 24..ETH + 26].copy_from_slice(&(ip_len - 20).to_be_bytes());
        t[ETH + 26..ETH + 28].copy_from_slice(&[0, 0]);
        fix_ipv4_checksum(&mut t, ETH);
        frames.push(t);
        // Garbage under a valid SPI and a fresh sequence number.
        let mut t = f.clone();
        t[esp + 4..esp + 8].copy_from_slice(&0x7fff_fff0u32.to_be_bytes());
        for (k, b) in t[esp + 8..].iter_mut().enumerate() {
            *b = (k as u8).wrapping_mul(37).wrapping_add(11);
        }
        frames.push(t);
        // Garbage SPI: a node id nobody has.
        let mut t = f.clone();
        t[esp..esp + 4].copy_from_slice(&0x00ab_cdefu32.to_be_bytes());
        frames.push(t);
    }
    assert_eq!(inject(&mesh.topo.underlay_ns, "br0", frames), 25);
    std::thread::sleep(Duration::from_millis(300));
    let after = ["replayed", "auth_failed", "unknown_spi", "malformed"].map(|r| drops(&mesh, 0, r));
    let delta: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert!(delta[0] >= 5, "replays counted: {delta:?}");
    // tampered + garbage-with-valid-SPI fail the tag; truncated ones fail the
    // tag or the length checks.
    assert!(delta[1] >= 10, "auth failures counted: {delta:?}");
    assert!(
        delta.iter().sum::<u64>() >= 25,
        "every injected packet counted: {delta:?}"
    );
    assert!(delta[1] + delta[3] >= 15, "truncated counted: {delta:?}");
    assert!(delta[2] >= 5, "unknown SPIs counted: {delta:?}");

    // Forged SPIs naming node 2 under other generations: each would need a
    // key derivation; after a failed one the receiver backs off, so a burst
    // buys only a few.
    let before = ["auth_failed", "unknown_spi"].map(|r| drops(&mesh, 0, r));
    let forged: Vec<Vec<u8>> = (0..200u32)
        .map(|k| {
            let mut t = sample[0].clone();
            let spi = 0x4000_0000 | ((1 + k % 63) << 24) | 2;
            t[esp..esp + 4].copy_from_slice(&spi.to_be_bytes());
            t
        })
        .collect();
    assert_eq!(inject(&mesh.topo.underlay_ns, "br0", forged), 200);
    std::thread::sleep(Duration::from_millis(300));
    let after = ["auth_failed", "unknown_spi"].map(|r| drops(&mesh, 0, r));
    let (derived, refused) = (after[0] - before[0], after[1] - before[1]);
    eprintln!("forged SPIs: {derived} derived, {refused} refused without derivation");
    assert_eq!(derived + refused, 200, "all forged SPIs counted");
    assert!(
        derived <= 100,
        "{derived} of 200 forged SPIs cost a key derivation"
    );

    let echoed = stream
        .join()
        .unwrap()
        .expect("TCP stream survived the attack");
    assert_eq!(echoed, 150_000);
    assert_eq!(server.join().unwrap().unwrap(), 150_000);
}

/// Moves an ESP header's sequence number ahead of anything sent so far.
fn bump_seq(esp: &mut [u8]) {
    let seq = u32::from_be_bytes(esp[4..8].try_into().unwrap());
    esp[4..8].copy_from_slice(&(seq + 100_000).to_be_bytes());
}

fn plaintext_reaches_pod(strict: bool) -> (usize, u64) {
    let mesh = Mesh::new(if strict {
        "  strict: true\n"
    } else {
        "  mode: transport\n"
    });
    let pod0 = mesh.pod_ns(0);
    let (src, dst) = (
        mesh.topo.nodes[1].pods[0].ip4,
        mesh.topo.nodes[0].pods[0].ip4,
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let listener = common::netns::in_ns(&pod0, move || {
        let s = std::net::UdpSocket::bind(("0.0.0.0", 7200)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        tx.send(()).unwrap();
        let mut got = 0;
        let mut buf = [0u8; 1500];
        while s.recv(&mut buf).is_ok() {
            got += 1;
        }
        got
    });
    rx.recv().unwrap();
    let frames = (0..5)
        .map(|_| udp4_frame(mesh.node_mac(0), src, dst, 7200, common::MARKER))
        .collect();
    assert_eq!(inject(&mesh.topo.underlay_ns, "br0", frames), 5);
    let got = listener.join().unwrap();
    // Encrypted traffic still flows in strict mode.
    assert!(common::ping(&mesh.pod_ns(1), IpAddr::V4(dst), 2, &[]));
    (got, drops(&mesh, 0, "strict_plaintext"))
}

#[test]
fn strict_mode_drops_plaintext_from_member_pods() {
    let _s = serial();
    let (got, counted) = plaintext_reaches_pod(false);
    assert_eq!(
        (got, counted),
        (5, 0),
        "control: without strict, spoofed plaintext arrives"
    );
    let (got, counted) = plaintext_reaches_pod(true);
    assert_eq!(got, 0, "strict mode delivered plaintext from a member pod");
    assert_eq!(counted, 5);
}
