//! Harness for datapath tests: a topology with a sidecar per node, traffic
//! helpers that run inside pod namespaces, metrics scraping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

pub mod capture;
pub mod netns;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use meshsec_e2e::topology::{Guard, Topology};

pub const BIN: &str = env!("CARGO_BIN_EXE_meshsec-sidecar");
/// A string that must never appear on the underlay.
pub const MARKER: &[u8] = b"MESHSEC-PLAINTEXT-MARKER-7f3a";

/// Namespaces, TUNs and CPU are shared: one datapath test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Mesh {
    pub topo: Topology,
    pub dir: tempfile::TempDir,
    sidecars: Vec<Option<Guard>>,
    publics: Vec<String>,
    tunnel: String,
}

impl Mesh {
    /// Two nodes, one pod each, sidecars running with `tunnel` (YAML body of
    /// the `tunnel:` section, already indented by two spaces).
    pub fn new(tunnel: &str) -> Mesh {
        let topo = Topology::new(2, 1).expect("topology");
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(BIN)
            .args([
                "keygen",
                "--psk",
                "--out",
                dir.path().join("psk").to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let publics = (1..=topo.nodes.len())
            .map(|i| {
                let key = dir.path().join(format!("node{i}.key"));
                let out = std::process::Command::new(BIN)
                    .args(["keygen", "--out", key.to_str().unwrap()])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
                String::from_utf8(out.stdout).unwrap().trim().to_string()
            })
            .collect();
        let n = topo.nodes.len();
        let mut mesh = Mesh {
            topo,
            dir,
            sidecars: (0..n).map(|_| None).collect(),
            publics,
            tunnel: tunnel.into(),
        };
        for i in 0..n {
            mesh.write_config(i);
            mesh.start(i);
        }
        mesh
    }

    pub fn config_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{}.yaml", i + 1))
    }

    fn write_config(&self, i: usize) {
        let me = &self.topo.nodes[i];
        let d = self.dir.path();
        let mut y = format!(
            "nodeId: {}\nendpoint: {}\npodCidrs: [{}, {}]\nprivateKeyFile: {}\npskFile: {}\nstateFile: {}\ntunnel:\n{}\npeers:\n",
            i + 1,
            me.underlay4,
            me.pod_cidr4,
            me.pod_cidr6,
            d.join(format!("node{}.key", i + 1)).display(),
            d.join("psk").display(),
            d.join(format!("node{}.gen", i + 1)).display(),
            if self.tunnel.is_empty() {
                "  mode: transport\n"
            } else {
                &self.tunnel
            },
        );
        for (j, p) in self.topo.nodes.iter().enumerate().filter(|(j, _)| *j != i) {
            y += &format!(
                "- nodeId: {}\n  endpoint: {}\n  podCidrs: [{}, {}]\n  publicKey: {}\n",
                j + 1,
                p.underlay4,
                p.pod_cidr4,
                p.pod_cidr6,
                self.publics[j]
            );
        }
        std::fs::write(self.config_path(i), y).unwrap();
    }

    pub fn start(&mut self, i: usize) {
        self.spawn(i);
        self.wait_healthy(i);
    }

    /// Starts node `i`'s sidecar without waiting for it.
    pub fn spawn(&mut self, i: usize) {
        let ns = self.topo.nodes[i].ns.clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node{}.log", i + 1)))
            .unwrap();
        let child = Topology::command(
            &ns,
            BIN,
            &["run", "--config", self.config_path(i).to_str().unwrap()],
        )
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
        self.sidecars[i] = Some(Guard(Some(child)));
    }

    /// Process id of node `i`'s sidecar, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.sidecars[i]
            .as_ref()
            .and_then(|g| g.0.as_ref())
            .map(|c| c.id())
    }

