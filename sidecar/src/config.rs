//! The sidecar's configuration: the single entry point for both static mode
//! (`run --config <file>`) and the Kubernetes agent, which builds the same
//! [`Config`] from the API.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cidr::Cidr;

/// Everything the datapath needs to run on one node.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// This node's id (24 bits, unique among members; part of every SPI).
    pub node_id: u32,
    /// This node's underlay address (tunnel-mode outer source).
    pub endpoint: IpAddr,
    /// Pod prefixes routed to this node.
    pub pod_cidrs: Vec<Cidr>,
    /// File holding this node's X25519 private key (64 hex characters).
    pub private_key_file: PathBuf,
    /// File holding the epoch's 32-byte pre-shared key (64 hex characters).
    pub psk_file: PathBuf,
    /// Key epoch (selects the PSK; 2 bits of it go into the SPI).
    #[serde(default = "default_epoch")]
    pub epoch: u64,
    /// Key generation of this node at the first start. Static mode bumps it
    /// on every start through `stateFile` so a restart never reuses a key.
    #[serde(default)]
    pub generation: u32,
    /// Where the last used generation is persisted; it is bumped before
    /// every start and every rekey.
    #[serde(default = "default_state_file")]
    pub state_file: PathBuf,
    /// Tunnel identity mixed into the key schedule.
    #[serde(default = "default_tunnel_uid")]
    pub tunnel_uid: String,
    #[serde(default)]
    pub tunnel: TunnelOptions,
    pub peers: Vec<Peer>,
    #[serde(default)]
    pub datapath: DatapathOptions,
    #[serde(default)]
    pub metrics: MetricsOptions,
}

/// A remote member node.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Peer {
    pub node_id: u32,
    pub endpoint: IpAddr,
    pub pod_cidrs: Vec<Cidr>,
    /// The peer's X25519 public key (64 hex characters).
    pub public_key: String,
    /// The peer's generation at least (its SPI carries the low 6 bits of the
    /// current one; the receiver infers the rest from this base).
    #[serde(default)]
    pub generation: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Transport,
    Tunnel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Cipher {
    #[default]
    Aes128gcm,
    Aes256gcm,
    Aes128gmac,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    /// ESP in UDP (RFC 3948), port `udpPort`.
    #[default]
    Udp,
    /// Raw ESP, IP protocol 50.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TunnelOptions {
    pub mode: Mode,
    pub cipher: Cipher,
    pub encap: Encap,
    pub udp_port: u16,
    pub replay_window: u32,
    /// Underlay MTU; encrypted packets never exceed it.
    pub mtu: u16,
    /// Drop unencrypted packets arriving from member pod prefixes.
    pub strict: bool,
    /// Rekey after this many packets per SA (soft limit, far below 2^64).
    pub rekey_after_packets: u64,
    /// Rekey after this many bytes per SA.
    pub rekey_after_bytes: u64,
}

impl Default for TunnelOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Transport,
            cipher: Cipher::Aes128gcm,
            encap: Encap::Udp,
            udp_port: 4500,
            replay_window: 8192,
            mtu: 1500,
            strict: false,
            rekey_after_packets: 1 << 40,
            rekey_after_bytes: 1 << 50,
        }
    }
}

