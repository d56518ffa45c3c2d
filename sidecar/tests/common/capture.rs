//! tcpdump on the underlay bridge and a minimal pcap reader: what was on
//! the wire, classified by what a passive observer can see.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use meshsec_e2e::topology::{Guard, Topology};

pub struct Capture {
    guard: Guard,
    path: PathBuf,
}

impl Capture {
    pub fn start(ns: &str, iface: &str, dir: &Path, name: &str) -> Capture {
        Self::start_snaplen(ns, iface, dir, name, 0)
    }

    /// Like [`Capture::start`], keeping only the first `snaplen` bytes.
    pub fn start_snaplen(ns: &str, iface: &str, dir: &Path, name: &str, snaplen: u32) -> Capture {
        let path = dir.join(format!("{name}.pcap"));
        let snap = snaplen.to_string();
        // --immediate-mode: deliver each packet at once, or a short capture
        // stopped by SIGINT loses what is still in the kernel's ring.
        let args = [
            "-i",
            iface,
            "--immediate-mode",
            "-U",
            "-n",
            "-s",
            &snap,
            "-w",
            path.to_str().unwrap(),
        ];
        let guard = Topology::spawn(ns, "tcpdump", &args).expect("tcpdump");
        // tcpdump needs a moment to attach before traffic starts.
        for _ in 0..50 {
            if std::fs::metadata(&path)
                .map(|m| m.len() >= 24)
                .unwrap_or(false)
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        Capture { guard, path }
    }

    pub fn stop(mut self) -> Vec<Packet> {
        std::thread::sleep(std::time::Duration::from_millis(200));
        self.guard.signal_and_wait("INT");
        parse(&std::fs::read(&self.path).expect("pcap"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Esp,
    UdpEsp,
    Icmp,
    Tcp,
    Udp,
    Other(u8),
    NotIp,
}

#[derive(Debug, Clone)]
pub struct Packet {
    pub data: Vec<u8>,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub kind: Kind,
    pub fragment: bool,
    /// Length on the wire (the capture may hold less).
    pub wire_len: usize,
}

impl Packet {
    pub fn contains(&self, needle: &[u8]) -> bool {
        self.data.windows(needle.len()).any(|w| w == needle)
    }
}

fn parse(file: &[u8]) -> Vec<Packet> {
    let mut out = Vec::new();
    if file.len() < 24 {
        return out;
    }
    let mut off = 24;
    while off + 16 <= file.len() {
        let caplen = u32::from_le_bytes(file[off + 8..off + 12].try_into().unwrap()) as usize;
        let wire_len = u32::from_le_bytes(file[off + 12..off + 16].try_into().unwrap()) as usize;
        let start = off + 16;
        let end = (start + caplen).min(file.len());
        let mut p = classify(&file[start..end]);
        p.wire_len = wire_len;
        out.push(p);
        off = end;
    }
    out
}

fn classify(frame: &[u8]) -> Packet {
    let data = frame.to_vec();
    let not_ip = |data| Packet {
        data,
        src: None,
        dst: None,
        kind: Kind::NotIp,
        fragment: false,
        wire_len: 0,
    };
    if frame.len() < 14 {
        return not_ip(data);
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let ip = &frame[14..];
    let (src, dst, proto, l4, fragment) = match ethertype {
        0x0800 if ip.len() >= 20 => {
            let ihl = usize::from(ip[0] & 0xf) * 4;
            let frag = u16::from_be_bytes([ip[6], ip[7]]);
            let fragment = frag & 0x3fff != 0; // MF or offset
            let s: [u8; 4] = ip[12..16].try_into().unwrap();
            let d: [u8; 4] = ip[16..20].try_into().unwrap();
            (IpAddr::from(s), IpAddr::from(d), ip[9], ihl, fragment)
        }
        0x86dd if ip.len() >= 40 => {
            let s: [u8; 16] = ip[8..24].try_into().unwrap();
            let d: [u8; 16] = ip[24..40].try_into().unwrap();
            (IpAddr::from(s), IpAddr::from(d), ip[6], 40, ip[6] == 44)
        }
        _ => return not_ip(data),
    };
    let kind = match proto {
        50 => Kind::Esp,
        1 | 58 => Kind::Icmp,
        6 => Kind::Tcp,
        17 => {
            let ports = ip.get(l4..l4 + 4).map(|p| {
                (
                    u16::from_be_bytes([p[0], p[1]]),
                    u16::from_be_bytes([p[2], p[3]]),
                )
            });
            match ports {
                Some((4500, _)) | Some((_, 4500)) => Kind::UdpEsp,
                _ => Kind::Udp,
            }
        }
        p => Kind::Other(p),
    };
    Packet {
        data,
        src: Some(src),
        dst: Some(dst),
        kind,
        fragment,
        wire_len: 0,
    }
}