    pub fn wait_healthy(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self
                .http(i, "/healthz")
                .is_some_and(|b| b.starts_with("ok"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("sidecar {i} not healthy; log:\n{}", self.log(i));
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{}.log", i + 1)))
            .unwrap_or_default()
    }

    pub fn sigkill(&mut self, i: usize) {
        if let Some(mut g) = self.sidecars[i].take() {
            g.signal_and_wait("KILL");
        }
    }

    pub fn sigterm(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.sidecars[i]
            .take()
            .and_then(|mut g| g.signal_and_wait("TERM"))
    }

    pub fn http(&self, i: usize, path: &str) -> Option<String> {
        let ns = self.topo.nodes[i].ns.clone();
        let path = path.to_string();
        netns::in_ns(&ns, move || {
            let mut s = TcpStream::connect_timeout(
                &"127.0.0.1:9480".parse().unwrap(),
                Duration::from_millis(200),
            )
            .ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
        })
        .join()
        .unwrap()
    }

    /// Value of the metric series `series` (name plus labels, exactly as
    /// exposed), 0 if absent.
    pub fn metric(&self, i: usize, series: &str) -> u64 {
        let text = (0..5)
            .find_map(|_| {
                let r = self
                    .http(i, "/metrics")
                    .filter(|t| t.contains("meshsec_ready"));
                if r.is_none() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                r
            })
            .unwrap_or_else(|| panic!("node {i}: /metrics unreachable"));
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .map_or(0, |v| v as u64)
    }

    pub fn pod_ns(&self, node: usize) -> String {
        self.topo.nodes[node].pods[0].ns.clone()
    }

    pub fn pod_ip(&self, node: usize, v6: bool) -> IpAddr {
        self.topo.pod_ip(node, 0, v6).unwrap()
    }

    pub fn capture(&self, name: &str) -> capture::Capture {
        capture::Capture::start(&self.topo.underlay_ns, "br0", self.dir.path(), name)
    }

    /// `ip <args>` output inside node `i`.
    pub fn ip(&self, i: usize, args: &[&str]) -> String {
        let out = Topology::exec(&self.topo.nodes[i].ns, "ip", args).unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    /// MAC address of node `i`'s underlay interface.
    pub fn node_mac(&self, i: usize) -> [u8; 6] {
        let text = self.ip(i, &["link", "show", "eth0"]);
        let mac = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap();
        let mut out = [0u8; 6];
        for (o, part) in out.iter_mut().zip(mac.split(':')) {
            *o = u8::from_str_radix(part, 16).unwrap();
        }
        out
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// `ping -c count` from `ns` to `dst`; true when every reply came back.
pub fn ping(ns: &str, dst: IpAddr, count: u32, extra: &[&str]) -> bool {
    let c = count.to_string();
    let mut args = vec!["-c", &c, "-i", "0.2", "-W", "1", "-q"];
    args.extend_from_slice(extra);
    let d = dst.to_string();
    args.push(&d);
    Topology::command(ns, "ping", &args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A TCP echo server in `ns` on `port`, serving one connection.
pub fn tcp_echo_server(ns: &str, port: u16) -> std::thread::JoinHandle<std::io::Result<u64>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = netns::in_ns(ns, move || {
        let l = TcpListener::bind(("::", port))?;
        tx.send(()).ok();
        let (mut s, _) = l.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
            s.write_all(&buf[..n])?;
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("server up");
    h
}

/// Sends `rounds` messages carrying the marker over TCP from `ns` to
/// `dst:port` and checks every echo; returns the bytes echoed.
pub fn tcp_exchange(
    ns: &str,
    dst: IpAddr,
    port: u16,
    rounds: usize,
    pause: Duration,
) -> std::io::Result<u64> {
    let never = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    tcp_exchange_until(ns, dst, port, rounds, pause, never)
        .join()
        .unwrap()
}

/// [`tcp_exchange`] in the background, ending early once `stop` is set
/// (checked between messages, so the stream never pauses for it).
pub fn tcp_exchange_until(
    ns: &str,
    dst: IpAddr,
    port: u16,
    max_rounds: usize,
    pause: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<std::io::Result<u64>> {
    netns::in_ns(ns, move || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::new(dst, port), Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut msg = MARKER.to_vec();
        msg.resize(1000, b'.');
        let mut back = vec![0u8; msg.len()];
        let mut total = 0;
        for _ in 0..max_rounds {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            s.write_all(&msg)?;
            s.read_exact(&mut back)?;
            if back != msg {
                return Err(std::io::Error::other("echo differs"));
            }
            total += back.len() as u64;
            std::thread::sleep(pause);
        }
        Ok(total)
    })
}

/// Sends `bytes` over TCP from `ns` to an echo-less sink; returns when the
/// server has read them all (the server thread's result).
/// What `tcp_bulk` sends, repeated: the marker, then a counting pattern
/// (so a misplaced or corrupted byte is caught).
fn bulk_chunk() -> Vec<u8> {
    let mut chunk = MARKER.repeat(64 * 1024 / MARKER.len() / 2);
    let counting = 64 * 1024 - chunk.len();
    chunk.extend((0..counting).map(|i| (i % 251) as u8));
    chunk
}

pub fn tcp_bulk(client_ns: &str, server_ns: &str, dst: IpAddr, port: u16, bytes: u64) -> u64 {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = netns::in_ns(server_ns, move || {
        let l = TcpListener::bind(("::", port)).unwrap();
        tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let expect = bulk_chunk();
        let mut total = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => {
                    // Content, not just length: coalescing on the way must
                    // not reorder or corrupt bytes. Stop at the first bad one.
                    let mut got = &buf[..n];
                    while !got.is_empty() {
                        let at = total as usize % expect.len();
                        let m = got.len().min(expect.len() - at);
                        if got[..m] != expect[at..at + m] {
                            return total;
                        }
                        total += m as u64;
                        got = &got[m..];
                    }
                }
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    netns::in_ns(client_ns, move || {
        let mut s = TcpStream::connect_timeout(&SocketAddr::new(dst, port), Duration::from_secs(5))
            .unwrap();
        // A stalled path fails the test instead of hanging it.
        s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        let chunk = bulk_chunk();
        let mut sent = 0u64;
        while sent < bytes {
            s.write_all(&chunk).unwrap();
            sent += chunk.len() as u64;
        }
    })
    .join()
    .unwrap();
    server.join().unwrap()
}

/// UDP request/response with the marker: `rounds` datagrams from `ns` to
/// an echo server started in `server_ns`; returns how many came back.
pub fn udp_exchange(
    client_ns: &str,
    server_ns: &str,
    dst: IpAddr,
    port: u16,
    rounds: usize,
) -> usize {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = netns::in_ns(server_ns, move || {
        let s = UdpSocket::bind(("::", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let got = netns::in_ns(client_ns, move || {
        let bind: SocketAddr = if dst.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let s = UdpSocket::bind(bind).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut ok = 0;
        let mut buf = [0u8; 2048];
        for i in 0..rounds {
            let mut msg = MARKER.to_vec();
            msg.extend_from_slice(format!("-{i}").as_bytes());
            s.send_to(&msg, (dst, port)).unwrap();
            if let Ok(n) = s.recv(&mut buf)
                && buf[..n] == msg[..]
            {
                ok += 1;
            }
        }
        ok
    })
    .join()
    .unwrap();
    server.join().unwrap();
    got
}

/// Recomputes the IPv4 header checksum of the packet starting at `ip`.
pub fn fix_ipv4_checksum(frame: &mut [u8], ip: usize) {
    frame[ip + 10] = 0;
    frame[ip + 11] = 0;
    let ihl = usize::from(frame[ip] & 0xf) * 4;
    let mut sum = 0u32;
    for c in frame[ip..ip + ihl].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let ck = !(sum as u16);
    frame[ip + 10..ip + 12].copy_from_slice(&ck.to_be_bytes());
}

/// An Ethernet + IPv4 + UDP frame (UDP checksum 0) carrying `payload`.
pub fn udp4_frame(
    dst_mac: [u8; 6],
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    fix_ipv4_checksum(&mut f, 14);
    f
}

/// Time from `t0` until a UDP echo from `server_ns` first comes back to a
/// client in `client_ns` probing every 10 ms; `None` after `limit`.
pub fn udp_first_reply(
    client_ns: &str,
    server_ns: &str,
    dst: IpAddr,
    port: u16,
    t0: Instant,
    limit: Duration,
) -> Option<Duration> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let stop_server = stop.clone();
    let server = netns::in_ns(server_ns, move || {
        let s = UdpSocket::bind(("::", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 2048];
        while !stop_server.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let got = netns::in_ns(client_ns, move || {
        let bind: SocketAddr = if dst.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let s = UdpSocket::bind(bind).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let mut buf = [0u8; 2048];
        while t0.elapsed() < limit {
            s.send_to(MARKER, (dst, port)).unwrap();
            if let Ok(n) = s.recv(&mut buf)
                && &buf[..n] == MARKER
            {
                return Some(t0.elapsed());
            }
        }
        None
    })
    .join()
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    server.join().unwrap();
    got
}

/// Ping, TCP and UDP request/response between the two pods, both ways, v4
/// and v6 (ports from `port_base`), under an underlay capture that must
/// show member traffic only as `esp_kind` (over 100 packets of it) and
/// never [`MARKER`].
pub fn exchange_encrypted(mesh: &Mesh, esp_kind: capture::Kind, port_base: u16) {
    let cap = mesh.capture("traffic");
    for v6 in [false, true] {
        for (a, b) in [(0, 1), (1, 0)] {
            let (ns_a, ns_b) = (mesh.pod_ns(a), mesh.pod_ns(b));
            let dst = mesh.pod_ip(b, v6);
            assert!(
                ping(&ns_a, dst, 3, &["-p", "4d45534853454300"]),
                "ping {a}->{b} v6={v6}\n{}",
                mesh.log(a)
            );
            let port = port_base + a as u16 * 10 + v6 as u16;
            let server = tcp_echo_server(&ns_b, port);
            let n = tcp_exchange(&ns_a, dst, port, 20, Duration::ZERO).expect("tcp exchange");
            assert_eq!(n, 20_000);
            assert_eq!(server.join().unwrap().unwrap(), 20_000);
            assert_eq!(
                udp_exchange(&ns_a, &ns_b, dst, port + 100, 10),
                10,
                "udp {a}->{b} v6={v6}"
            );
        }
    }
    let packets = cap.stop();
    let member = |ip: Option<IpAddr>| {
        ip.is_some_and(|ip| {
            mesh.topo.nodes.iter().any(|n| {
                n.pods
                    .iter()
                    .any(|p| ip == IpAddr::V4(p.ip4) || ip == IpAddr::V6(p.ip6))
            })
        })
    };
    let esp = packets.iter().filter(|p| p.kind == esp_kind).count();
    assert!(
        esp > 100,
        "expected ESP on the underlay, saw {esp} of {}",
        packets.len()
    );
    for p in &packets {
        assert!(
            !p.contains(MARKER),
            "plaintext marker on the underlay: {p:?}"
        );
        if member(p.src) || member(p.dst) {
            assert_eq!(p.kind, esp_kind, "member traffic not protected: {p:?}");
        }
    }
}

/// A TCP echo stream from pod 0 to pod 1 on `port`, one connection with
/// `pause` between messages, for at least `min` and then until node 0 has
/// counted `rekeys` rekeys; bounded by `max_rounds` messages and 60 s (how
/// long rekeys take is not the test's to say: each waits for the daemon's
/// 100 ms tick and an fsync). Returns the bytes echoed, which the server
/// must have seen too.
pub fn echo_until_rekeys(
    mesh: &Mesh,
    port: u16,
    pause: Duration,
    max_rounds: usize,
    min: Duration,
    rekeys: u64,
) -> u64 {
    let server = tcp_echo_server(&mesh.pod_ns(1), port);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dst = mesh.pod_ip(1, false);
    let client = tcp_exchange_until(&mesh.pod_ns(0), dst, port, max_rounds, pause, stop.clone());
    let start = Instant::now();
    while !client.is_finished()
        && start.elapsed() < Duration::from_secs(60)
        && (start.elapsed() < min || mesh.metric(0, "meshsec_rekeys_total") < rekeys)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = client.join().unwrap().expect("stream across rekeys");
    assert_eq!(server.join().unwrap().unwrap(), n);
    n
}

/// Asserts that every outbound generation node 0 has installed reached
/// node 1, which derives one inbound SA per generation it sees.
///
/// A rekey is installed asynchronously (the daemon's 100 ms tick), so the
/// last one can land after a stream's final packet; a few pings afterwards
/// put the newest generation on the wire before the count.
pub fn assert_each_generation_reached_peer(mesh: &Mesh) {
    let rekeys = mesh.metric(0, "meshsec_rekeys_total");
    assert!(
        ping(&mesh.pod_ns(0), mesh.pod_ip(1, false), 3, &[]),
        "ping after rekeys\n{}",
        mesh.log(0)
    );
    let derived = mesh.log(1).matches("inbound SA derived").count() as u64;
    eprintln!("{rekeys} rekeys, {derived} inbound SAs derived by the peer");
    // The initial generation plus one per rekey (a further rekey started
    // by the pings only adds to `derived`).
    assert!(
        derived > rekeys,
        "peer derived {derived} SAs for {rekeys} rekeys: new keys not used\n{}",
        mesh.log(1)
    );
}
