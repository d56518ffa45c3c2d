//! What a tunnel sees of the cluster, computed from the informer caches:
//! pure functions over object slices (no API calls).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use meshsec_crds::{IPsecNode, IPsecTunnel, NodeTunnelState, conditions};

use crate::conflict::{self, Selection, Verdict};
use crate::rotation::{Epoch, NodeAck, Usage};

/// Node metadata as cached (labels are all the operator needs).
pub type NodeMeta = PartialObjectMeta<Node>;

/// Names of the Nodes `tunnel` selects (terminating Nodes excluded).
#[must_use]
pub fn selection(tunnel: &IPsecTunnel, nodes: &[Arc<NodeMeta>]) -> BTreeSet<String> {
    nodes
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .filter(|n| tunnel.spec.node_selector.matches(n.labels()))
        .map(|n| n.name_any())
        .collect()
}

/// Oldest first (creation time, then name): the order conflicts are
/// resolved in, so the later tunnel is the one in `Conflict`.
pub fn by_age(tunnels: &mut [Arc<IPsecTunnel>]) {
    tunnels.sort_by(|a, b| {
        let key = |t: &IPsecTunnel| {
            (
                t.metadata.creation_timestamp.as_ref().map(|c| c.0),
                t.name_any(),
            )
        };
        key(a).cmp(&key(b))
    });
}

/// Conflict verdicts for every live tunnel.
#[must_use]
pub fn conflicts(
    tunnels: &[Arc<IPsecTunnel>],
    nodes: &[Arc<NodeMeta>],
) -> BTreeMap<String, Verdict> {
    let mut live: Vec<Arc<IPsecTunnel>> = tunnels
        .iter()
        .filter(|t| t.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    by_age(&mut live);
    let selections: Vec<Selection> = live
        .iter()
        .map(|t| Selection {
            tunnel: t.name_any(),
            nodes: selection(t, nodes),
        })
        .collect();
    conflict::resolve(&selections)
}

/// The tunnel a node belongs to: the oldest live tunnel selecting it that
/// is not itself in `Conflict` (as its status says).
#[must_use]
pub fn tunnel_of(node: &NodeMeta, tunnels: &[Arc<IPsecTunnel>]) -> Option<String> {
    let mut live: Vec<Arc<IPsecTunnel>> = tunnels
        .iter()
        .filter(|t| t.metadata.deletion_timestamp.is_none())
        .filter(|t| {
            !t.status.as_ref().is_some_and(|s| {
                conditions::is_condition_true(&s.conditions, conditions::tunnel::CONFLICT)
            })
        })
        .filter(|t| t.spec.node_selector.matches(node.labels()))
        .cloned()
        .collect();
    by_age(&mut live);
    live.first().map(|t| t.name_any())
}

/// What one node's IPsecNode says about `tunnel`.
#[must_use]
pub fn node_ack(state: Option<&NodeTunnelState>) -> NodeAck {
    let epoch = |e: Option<i64>| e.and_then(|e| Epoch::try_from(e).ok());
    let Some(st) = state else {
        return NodeAck::default();
    };
    NodeAck {
        published: st
            .public_keys
            .iter()
            .filter_map(|k| Epoch::try_from(k.epoch).ok())
            .max(),
        installed: epoch(st.installed_epoch),
        active: epoch(st.active_epoch),
        usage: st.usage.as_ref().map(|u| Usage {
            epoch: Epoch::try_from(u.epoch).unwrap_or(0),
            bytes: u64::try_from(u.bytes).unwrap_or(0),
            packets: u64::try_from(u.packets).unwrap_or(0),
        }),
    }
}

/// A tunnel's membership picture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    /// Selected nodes with an admitted (id-carrying), live IPsecNode, and
    /// what each acknowledges: the state machine's input.
    pub eligible: BTreeMap<String, NodeAck>,
    /// Eligible nodes whose sidecar reports an unhealthy datapath.
    pub unhealthy: BTreeSet<String>,
}

/// Build the membership picture of `tunnel` from the selected node names
/// and the cached IPsecNodes.
#[must_use]
pub fn members(
    tunnel: &str,
    selected: &BTreeSet<String>,
    ipsecnodes: &[Arc<IPsecNode>],
) -> Members {
    let mut out = Members::default();
    for n in ipsecnodes {
        let name = n.name_any();
        let admitted = n.status.as_ref().is_some_and(|s| s.node_id.is_some());
        if !selected.contains(&name) || !admitted || n.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if !n.spec.datapath.as_ref().is_some_and(|d| d.healthy) {
            out.unhealthy.insert(name.clone());
        }
        out.eligible.insert(name, node_ack(n.spec.tunnel(tunnel)));
    }
    out
}

/// At most `max` names, then "and N more": bounded condition messages.
#[must_use]
pub fn some_names<'a>(names: impl IntoIterator<Item = &'a String>, max: usize) -> String {
    let all: Vec<&String> = names.into_iter().collect();
    let shown: Vec<&str> = all.iter().take(max).map(|s| s.as_str()).collect();
    let mut text = shown.join(", ");
    if all.len() > max {
        text.push_str(&format!(" and {} more", all.len() - max));
    }
    text
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;
    use meshsec_crds::{EpochPublicKey, IPsecTunnelSpec, NodeSelector};

    use super::*;

    fn node(name: &str, labels: &[(&str, &str)]) -> Arc<NodeMeta> {
        Arc::new(NodeMeta {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).into(), (*v).into()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..NodeMeta::default()
        })
    }

    fn tunnel(name: &str, created: i64, zone: Option<&str>) -> Arc<IPsecTunnel> {
        let selector = NodeSelector {
            match_labels: zone.map(|z| [("zone".to_string(), z.to_string())].into_iter().collect()),
            match_expressions: None,
        };
        let mut t = IPsecTunnel::new(
            name,
            IPsecTunnelSpec {
                node_selector: selector,
                ..IPsecTunnelSpec::default()
            },
        );
        t.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        Arc::new(t)
    }

    #[test]
    fn the_younger_of_two_overlapping_tunnels_is_in_conflict_whatever_the_names() {
        let nodes = vec![node("n1", &[("zone", "a")]), node("n2", &[("zone", "b")])];
        // "aaa" sorts first but is younger.
        let ts = vec![tunnel("aaa", 200, None), tunnel("zzz", 100, Some("a"))];
        let v = conflicts(&ts, &nodes);
        assert_eq!(v["zzz"], Verdict::Owner);
        assert_eq!(
            v["aaa"],
            Verdict::Conflict {
                with: vec!["zzz".into()],
                nodes: vec!["n1".into()]
            }
        );
    }

    #[test]
    fn acks_come_from_the_nodes_tunnel_entry() {
        let st = NodeTunnelState {
            tunnel: "t".into(),
            public_keys: vec![
                EpochPublicKey {
                    epoch: 3,
                    key: String::new(),
                },
                EpochPublicKey {
                    epoch: 4,
                    key: String::new(),
                },
            ],
            installed_epoch: Some(4),
            active_epoch: Some(3),
            usage: None,
        };
        let a = node_ack(Some(&st));
        assert_eq!(
            (a.published, a.installed, a.active),
            (Some(4), Some(4), Some(3))
        );
        assert_eq!(node_ack(None), NodeAck::default());
    }

    #[test]
    fn bounded_name_lists() {
        let names: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
        assert_eq!(some_names(&names, 3), "n0, n1, n2 and 2 more");
        assert_eq!(some_names(&names[..2], 3), "n0, n1");
    }
}
