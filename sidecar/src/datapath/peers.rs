//! Peers and their SAs: longest-prefix lookup from a pod address to a peer,
//! node id to peer, one outbound SA per peer (swapped on rekey) and a few
//! inbound SAs per peer, derived lazily from the SPI of the first packet
//! that authenticates under them.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use meshsec_esp::key_schedule::KeyPair;
use meshsec_esp::{InboundSa, OpenError, OutboundSa};

use super::derive_gate::DeriveGate;
use super::keying::{Keying, KeyingError, PeerKeys};
use crate::cidr::Cidr;
use crate::config::{self, Config};
use crate::keys::Psk;
use crate::lpm::LpmTable;
use crate::metrics::{Counters, Metrics};

/// Inbound SAs kept per peer: the current generation plus the previous ones
/// still in flight after a peer restart or rekey.
const INBOUND_PER_PEER: usize = 3;

#[derive(Debug)]
pub struct Peer {
    /// Position in [`PeerTable::peers`]: workers key their own per-peer
    /// state (SA cache, counter tally) by it.
    pub index: usize,
    pub node_id: u32,
    pub pod_cidrs: Vec<Cidr>,
    pub counters: Counters,
    keys: PeerKeys,
    outbound: RwLock<Arc<OutboundSa>>,
    /// Bumped (under the write lock) whenever `outbound` is replaced, so a
    /// worker's cached copy is checked with one plain load per packet.
    outbound_version: AtomicU32,
    inbound: RwLock<Vec<(u32, Arc<InboundSa>)>>,
    /// Bumped (under the write lock) whenever `inbound` changes: a worker
    /// never keeps using an SA evicted from the list (a re-derived one
    /// would have a second, independent replay window).
    inbound_version: AtomicU32,
    /// Highest generation of this peer seen authenticated.
    known_generation: AtomicU32,
    derive_gate: DeriveGate,
}

impl Peer {
    pub fn owns(&self, ip: IpAddr) -> bool {
        self.pod_cidrs.iter().any(|c| c.contains(ip))
    }

    /// The current outbound SA and its version (see
    /// [`outbound_version`](Self::outbound_version)).
    pub fn outbound(&self) -> (u32, Arc<OutboundSa>) {
        let g = self.outbound.read().unwrap_or_else(|p| p.into_inner());
        (self.outbound_version.load(Ordering::Acquire), g.clone())
    }

    /// Changes whenever the outbound SA is replaced.
    pub fn outbound_version(&self) -> u32 {
        self.outbound_version.load(Ordering::Acquire)
    }

    /// Changes whenever the inbound SA list changes.
    pub fn inbound_version(&self) -> u32 {
        self.inbound_version.load(Ordering::Acquire)
    }

    /// The installed inbound SA for `spi` and the list's version.
    pub fn cached_inbound(&self, spi: u32) -> Option<(u32, Arc<InboundSa>)> {
        let list = self.inbound.read().unwrap_or_else(|p| p.into_inner());
        let version = self.inbound_version.load(Ordering::Acquire);
        list.iter()
            .find(|(s, _)| *s == spi)
            .map(|(_, sa)| (version, sa.clone()))
    }
}

#[derive(Debug)]
pub struct PeerTable {
    pub keying: Keying,
    pub peers: Vec<Peer>,
    by_prefix: LpmTable<usize>,
    /// (node id, peer index), sorted by node id: a binary search per
    /// received packet. A `HashMap` hashed every SPI with SipHash, ~2 % of
    /// the receiving worker's samples (profile, docs/datapath.md).
    by_node: Vec<(u32, usize)>,
    pub local: Vec<Cidr>,
}

impl PeerTable {
    pub fn new(
        cfg: &Config,
        keypair: KeyPair,
        psk: Psk,
        generation: u32,
        metrics: &Metrics,
    ) -> Result<Self, KeyingError> {
        let keying = Keying::new(cfg, keypair, psk);
        let mut peers = Vec::with_capacity(cfg.peers.len());
        let mut by_prefix = LpmTable::default();
        let mut by_node = Vec::with_capacity(cfg.peers.len());
        let agreed = agree_all(&keying, &cfg.peers)?;
        for (i, (p, keys)) in cfg.peers.iter().zip(agreed).enumerate() {
            let outbound = keying.outbound(&keys, generation)?;
            for c in &p.pod_cidrs {
                by_prefix.insert(*c, i);
            }
            by_node.push((p.node_id, i));
            peers.push(Peer {
                index: i,
                node_id: p.node_id,
                pod_cidrs: p.pod_cidrs.clone(),
                counters: metrics.peer(&p.node_id.to_string()),
                known_generation: AtomicU32::new(keys.base_generation),
                keys,
                outbound: RwLock::new(Arc::new(outbound)),
                outbound_version: AtomicU32::new(0),
                inbound: RwLock::new(Vec::new()),
                inbound_version: AtomicU32::new(0),
                derive_gate: DeriveGate::default(),
            });
        }
        by_node.sort_unstable();
        metrics.sas_installed.set(peers.len() as i64);
        Ok(Self {
            keying,
            peers,
            by_prefix,
            by_node,
            local: cfg.pod_cidrs.clone(),
        })
    }

