//! `IPsecNode`: one per node. The node's sidecar writes the spec (what it
//! offers: endpoint, keys, epochs, datapath health); the operator writes the
//! status (whether it is admitted, and its node id).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;

/// Smallest node id: ids fill the low 24 bits of every SPI, and SPIs below 256 are reserved (RFC 4303), so no id below 256 is ever allocated.
pub const NODE_ID_MIN: i32 = 256;
/// Largest node id (24 bits).
pub const NODE_ID_MAX: i32 = 0xFF_FFFF;
/// Most public keys a node publishes per tunnel: previous, current, next epoch (+1 spare).
pub const KEYS_PER_TUNNEL_MAX: usize = 4;

/// IPsecNode describes one node's part in meshsec: written by that node's sidecar, admitted by the operator. Its name is the Node's name and it is owned by the Node.
// Several printcolumn(...) share `type_ = "string"`: not a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "meshsec.io",
    version = "v1alpha1",
    kind = "IPsecNode",
    plural = "ipsecnodes",
    singular = "ipsecnode",
    shortname = "ipn",
    category = "meshsec",
    status = "IPsecNodeStatus",
    derive = "PartialEq",
    doc = "IPsecNode is one node's part in meshsec: its endpoint, pod CIDRs, published X25519 public keys and datapath health (written by the node's sidecar), and its admission and node id (status, written by the operator).",
    printcolumn(
        name = "ID",
        type_ = "integer",
        json_path = ".status.nodeId",
        description = "24-bit node id used in SPIs"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".spec.endpoint",
        description = "Underlay IP address"
    ),
    printcolumn(
        name = "Epoch",
        type_ = "integer",
        json_path = ".spec.tunnels[0].activeEpoch",
        description = "Epoch the node sends with"
    ),
    printcolumn(
        name = "Healthy",
        type_ = "boolean",
        json_path = ".spec.datapath.healthy",
        description = "Datapath healthy, as the node's sidecar reports it (in the same write as its rotation acknowledgements)"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct IPsecNodeSpec {
    /// Underlay IP address other nodes send ESP to (IPv4 or IPv6).
    #[schemars(length(max = 45))]
    #[x_kube(validation = Rule::new("isIP(self)").message("endpoint must be an IPv4 or IPv6 address such as 192.0.2.10 or 2001:db8::10"))]
    pub endpoint: String,

    /// Pod CIDRs of this node (at most one per IP family plus spares, up to 4), e.g. 10.244.1.0/24. Host bits must be zero.
    #[serde(default, rename = "podCIDRs")]
    #[schemars(length(max = 4), inner(length(max = 49)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c) && cidr(c).masked() == cidr(c))").message("podCIDRs entries must be network CIDRs with host bits zero, such as 10.244.1.0/24 or fd00:10:244:1::/64"))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub pod_cidrs: Vec<String>,

    /// Key generation, bumped by the sidecar at every start so keys and SPIs are never reused across restarts. Never decreases.
    #[serde(default)]
    #[schemars(range(min = 0))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("keyGeneration must never decrease: a restart bumps it so old keys are never reused"))]
    pub key_generation: i64,

    /// Per-tunnel state: published public keys and installed/active epochs.
    #[serde(default)]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["tunnel".into()]))]
    pub tunnels: Vec<NodeTunnelState>,

    /// Health and counters of the node's datapath.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapath: Option<DatapathStatus>,
}

/// The node's view of one tunnel.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[x_kube(validation = Rule::new("!has(self.activeEpoch) || (has(self.installedEpoch) && self.activeEpoch <= self.installedEpoch)").message("tunnels[].activeEpoch must not exceed installedEpoch: a node sends only with an epoch whose inbound SAs it has installed"))]
#[serde(rename_all = "camelCase")]
pub struct NodeTunnelState {
    /// Name of the IPsecTunnel.
    #[schemars(length(min = 1, max = 63))]
    pub tunnel: String,

    /// X25519 public keys this node offers for the tunnel, one per epoch (at most 4).
    #[serde(default)]
    #[schemars(length(max = 4))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["epoch".into()]))]
    pub public_keys: Vec<EpochPublicKey>,

    /// Highest epoch whose inbound SAs are installed (the node accepts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub installed_epoch: Option<i64>,

    /// Epoch the node sends with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub active_epoch: Option<i64>,
    /// Traffic on this node's busiest outbound SA of one epoch (the operator rotates when it reaches rotation.maxBytes or rotation.maxPackets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<EpochUsage>,
}

/// Traffic on the busiest outbound SA of one epoch.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EpochUsage {
    /// The epoch the counters belong to.
    #[schemars(range(min = 0))]
    pub epoch: i64,
    /// Plaintext bytes sealed with that SA.
    #[schemars(range(min = 0))]
    pub bytes: i64,
    /// Packets sent with that SA.
    #[schemars(range(min = 0))]
    pub packets: i64,
}