/// Default `datapath.busyPollUs`: covers the peer's wake-up and work for a
/// request/response exchange on the 2-vCPU dev VM (docs/datapath.md).
pub const DEFAULT_BUSY_POLL_US: u32 = 200;
/// Upper bound of `datapath.busyPollUs`: beyond that a worker would burn
/// a noticeable share of a core per sparse packet.
pub const MAX_BUSY_POLL_US: u32 = 10_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DatapathOptions {
    /// TUN device name.
    pub device: String,
    /// TUN queues / worker threads; 0 = one per CPU. With `busyPoll:
    /// always` this is also how many CPUs are kept busy permanently.
    pub queues: usize,
    /// Routing table for remote member pod prefixes (plaintext to encrypt).
    pub remote_table: u32,
    /// Routing table for local pod prefixes (ciphertext to decrypt).
    pub local_table: u32,
    /// First policy rule priority; the sidecar uses this and the next 9.
    pub rule_priority: u32,
    /// Metric of the fail-closed blackhole routes (above the TUN routes).
    pub blackhole_metric: u32,
    /// TUN offload (IFF_VNET_HDR + TUNSETOFFLOAD): TCP super-packets are
    /// read and split into segments before sealing, and opened segments of
    /// one flow are written back coalesced. See docs/datapath.md.
    pub offload: bool,
    /// When a worker polls its empty queue instead of sleeping. See
    /// [`BusyPoll`].
    pub busy_poll: BusyPoll,
    /// `busyPoll: sparse` only. Sparse traffic (a worker woke after
    /// sleeping ≥ 1 ms): after each round that handled packets, the worker
    /// keeps polling its queue (non-blocking, yielding the CPU between
    /// polls) for up to this many microseconds before it sleeps again, so
    /// a reply that follows within that time is picked up without a thread
    /// wake-up. 0 = never. An idle worker never polls, nor does one under
    /// bulk load (its sleeps are short). Absent = [`DEFAULT_BUSY_POLL_US`].
    /// See docs/datapath.md (Latency).
    pub busy_poll_us: Option<u32>,
    /// Which TUN queue (worker) gets a packet. See [`Steering`].
    pub steering: Steering,
}

/// When a worker polls its queue instead of sleeping until it is readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusyPoll {
    /// Sleep when the queue is empty; poll for `busyPollUs` only after a
    /// wake-up from a long sleep (sparse traffic). An idle worker costs no
    /// CPU; a request/response exchange pays for the wake-ups of the
    /// threads on its path (~45-60 µs each on a VM whose idle vCPUs halt).
    #[default]
    Sparse,
    /// Poll mode (as DPDK's or VPP's polling workers): a worker never
    /// sleeps; it polls its queue without blocking and yields the CPU
    /// (`sched_yield`) between empty polls, so other threads still run.
    /// No wake-up is ever on a packet's path, but **each worker keeps a
    /// CPU busy permanently, even with no traffic at all** (the sidecar
    /// shows as ~100% of a core per worker in `top`, and the CPU never
    /// idles, so it is lost to power saving and, on shared hosts, billed).
    /// Use `queues` to limit how many workers spin (with the default, one
    /// per CPU, every CPU of the node is kept busy). See docs/datapath.md
    /// (Latency) for the measured latency and cost.
    Always,
}

/// How the TUN spreads packets over its queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Steering {
    /// The kernel's default: by flow hash. A single flow's sealing and the
    /// sending application run on different CPUs (best single-flow
    /// throughput).
    #[default]
    Flow,
    /// By size: packets up to 1024 bytes (pings, ACKs, requests) to the
    /// queue of the CPU they are on, whose worker is pinned to that CPU
    /// (every wake-up of sparse traffic is local: about half the added
    /// latency of `flow`); larger ones (bulk: full-size segments,
    /// super-packets) to their flow's queue (plaintext, by the socket's
    /// flow hash) or their peer's (ESP, by outer source address), so a
    /// bulk flow is sealed and opened by one worker each, in order. Small
    /// ESP packets of an SA are opened on the CPU they arrive on, so two
    /// workers open it and may drift apart under bulk: with a replay
    /// window of 1024 some were dropped (up to 1136 per 10 s), with the
    /// default 8192 none were (measured). One queue per CPU; needs
    /// CAP_BPF (or CAP_SYS_ADMIN) for the steering program. See
    /// docs/datapath.md (Latency).
    ///
    /// It replaced `cpu` (every packet to its CPU's queue), which spread
    /// one TCP flow and one SA over several workers (a flow is sent from
    /// the application's CPU and from the one handling its ACKs): ~100 k
    /// retransmits and ~27 k ESP packets dropped per 10 s of bulk.
    Hybrid,
}

