//! Prometheus metrics (prometheus-client), served on `/metrics`.

use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::Error;
use crate::rotation::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ControllerKind {
    Tunnel,
    Node,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: ControllerKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: ControllerKind,
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TunnelLabels {
    pub tunnel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub tunnel: String,
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub kind: &'static str,
    pub result: &'static str,
}

/// Every metric the operator exports.
#[derive(Debug)]
pub struct Metrics {
    pub reconciles: Family<ControllerLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<ControllerLabels, Histogram>,
    pub epoch: Family<TunnelLabels, Gauge>,
    pub phase: Family<PhaseLabels, Gauge>,
    pub nodes_ready: Family<TunnelLabels, Gauge>,
    pub nodes_total: Family<TunnelLabels, Gauge>,
    pub writes: Family<WriteLabels, Counter>,
    pub leader: Gauge,
}

const PHASES: [Phase; 5] = [
    Phase::Stable,
    Phase::Prepare,
    Phase::Install,
    Phase::Switch,
    Phase::Retire,
];

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Stable => "Stable",
        Phase::Prepare => "Prepare",
        Phase::Install => "Install",
        Phase::Switch => "Switch",
        Phase::Retire => "Retire",
    }
}

impl Metrics {
    /// Create the metrics and register them in `registry`.
    #[must_use]
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 14))
            }),
            epoch: Family::default(),
            phase: Family::default(),
            nodes_ready: Family::default(),
            nodes_total: Family::default(),
            writes: Family::default(),
            leader: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("meshsec_operator");
        r.register("reconciles", "Reconciliations run", m.reconciles.clone());
        r.register(
            "reconcile_errors",
            "Failed reconciliations by error kind",
            m.errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time per reconciliation",
            m.duration.clone(),
        );
        r.register(
            "tunnel_epoch",
            "Key epoch members send with",
            m.epoch.clone(),
        );
        r.register(
            "tunnel_phase",
            "1 for the tunnel's current rotation phase",
            m.phase.clone(),
        );
        r.register(
            "tunnel_nodes_ready",
            "Member nodes healthy on the current epoch",
            m.nodes_ready.clone(),
        );
        r.register(
            "tunnel_nodes_total",
            "Nodes selected by the tunnel",
            m.nodes_total.clone(),
        );
        r.register(
            "api_writes",
            "API writes by kind and result",
            m.writes.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the Lease",
            m.leader.clone(),
        );
        m
    }

    /// Start timing a reconcile; the guard records the duration on drop.
    #[must_use]
    pub fn reconcile(&self, controller: ControllerKind) -> ReconcileTimer<'_> {
        let labels = ControllerLabels { controller };
        self.reconciles.get_or_create(&labels).inc();
        ReconcileTimer {
            metrics: self,
            labels,
            start: Instant::now(),
        }
    }

    pub fn error(&self, controller: ControllerKind, e: &Error) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller,
                error: e.metric_label(),
            })
            .inc();
    }

    pub fn write(&self, kind: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.writes
            .get_or_create(&WriteLabels { kind, result })
            .inc();
    }

    pub fn tunnel(&self, tunnel: &str, epoch: u64, phase: Phase, ready: usize, total: usize) {
        let t = TunnelLabels {
            tunnel: tunnel.to_owned(),
        };
        self.epoch
            .get_or_create(&t)
            .set(i64::try_from(epoch).unwrap_or(i64::MAX));
        self.nodes_ready
            .get_or_create(&t)
            .set(i64::try_from(ready).unwrap_or(i64::MAX));
        self.nodes_total
            .get_or_create(&t)
            .set(i64::try_from(total).unwrap_or(i64::MAX));
        for p in PHASES {
            let l = PhaseLabels {
                tunnel: tunnel.to_owned(),
                phase: phase_name(p),
            };
            self.phase.get_or_create(&l).set(i64::from(p == phase));
        }
    }

    /// Forget a deleted tunnel's series.
    pub fn forget_tunnel(&self, tunnel: &str) {
        let t = TunnelLabels {
            tunnel: tunnel.to_owned(),
        };
        self.epoch.remove(&t);
        self.nodes_ready.remove(&t);
        self.nodes_total.remove(&t);
        for p in PHASES {
            self.phase.remove(&PhaseLabels {
                tunnel: tunnel.to_owned(),
                phase: phase_name(p),
            });
        }
    }
}

/// Records a reconcile's duration when dropped.
#[derive(Debug)]
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    labels: ControllerLabels,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&self.labels)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_documented_series() {
        let mut reg = Registry::default();
        let m = Metrics::register(&mut reg);
        drop(m.reconcile(ControllerKind::Tunnel));
        m.error(ControllerKind::Node, &Error::MissingName);
        m.tunnel("t1", 3, Phase::Install, 2, 5);
        m.leader.set(1);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        for want in [
            "meshsec_operator_reconciles_total{controller=\"Tunnel\"} 1",
            "meshsec_operator_reconcile_errors_total{controller=\"Node\",error=\"missing_name\"} 1",
            "meshsec_operator_tunnel_epoch{tunnel=\"t1\"} 3",
            "meshsec_operator_tunnel_phase{tunnel=\"t1\",phase=\"Install\"} 1",
            "meshsec_operator_tunnel_phase{tunnel=\"t1\",phase=\"Stable\"} 0",
            "meshsec_operator_tunnel_nodes_ready{tunnel=\"t1\"} 2",
            "meshsec_operator_leader 1",
        ] {
            assert!(out.contains(want), "missing {want} in\n{out}");
        }
        m.forget_tunnel("t1");
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(!out.contains("tunnel=\"t1\""));
    }
}
