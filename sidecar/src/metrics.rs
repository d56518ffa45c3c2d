//! Datapath counters, per peer and in total, exported as Prometheus text.
//!
//! Workers hold plain [`Counter`] handles (an atomic each) resolved once per
//! peer, so counting costs one relaxed atomic add; the label lookup in the
//! metric families happens only at setup.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::{Arc, OnceLock};

/// Why the datapath dropped a packet. Labels are stable (dashboards rely on
/// them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    AuthFailed,
    Replayed,
    UnknownSpi,
    Malformed,
    Mtu,
    NoRoute,
    StrictPlaintext,
    Spoofed,
    SealFailed,
    Other,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::AuthFailed,
        DropReason::Replayed,
        DropReason::UnknownSpi,
        DropReason::Malformed,
        DropReason::Mtu,
        DropReason::NoRoute,
        DropReason::StrictPlaintext,
        DropReason::Spoofed,
        DropReason::SealFailed,
        DropReason::Other,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            DropReason::AuthFailed => "auth_failed",
            DropReason::Replayed => "replayed",
            DropReason::UnknownSpi => "unknown_spi",
            DropReason::Malformed => "malformed",
            DropReason::Mtu => "mtu",
            DropReason::NoRoute => "no_route",
            DropReason::StrictPlaintext => "strict_plaintext",
            DropReason::Spoofed => "spoofed_source",
            DropReason::SealFailed => "seal_failed",
            DropReason::Other => "other",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }

    /// Maps an ESP open error to a drop reason.
    pub fn from_open(e: &meshsec_esp::OpenError) -> Self {
        use meshsec_esp::OpenError as E;
        match e {
            E::AuthFailed => DropReason::AuthFailed,
            E::Replayed | E::TooOld => DropReason::Replayed,
            E::UnknownSpi => DropReason::UnknownSpi,
            E::Truncated
            | E::Malformed
            | E::BadPadding
            | E::UnsupportedNextHeader
            | E::UnexpectedEncapsulation => DropReason::Malformed,
            _ => DropReason::Other,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerDir {
    peer: String,
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerReason {
    peer: String,
    reason: &'static str,
}

/// Counter handles for one peer (or for the total, or for packets no peer
/// can be blamed for).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub packets_in: Counter,
    pub packets_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    drops: Drops,
}

/// Drop counters, one per reason.
#[derive(Debug, Clone)]
enum Drops {
    /// The totals: every reason registered, at 0, from the start.
    Fixed([Counter; DropReason::ALL.len()]),
    /// A peer's: a reason's series appears with its first drop. Made up
    /// front, 5,000 peers' ten reasons were 50,000 series at 0 on every
    /// node (70,086 series, 4.1 MB per scrape).
    Lazy(Arc<LazyDrops>),
}

impl Default for Drops {
    fn default() -> Self {
        Drops::Fixed(Default::default())
    }
}

#[derive(Debug)]
struct LazyDrops {
    family: Family<PeerReason, Counter>,
    peer: String,
    made: [OnceLock<Counter>; DropReason::ALL.len()],
}

impl Counters {
    pub fn drop(&self, reason: DropReason) {
        let i = reason.index();
        match &self.drops {
            Drops::Fixed(c) => c[i].inc(),
            Drops::Lazy(l) => l.made[i]
                .get_or_init(|| {
                    l.family.get_or_create_owned(&PeerReason {
                        peer: l.peer.clone(),
                        reason: reason.label(),
                    })
                })
                .inc(),
        };
    }
}

/// The registry plus the families handles are drawn from.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    packets: Family<PeerDir, Counter>,
    bytes: Family<PeerDir, Counter>,
    drops: Family<PeerReason, Counter>,
    pub total: Counters,
    pub sas_installed: Gauge,
    pub rekeys: Counter,
    pub ready: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("meshsec");
        let packets = Family::<PeerDir, Counter>::default();
        let bytes = Family::<PeerDir, Counter>::default();
        let drops = Family::<PeerReason, Counter>::default();
        registry.register(
            "peer_packets",
            "ESP packets per peer and direction",
            packets.clone(),
        );
        registry.register(
            "peer_bytes",
            "Plaintext bytes per peer and direction",
            bytes.clone(),
        );
        registry.register(
            "peer_drops",
            "Dropped packets per peer and reason (peer=\"none\": unattributable)",
            drops.clone(),
        );
        let mut me = Self {
            registry,
            packets,
            bytes,
            drops,
            total: Counters::default(),
            sas_installed: Gauge::default(),
            rekeys: Counter::default(),
            ready: Gauge::default(),
        };
        me.register_totals();
        me
    }

    fn register_totals(&mut self) {
        let t = self.total.clone();
        let r = &mut self.registry;
        r.register(
            "datapath_packets_in",
            "ESP packets opened, all peers",
            t.packets_in,
        );
        r.register(
            "datapath_packets_out",
            "ESP packets sealed, all peers",
            t.packets_out,
        );
        r.register(
            "datapath_bytes_in",
            "Plaintext bytes opened, all peers",
            t.bytes_in,
        );
        r.register(
            "datapath_bytes_out",
            "Plaintext bytes sealed, all peers",
            t.bytes_out,
        );
        // The totals are `Counters::default()`: every reason up front.
        if let Drops::Fixed(drops) = &t.drops {
            for reason in DropReason::ALL {
                r.register(
                    format!("datapath_drops_{}", reason.label()),
                    format!("Packets dropped, all peers: {}", reason.label()),
                    drops[reason.index()].clone(),
                );
            }
        }
        r.register(
            "sas_installed",
            "Security associations in use",
            self.sas_installed.clone(),
        );
        r.register("rekeys", "Outbound rekeys", self.rekeys.clone());
        r.register("ready", "1 when the datapath is up", self.ready.clone());
    }

    /// Handles for `peer` (a node id, or "none").
    pub fn peer(&self, peer: &str) -> Counters {
        let dir = |d| {
            self.packets.get_or_create_owned(&PeerDir {
                peer: peer.into(),
                direction: d,
            })
        };
        let bytes = |d| {
            self.bytes.get_or_create_owned(&PeerDir {
                peer: peer.into(),
                direction: d,
            })
        };
        Counters {
            packets_in: dir("in"),
            packets_out: dir("out"),
            bytes_in: bytes("in"),
            bytes_out: bytes("out"),
            drops: Drops::Lazy(Arc::new(LazyDrops {
                family: self.drops.clone(),
                peer: peer.into(),
                made: Default::default(),
            })),
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_peer_drop_series_appear_with_their_first_drop() {
        let m = Metrics::new();
        let p = m.peer("7");
        let series = |text: &str| text.lines().filter(|l| l.contains("peer=\"7\"")).count();
        // packets and bytes, in and out; no drop reason yet.
        assert_eq!(series(&m.encode()), 4, "{}", m.encode());
        assert!(
            m.encode()
                .contains("meshsec_datapath_drops_replayed_total 0")
        );
        p.drop(DropReason::AuthFailed);
        p.clone().drop(DropReason::AuthFailed);
        let text = m.encode();
        assert_eq!(series(&text), 5, "{text}");
        assert!(
            text.contains("meshsec_peer_drops_total{peer=\"7\",reason=\"auth_failed\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn test_encode_has_peer_and_total() {
        let m = Metrics::new();
        let p = m.peer("2");
        p.packets_out.inc();
        p.drop(DropReason::Replayed);
        m.total.drop(DropReason::Replayed);
        let text = m.encode();
        assert!(
            text.contains("meshsec_peer_packets_total{peer=\"2\",direction=\"out\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("meshsec_peer_drops_total{peer=\"2\",reason=\"replayed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("meshsec_datapath_drops_replayed_total 1"),
            "{text}"
        );
    }
}