impl Default for DatapathOptions {
    fn default() -> Self {
        Self {
            device: "meshsec0".into(),
            queues: 0,
            remote_table: 2480,
            local_table: 2481,
            rule_priority: 100,
            blackhole_metric: 4000,
            offload: true,
            busy_poll: BusyPoll::Sparse,
            busy_poll_us: None,
            steering: Steering::Flow,
        }
    }
}

impl DatapathOptions {
    /// How long a sparse-traffic worker polls (`busyPollUs` or its
    /// default); unused with `busyPoll: always`.
    pub fn busy_poll_duration(&self) -> Duration {
        let us = self.busy_poll_us.unwrap_or(DEFAULT_BUSY_POLL_US);
        Duration::from_micros(u64::from(us))
    }

    fn validate_busy_poll(&self) -> Result<(), ConfigError> {
        match (self.busy_poll, self.busy_poll_us) {
            (BusyPoll::Sparse, Some(us)) if us > MAX_BUSY_POLL_US => Err(invalid(
                "datapath.busyPollUs",
                format!("must be within 0..={MAX_BUSY_POLL_US}"),
            )),
            // A poll window only bounds sparse polling; an always-polling
            // worker has none, so a value there would silently do nothing.
            (BusyPoll::Always, Some(_)) => Err(invalid(
                "datapath.busyPollUs",
                "applies only to busyPoll: sparse; with busyPoll: always workers never sleep \
                 (remove busyPollUs)",
            )),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MetricsOptions {
    /// Address for `/metrics` and `/healthz`; absent = not served.
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9480))),
        }
    }
}

fn default_epoch() -> u64 {
    1
}

fn default_state_file() -> PathBuf {
    "/var/lib/meshsec/generation".into()
}

fn default_tunnel_uid() -> String {
    "static".into()
}

/// A configuration that cannot run, with the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_norway::Error,
    },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Largest node id that fits the SPI (24 bits).
pub const MAX_NODE_ID: u32 = (1 << 24) - 1;

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let cfg: Config = serde_norway::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what serde cannot: ranges, uniqueness, overlaps.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_node_id("nodeId", self.node_id)?;
        if self.pod_cidrs.is_empty() {
            return Err(invalid("podCidrs", "at least one pod prefix is required"));
        }
        let t = &self.tunnel;
        if !(64..=8192).contains(&t.replay_window) {
            return Err(invalid("tunnel.replayWindow", "must be within 64..=8192"));
        }
        if !(1280..=9000).contains(&t.mtu) {
            return Err(invalid("tunnel.mtu", "must be within 1280..=9000"));
        }
        if t.udp_port == 0 {
            return Err(invalid("tunnel.udpPort", "must not be 0"));
        }
        if t.rekey_after_packets == 0 || t.rekey_after_bytes == 0 {
            return Err(invalid("tunnel.rekeyAfter*", "limits must be positive"));
        }
        let d = &self.datapath;
        if d.device.is_empty() || d.device.len() > 15 {
            return Err(invalid(
                "datapath.device",
                "interface names are 1..=15 bytes",
            ));
        }
        if d.remote_table == d.local_table
            || [d.remote_table, d.local_table]
                .iter()
                .any(|t| [0, 253, 254, 255].contains(t))
        {
            return Err(invalid(
                "datapath.remoteTable/localTable",
                "must differ from each other and from the kernel's tables 0, 253, 254, 255",
            ));
        }
        if d.rule_priority == 0 || d.rule_priority + 10 >= 32766 {
            return Err(invalid("datapath.rulePriority", "must be within 1..32756"));
        }
        if d.steering != Steering::Flow && d.queues != 0 {
            return Err(invalid(
                "datapath.queues",
                "must be 0 (one per CPU) with datapath.steering: hybrid",
            ));
        }
        d.validate_busy_poll()?;
        self.validate_peers()
    }

    fn validate_peers(&self) -> Result<(), ConfigError> {
        let mut ids = HashSet::from([self.node_id]);
        let mut all: Vec<(Cidr, String)> = self
            .pod_cidrs
            .iter()
            .map(|c| (*c, "podCidrs".to_string()))
            .collect();
        for (i, p) in self.peers.iter().enumerate() {
            let field = format!("peers[{i}]");
            check_node_id(&format!("{field}.nodeId"), p.node_id)?;
            if !ids.insert(p.node_id) {
                return Err(invalid(
                    format!("{field}.nodeId"),
                    format!("node id {} is used twice", p.node_id),
                ));
            }
            if p.pod_cidrs.is_empty() {
                return Err(invalid(
                    format!("{field}.podCidrs"),
                    "at least one pod prefix is required",
                ));
            }
            crate::keys::parse_public_key(&p.public_key)
                .map_err(|e| invalid(format!("{field}.publicKey"), e.to_string()))?;
            if self.tunnel.mode == Mode::Tunnel && p.endpoint.is_ipv4() != self.endpoint.is_ipv4() {
                return Err(invalid(
                    format!("{field}.endpoint"),
                    "tunnel mode needs endpoints of one address family",
                ));
            }
            for c in &p.pod_cidrs {
                all.push((*c, format!("{field}.podCidrs")));
            }
        }
        let prefixes: Vec<Cidr> = all.iter().map(|(c, _)| *c).collect();
        if let Some((i, j)) = crate::cidr::first_overlap(&prefixes)
            && let (Some((a, fa)), Some((b, fb))) = (all.get(i), all.get(j))
        {
            return Err(invalid(fb.clone(), format!("{b} overlaps {a} in {fa}")));
        }
        Ok(())
    }

    /// Rule priorities in use: `rule_priority .. rule_priority + 10`.
    pub fn rule_priorities(&self) -> std::ops::Range<u32> {
        self.datapath.rule_priority..self.datapath.rule_priority + 10
    }
}