    /// The peer whose pod prefix best matches `dst`.
    pub fn route(&self, dst: IpAddr) -> Option<&Peer> {
        self.by_prefix.lookup(dst).and_then(|i| self.peers.get(*i))
    }

    pub fn is_local(&self, ip: IpAddr) -> bool {
        self.local.iter().any(|c| c.contains(ip))
    }

    /// Any member pod prefix (strict mode's "from a member" test).
    pub fn is_member_source(&self, ip: IpAddr) -> bool {
        self.by_prefix.lookup(ip).is_some()
    }

    /// The peer an SPI names, if the SPI belongs to our epoch.
    pub fn peer_for_spi(&self, spi: u32) -> Option<(&Peer, u8)> {
        let parts = meshsec_esp::spi::decompose(spi);
        if u64::from(parts.epoch_slot) != self.keying.epoch() % 4 {
            return None;
        }
        let peer = self.peers.get(peer_index(&self.by_node, parts.node_id)?)?;
        Some((peer, parts.generation_slot))
    }

    /// Opens `buf[pkt]` with the SA for `spi`, deriving that SA first if this
    /// is the peer's first packet under a new generation. A derived SA is
    /// cached only once a packet authenticated under it, so forged SPIs never
    /// evict a good SA, and after one that fails the peer's derivations back
    /// off (see [`DeriveGate`]).
    pub fn open(
        &self,
        peer: &Peer,
        gen_bits: u8,
        spi: u32,
        buf: &mut [u8],
        pkt: std::ops::Range<usize>,
    ) -> Result<std::ops::Range<usize>, OpenError> {
        if let Some((_, sa)) = peer.cached_inbound(spi) {
            return sa.open(buf, pkt);
        }
        let mut list = peer.inbound.write().unwrap_or_else(|p| p.into_inner());
        // Another worker may have installed it while we waited for the lock.
        if let Some((_, sa)) = list.iter().find(|(s, _)| *s == spi) {
            return sa.open(buf, pkt);
        }
        let now = Instant::now();
        if !peer.derive_gate.allows(now) {
            return Err(OpenError::UnknownSpi);
        }
        let known = peer.known_generation.load(Ordering::Relaxed);
        let generation = crate::generation::infer(known, gen_bits).ok_or(OpenError::UnknownSpi)?;
        let opened = self
            .keying
            .inbound(&peer.keys, generation)
            .map_err(|_| OpenError::UnknownSpi)
            .and_then(|sa| sa.open(buf, pkt).map(|out| (sa, out)));
        let (sa, out) = match opened {
            Ok(ok) => ok,
            Err(e) => {
                peer.derive_gate.failed(now);
                return Err(e);
            }
        };
        if list.len() == INBOUND_PER_PEER {
            list.remove(0);
        }
        list.push((spi, Arc::new(sa)));
        peer.inbound_version.fetch_add(1, Ordering::Release);
        peer.known_generation
            .fetch_max(generation, Ordering::Relaxed);
        tracing::info!(
            peer = peer.node_id,
            generation,
            spi = format_args!("{spi:#010x}"),
            "inbound SA derived"
        );
        Ok(out)
    }

    /// Whether `spi` is a peer's installed outbound SA.
    pub fn is_current_outbound(&self, spi: u32) -> bool {
        self.peers.iter().any(|p| p.outbound().1.spi() == spi)
    }

    /// Replaces every outbound SA with one under `generation`.
    pub fn rekey_outbound(&self, generation: u32) -> Result<(), KeyingError> {
        for p in &self.peers {
            let sa = Arc::new(self.keying.outbound(&p.keys, generation)?);
            let mut current = p.outbound.write().unwrap_or_else(|e| e.into_inner());
            *current = sa;
            p.outbound_version.fetch_add(1, Ordering::Release);
        }
        Ok(())
    }
}

/// A one-peer table under generation 0, for unit tests.
#[cfg(test)]
pub(crate) fn test_table() -> PeerTable {
    table_for(&crate::config::test_yaml())
        .1
        .expect("test table")
}

