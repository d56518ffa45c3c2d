//! A reusable test network: N "node" namespaces joined by a bridge in an
//! "underlay" namespace, each node with pod namespaces behind its own
//! bridge, and host-gw routes between nodes (the way a flat native-routing
//! CNI wires a cluster). Everything lives in namespaces this value creates;
//! dropping it deletes them, also when a test fails.
//!
//! Addresses (the same in every topology; namespaces keep them apart):
//! - underlay: node i (1-based) is 192.168.77.i/24 and fd77::i/64 on `eth0`;
//! - pods of node i: 10.77.i.0/24 and fd77:i::/64, gateway .1 / ::1 on the
//!   node's bridge `pods`, pod k (0-based) is .(10+k) / ::(10+k).
//!
//! Test code may shell out to `ip`; the product never does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Errors setting the topology up (a missing tool, no privileges).
#[derive(Debug)]
pub struct TopologyError(pub String);

impl std::fmt::Display for TopologyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TopologyError {}

type Result<T> = std::result::Result<T, TopologyError>;

/// A pod: a namespace with one interface behind its node's bridge.
#[derive(Debug, Clone)]
pub struct Pod {
    pub ns: String,
    pub ip4: Ipv4Addr,
    pub ip6: Ipv6Addr,
}

/// A node namespace.
#[derive(Debug, Clone)]
pub struct Node {
    /// 1-based index, also the last byte of its underlay addresses.
    pub index: u8,
    pub ns: String,
    pub underlay4: Ipv4Addr,
    pub underlay6: Ipv6Addr,
    pub pod_cidr4: String,
    pub pod_cidr6: String,
    pub pods: Vec<Pod>,
}

/// The whole network; see the module docs.
#[derive(Debug)]
pub struct Topology {
    /// Namespace holding the underlay bridge `br0` (capture here).
    pub underlay_ns: String,
    pub nodes: Vec<Node>,
    namespaces: Vec<String>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs `ip <args>` and fails with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    run("ip", args).map(drop)
}

fn run(prog: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| TopologyError(format!("{prog}: {e}")))?;
    if !out.status.success() {
        return Err(TopologyError(format!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

impl Topology {
    /// Builds `nodes` nodes with `pods_per_node` pods each.
    pub fn new(nodes: u8, pods_per_node: u8) -> Result<Self> {
        let id = format!(
            "{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut t = Topology {
            underlay_ns: format!("msu-{id}"),
            nodes: Vec::new(),
            namespaces: Vec::new(),
        };
        let u = t.underlay_ns.clone();
        t.add_ns(&u)?;
        ip(&["-n", &u, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &u, "link", "set", "br0", "up"])?;
        for i in 1..=nodes {
            let node = t.add_node(&id, i, pods_per_node)?;
            t.nodes.push(node);
        }
        t.add_host_gw_routes()?;
        Ok(t)
    }

    fn add_ns(&mut self, ns: &str) -> Result<()> {
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_string());
        // No DAD: addresses are usable at once; forwarding on, as on a node.
        for (key, val) in [
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
        ] {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    &format!("{key}={val}"),
                ],
            )?;
        }
        ip(&["-n", ns, "link", "set", "lo", "up"])
    }

    fn add_node(&mut self, id: &str, i: u8, pods: u8) -> Result<Node> {
        let ns = format!("msn{i}-{id}");
        self.add_ns(&ns)?;
        let u = self.underlay_ns.clone();
        let port = format!("n{i}");
        ip(&[
            "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &u,
        ])?;
        ip(&["-n", &u, "link", "set", &port, "master", "br0", "up"])?;
        let (u4, u6) = (
            Ipv4Addr::new(192, 168, 77, i),
            format!("fd77::{i}")
                .parse()
                .map_err(|_| TopologyError("v6".into()))?,
        );
        ip(&["-n", &ns, "addr", "add", &format!("{u4}/24"), "dev", "eth0"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{u6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "add", "pods", "type", "bridge"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.77.{i}.1/24"),
            "dev",
            "pods",
        ])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("fd77:{i}::1/64"),
            "dev",
            "pods",
            "nodad",
        ])?;
        ip(&["-n", &ns, "link", "set", "pods", "up"])?;
        let mut node = Node {
            index: i,
            ns: ns.clone(),
            underlay4: u4,
            underlay6: u6,
            pod_cidr4: format!("10.77.{i}.0/24"),
            pod_cidr6: format!("fd77:{i}::/64"),
            pods: Vec::new(),
        };
        for k in 0..pods {
            let pod = self.add_pod(&node, id, k)?;
            node.pods.push(pod);
        }
        Ok(node)
    }

    fn add_pod(&mut self, node: &Node, id: &str, k: u8) -> Result<Pod> {
        let i = node.index;
        let ns = format!("msp{i}{k}-{id}");
        self.add_ns(&ns)?;
        let port = format!("p{k}");
        ip(&[
            "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
            &node.ns,
        ])?;
        ip(&["-n", &node.ns, "link", "set", &port, "master", "pods", "up"])?;
        let host = 10 + k;
        let ip4 = Ipv4Addr::new(10, 77, i, host);
        let ip6: Ipv6Addr = format!("fd77:{i}::{host:x}")
            .parse()
            .map_err(|_| TopologyError("v6".into()))?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip4}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &format!("10.77.{i}.1"),
        ])?;
        ip(&[
            "-n",
            &ns,
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("fd77:{i}::1"),
        ])?;
        Ok(Pod { ns, ip4, ip6 })
    }

    fn add_host_gw_routes(&self) -> Result<()> {
        for a in &self.nodes {
            for b in self.nodes.iter().filter(|b| b.index != a.index) {
                ip(&[
                    "-n",
                    &a.ns,
                    "route",
                    "add",
                    &b.pod_cidr4,
                    "via",
                    &b.underlay4.to_string(),
                ])?;
                ip(&[
                    "-n",
                    &a.ns,
                    "-6",
                    "route",
                    "add",
                    &b.pod_cidr6,
                    "via",
                    &b.underlay6.to_string(),
                ])?;
            }
        }
        Ok(())
    }

    /// A command that runs `prog args` inside namespace `ns`.
    pub fn command(ns: &str, prog: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, prog]).args(args);
        c
    }

    /// Runs a command in `ns` to completion; `Err` carries its stderr.
    pub fn exec(ns: &str, prog: &str, args: &[&str]) -> Result<Output> {
        let mut full = vec!["netns", "exec", ns, prog];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Starts a background command in `ns`, killed and reaped on drop.
    pub fn spawn(ns: &str, prog: &str, args: &[&str]) -> Result<Guard> {
        let child = Self::command(ns, prog, args)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| TopologyError(format!("{prog}: {e}")))?;
        Ok(Guard(Some(child)))
    }

    /// The pod address of `node`'s pod `k` in `family` (4 or 6).
    pub fn pod_ip(&self, node: usize, k: usize, v6: bool) -> Option<IpAddr> {
        let p = self.nodes.get(node)?.pods.get(k)?;
        Some(if v6 {
            IpAddr::V6(p.ip6)
        } else {
            IpAddr::V4(p.ip4)
        })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            // Kill whatever still runs in the namespace, then delete it.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A background process, killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Guard(pub Option<Child>);

impl Guard {
    /// Sends `signal` (e.g. "TERM") and waits for the process to exit.
    pub fn signal_and_wait(&mut self, signal: &str) -> Option<std::process::ExitStatus> {
        let child = self.0.as_mut()?;
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        let status = child.wait().ok();
        self.0 = None;
        status
    }

    pub fn id(&self) -> Option<u32> {
        self.0.as_ref().map(Child::id)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