fn check_node_id(field: &str, id: u32) -> Result<(), ConfigError> {
    if id == 0 || id > MAX_NODE_ID {
        return Err(invalid(
            field,
            format!("node id {id} is outside 1..={MAX_NODE_ID}"),
        ));
    }
    Ok(())
}

/// Public key of the one peer in [`test_yaml`].
#[cfg(test)]
pub(crate) const TEST_PEER_KEY: &str =
    "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

/// A minimal valid static config, node 1 with one peer (node 2), for the
/// crate's unit tests.
#[cfg(test)]
pub(crate) fn test_yaml() -> String {
    format!(
        "nodeId: 1\nendpoint: 10.0.0.1\npodCidrs: [10.244.1.0/24]\nprivateKeyFile: /k\npskFile: /p\n\
         peers:\n- nodeId: 2\n  endpoint: 10.0.0.2\n  podCidrs: [10.244.2.0/24, fd00:2::/64]\n  publicKey: {TEST_PEER_KEY}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        let c: Config = serde_norway::from_str(s).map_err(|source| ConfigError::Parse {
            path: "t".into(),
            source,
        })?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn test_parse_minimal_with_defaults() {
        let c = parse(&test_yaml()).unwrap();
        assert_eq!(c.tunnel.mode, Mode::Transport);
        assert_eq!(c.tunnel.encap, Encap::Udp);
        assert_eq!(c.tunnel.udp_port, 4500);
        assert_eq!(c.datapath.device, "meshsec0");
        assert_eq!(c.datapath.busy_poll, BusyPoll::Sparse);
        assert_eq!(
            c.datapath.busy_poll_duration(),
            Duration::from_micros(u64::from(DEFAULT_BUSY_POLL_US))
        );
        assert_eq!(c.datapath.steering, Steering::Flow);
        assert_eq!(c.peers[0].pod_cidrs.len(), 2);
    }

    #[test]
    fn test_parse_tunnel_options() {
        let s = test_yaml()
            + "tunnel:\n  mode: tunnel\n  cipher: aes256gcm\n  encap: none\n  strict: true\n";
        let c = parse(&s).unwrap();
        assert_eq!(c.tunnel.mode, Mode::Tunnel);
        assert_eq!(c.tunnel.cipher, Cipher::Aes256gcm);
        assert_eq!(c.tunnel.encap, Encap::None);
        assert!(c.tunnel.strict);
    }

    fn err(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn test_rejects_unknown_field() {
        assert!(err(&(test_yaml() + "bogus: 1\n")).contains("bogus"));
    }

    #[test]
    fn test_rejects_bad_values() {
        assert!(err(&test_yaml().replace("nodeId: 1", "nodeId: 0")).contains("nodeId"));
        assert!(err(&test_yaml().replace("nodeId: 2", "nodeId: 1")).contains("used twice"));
        assert!(err(&test_yaml().replace("10.244.2.0/24", "10.244.1.128/25")).contains("overlaps"));
        assert!(err(&test_yaml().replace(TEST_PEER_KEY, "abcd")).contains("publicKey"));
        assert!(err(&(test_yaml() + "tunnel:\n  replayWindow: 10\n")).contains("replayWindow"));
        assert!(err(&(test_yaml() + "tunnel:\n  mtu: 100\n")).contains("mtu"));
        assert!(err(&(test_yaml() + "tunnel:\n  cipher: des\n")).contains("des"));
        assert!(err(&test_yaml().replace("10.244.2.0/24", "10.244.2.1/24")).contains("host bits"));
        assert!(err(&(test_yaml() + "datapath:\n  busyPollUs: 10001\n")).contains("busyPollUs"));
        assert!(err(&(test_yaml() + "datapath:\n  steering: rss\n")).contains("rss"));
        assert!(
            err(&(test_yaml() + "datapath:\n  steering: hybrid\n  queues: 2\n"))
                .contains("datapath.queues")
        );
        // Withdrawn (it lost packets under bulk): the error names the
        // modes there are.
        let e = err(&(test_yaml() + "datapath:\n  steering: cpu\n"));
        assert!(e.contains("cpu") && e.contains("hybrid"), "{e}");
    }

    #[test]
    fn test_parse_busy_poll() {
        let c = parse(&(test_yaml() + "datapath:\n  busyPoll: always\n  queues: 1\n")).unwrap();
        assert_eq!(c.datapath.busy_poll, BusyPoll::Always);
        assert_eq!(c.datapath.queues, 1);
        // Today's behaviour, spelt out, still takes busyPollUs.
        let c = parse(&(test_yaml() + "datapath:\n  busyPoll: sparse\n  busyPollUs: 0\n")).unwrap();
        assert_eq!(c.datapath.busy_poll, BusyPoll::Sparse);
        assert!(c.datapath.busy_poll_duration().is_zero());
        let c = parse(&(test_yaml() + "datapath:\n  busyPollUs: 10000\n")).unwrap();
        assert_eq!(c.datapath.busy_poll_duration(), Duration::from_millis(10));
        // Polling workers with the per-CPU pinned queues of hybrid steering.
        let c =
            parse(&(test_yaml() + "datapath:\n  busyPoll: always\n  steering: hybrid\n")).unwrap();
        assert_eq!(c.datapath.busy_poll, BusyPoll::Always);
    }

    #[test]
    fn test_rejects_bad_busy_poll() {
        // Unknown mode: the error names the ones there are.
        let e = err(&(test_yaml() + "datapath:\n  busyPoll: adaptive\n"));
        assert!(
            e.contains("adaptive") && e.contains("sparse") && e.contains("always"),
            "{e}"
        );
        // A poll window with workers that never sleep would do nothing.
        for us in [0, 200] {
            let e =
                err(&(test_yaml()
                    + &format!("datapath:\n  busyPoll: always\n  busyPollUs: {us}\n")));
            assert!(
                e.contains("datapath.busyPollUs") && e.contains("always"),
                "{e}"
            );
        }
        let e = err(&(test_yaml() + "datapath:\n  busyPoll: sparse\n  busyPollUs: 10001\n"));
        assert!(
            e.contains("datapath.busyPollUs") && e.contains("10000"),
            "{e}"
        );
    }

    #[test]
    fn test_parse_hybrid_steering() {
        let c = parse(&(test_yaml() + "datapath:\n  steering: hybrid\n")).unwrap();
        assert_eq!(c.datapath.steering, Steering::Hybrid);
    }
}