/// A table for the static config `yaml` under generation 0 (the test
/// node's fixed keys), and the config.
#[cfg(test)]
fn table_for(yaml: &str) -> (Config, Result<PeerTable, KeyingError>) {
    let cfg: Config = serde_norway::from_str(yaml).expect("test config");
    let keypair = KeyPair::from_secret_bytes([7; 32]);
    let psk = Psk(zeroize::Zeroizing::new([9; 32]));
    let table = PeerTable::new(&cfg, keypair, psk, 0, &Metrics::new());
    (cfg, table)
}

/// Every peer's key agreement, in order, spread over the CPUs: one X25519
/// per peer is most of a start with thousands of peers, and a restarted
/// sidecar's peers stay blackholed until it is done.
fn agree_all(keying: &Keying, peers: &[config::Peer]) -> Result<Vec<PeerKeys>, KeyingError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = peers.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = peers
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|p| keying.peer(p)).collect()))
            .collect();
        let mut all = Vec::with_capacity(peers.len());
        for part in parts {
            let keys: Result<Vec<PeerKeys>, KeyingError> = part
                .join()
                .map_err(|_| KeyingError::Schedule("key agreement thread panicked".into()))?;
            all.extend(keys?);
        }
        Ok(all)
    })
}

/// The peer index of `node` in `by_node` (sorted by node id).
fn peer_index(by_node: &[(u32, usize)], node: u32) -> Option<usize> {
    let at = by_node.binary_search_by_key(&node, |&(n, _)| n).ok()?;
    Some(by_node[at].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test configuration with `n` more peers (node 100 + i, pod prefix
    /// 10.250.i.0/24), the one at `bad` with a low-order public key.
    fn many(n: u32, bad: Option<u32>) -> (Config, Result<PeerTable, KeyingError>) {
        let mut yaml = crate::config::test_yaml();
        for i in 0..n {
            let key = if Some(i) == bad {
                "00".repeat(32)
            } else {
                hex::encode(KeyPair::from_secret_bytes([i as u8 + 1; 32]).public())
            };
            yaml.push_str(&format!(
                "- nodeId: {}\n  endpoint: 10.1.0.{}\n  podCidrs: [10.250.{i}.0/24]\n  publicKey: {key}\n",
                100 + i,
                i + 1
            ));
        }
        table_for(&yaml)
    }

    /// One packet sealed with `sa`, as bytes: equal for two fresh SAs only
    /// if their keys are.
    fn sealed(sa: &OutboundSa) -> Vec<u8> {
        let plain = crate::datapath::test_packets::udp4_super_packet(64, 1234);
        let mut buf = vec![0u8; meshsec_esp::HEADROOM + plain.len() + meshsec_esp::TAILROOM];
        let at = meshsec_esp::HEADROOM;
        buf[at..at + plain.len()].copy_from_slice(&plain);
        let mut tally = meshsec_esp::ByteTally::default();
        let r = sa.seal(&mut buf, at..at + plain.len(), &mut tally).unwrap();
        buf[r].to_vec()
    }

    #[test]
    fn test_agreement_on_threads_gives_each_peer_its_own_keys() {
        let (cfg, table) = many(40, None);
        let t = table.unwrap();
        assert_eq!(t.peers.len(), 41);
        for i in 0..40u32 {
            let ip: IpAddr = format!("10.250.{i}.9").parse().unwrap();
            let p = t.route(ip).unwrap();
            assert_eq!(p.node_id, 100 + i);
            // The same SA derived here, one peer alone, seals alike.
            let alone = t.keying.peer(&cfg.peers[i as usize + 1]).unwrap();
            let want = t.keying.outbound(&alone, 0).unwrap();
            assert_eq!(sealed(&p.outbound().1), sealed(&want), "peer {}", 100 + i);
        }
    }

    #[test]
    fn test_low_order_key_names_its_peer() {
        let err = many(40, Some(33)).1.expect_err("refused");
        assert!(err.to_string().contains("peer 133"), "{err}");
    }

    #[test]
    fn test_peer_index_finds_every_node_and_only_those() {
        // Configuration order, not node order: the table is sorted once.
        let mut by_node: Vec<(u32, usize)> = [7, 3, 0xff_ffff, 1, 42]
            .iter()
            .enumerate()
            .map(|(i, &n)| (n, i))
            .collect();
        by_node.sort_unstable();
        for (i, node) in [7, 3, 0xff_ffff, 1, 42].into_iter().enumerate() {
            assert_eq!(peer_index(&by_node, node), Some(i), "node {node}");
        }
        for node in [0, 2, 8, 43, 0xff_fffe] {
            assert_eq!(peer_index(&by_node, node), None, "node {node}");
        }
        assert_eq!(peer_index(&[], 1), None);
    }
}