/// One published public key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EpochPublicKey {
    /// Key epoch this key belongs to.
    #[schemars(range(min = 0))]
    pub epoch: i64,

    /// X25519 public key, standard base64 of 32 bytes (44 characters ending in '=').
    #[schemars(length(max = 44))]
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", crate::pubkey::PUBLIC_KEY_PATTERN)).message("publicKeys[].key must be a base64-encoded 32-byte X25519 public key (44 characters ending in '=')"))]
    pub key: String,
}

/// Datapath health and traffic counters, as last reported by the sidecar.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DatapathStatus {
    /// Whether the datapath is up and fail-closed routing is in place.
    #[serde(default)]
    pub healthy: bool,

    /// Why the datapath is unhealthy, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,

    /// When the sidecar last wrote this report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report_time: Option<Time>,

    /// Traffic counters since the sidecar started.
    #[serde(default)]
    pub counters: DatapathCounters,
}

/// Counters since the sidecar started (they reset with keyGeneration).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DatapathCounters {
    /// Plaintext bytes sealed and sent.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub tx_bytes: i64,
    /// ESP packets sent.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub tx_packets: i64,
    /// Plaintext bytes received after successful decryption.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub rx_bytes: i64,
    /// ESP packets received and accepted.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub rx_packets: i64,
    /// Inbound packets dropped because authentication failed.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub auth_failures: i64,
    /// Inbound packets dropped as replays or too old for the window.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub replay_drops: i64,
    /// Inbound packets dropped for an unknown SPI.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub unknown_spi_drops: i64,
}

/// Operator's decision about a node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(oldSelf.nodeId) || (has(self.nodeId) && self.nodeId == oldSelf.nodeId)").message("status.nodeId is immutable once allocated: delete the IPsecNode to get a new id"))]
#[serde(rename_all = "camelCase")]
pub struct IPsecNodeStatus {
    /// metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Node id (24 bits, 256 to 16777215) used in the low bits of SPIs and in key derivation. Immutable once allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 256, max = 16_777_215))]
    pub node_id: Option<i32>,

    /// Whether the operator admitted this node to a tunnel.
    #[serde(default)]
    pub admitted: bool,

    /// The IPsecTunnel this node belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub tunnel: Option<String>,

    /// The Admitted condition (written by the operator). meshsec writes no Ready condition here: a node's readiness is its own report (spec.datapath.healthy, the Healthy column) plus its installed/active epochs, all in the one write that acknowledges a phase; a status condition would cost every node a second write.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

impl IPsecNodeSpec {
    /// This node's state for `tunnel`, if it has any.
    pub fn tunnel(&self, tunnel: &str) -> Option<&NodeTunnelState> {
        self.tunnels.iter().find(|t| t.tunnel == tunnel)
    }
}

impl NodeTunnelState {
    /// The public key published for `epoch`, if any.
    pub fn key_for(&self, epoch: i64) -> Option<&str> {
        self.public_keys
            .iter()
            .find(|k| k.epoch == epoch)
            .map(|k| k.key.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_in_api_spelling() {
        let json = serde_json::json!({
            "endpoint": "192.0.2.10",
            "podCIDRs": ["10.244.1.0/24"],
            "keyGeneration": 3,
            "tunnels": [{
                "tunnel": "default",
                "publicKeys": [{"epoch": 7, "key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}],
                "installedEpoch": 7,
                "activeEpoch": 7
            }],
            "datapath": {"healthy": true, "counters": {"txBytes": 1, "txPackets": 2, "rxBytes": 3, "rxPackets": 4, "authFailures": 5, "replayDrops": 6, "unknownSpiDrops": 7}}
        });
        let spec: IPsecNodeSpec = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(spec.pod_cidrs, ["10.244.1.0/24"]);
        assert_eq!(
            spec.tunnel("default").unwrap().key_for(7),
            Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        );
        assert_eq!(spec.tunnel("default").unwrap().key_for(8), None);
        assert!(spec.tunnel("other").is_none());
        assert_eq!(serde_json::to_value(&spec).unwrap(), json);
    }

    #[test]
    fn node_id_bounds_leave_spis_below_256_unused() {
        assert_eq!(NODE_ID_MIN, 256);
        assert_eq!(NODE_ID_MAX, (1 << 24) - 1);
    }
}
