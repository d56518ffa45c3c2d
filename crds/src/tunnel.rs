//! `IPsecTunnel`: the cluster-wide encryption policy and the tunnel it sets up.
//!
//! Doc comments on fields become the OpenAPI descriptions that
//! `kubectl explain ipsectunnel.spec.<field>` prints, so they are written for
//! the cluster operator, not for Rust readers.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mtu::Mtu;
use crate::selector::NodeSelector;
use crate::tunnel_status::IPsecTunnelStatus;

/// Smallest accepted `spec.replayWindow` (packets).
pub const REPLAY_WINDOW_MIN: i32 = 64;
/// Largest accepted `spec.replayWindow` (packets).
pub const REPLAY_WINDOW_MAX: i32 = 8192;
/// Default `spec.replayWindow`: the largest, room for reordering across
/// datapath workers. The receiver's cost is the same for every size (the
/// bitmap ring is sized for the largest); with 1024, `steering: hybrid`
/// dropped 546-1136 ESP packets per 10 s of bulk in 3 of 6 runs, with
/// 8192 none in 6 (docs/datapath.md, Latency).
pub const REPLAY_WINDOW_DEFAULT: i32 = 8192;
/// IANA NAT-T port, RFC 3948.
pub const UDP_ENCAP_PORT_DEFAULT: i32 = 4500;
/// Longest tunnel name: it ends up in label values (63 characters max).
pub const TUNNEL_NAME_MAX: usize = 63;

/// IPsecTunnel is the cluster-wide encryption policy: it selects the nodes whose pod-to-pod traffic is protected with IPsec ESP, and how.
// Several printcolumn(...) share `type_ = "string"`: not a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "meshsec.io",
    version = "v1alpha1",
    kind = "IPsecTunnel",
    plural = "ipsectunnels",
    singular = "ipsectunnel",
    shortname = "ipt",
    category = "meshsec",
    status = "IPsecTunnelStatus",
    derive = "PartialEq",
    doc = "IPsecTunnel encrypts pod-to-pod traffic between the nodes it selects with IPsec ESP. It is both the tunnel and the cluster-wide encryption policy; a node may be selected by at most one tunnel.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode", description = "Transport or Tunnel"),
    printcolumn(name = "Cipher", type_ = "string", json_path = ".spec.cipher", description = "ESP transform"),
    printcolumn(name = "Epoch", type_ = "integer", json_path = ".status.epoch", description = "Key epoch used for sending"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Rotation phase"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.nodesReady", description = "Member nodes with a healthy datapath on the current epoch"),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.nodesTotal", description = "Member nodes selected by this tunnel"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 63").message("metadata.name must be at most 63 characters: it is used in label values and in the PSK Secret name"),
)]
#[x_kube(validation = Rule::new("self.mode != 'Tunnel' || self.cipher != 'AES128GMAC'").message("mode: Tunnel hides pod addresses, which needs encryption; cipher AES128GMAC is integrity-only, use AES128GCM or AES256GCM"))]
#[serde(rename_all = "camelCase")]
pub struct IPsecTunnelSpec {
    /// Which nodes take part, by node labels (matchLabels and matchExpressions are ANDed). Empty selects every node. Two tunnels may not select the same node: the later one gets a Conflict condition and is not applied to that node.
    #[serde(default)]
    pub node_selector: NodeSelector,

    /// ESP mode. Transport (default) keeps pod IP headers and protects the payload; Tunnel wraps each pod packet in a node-to-node packet and hides pod addresses. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("mode is immutable: changing it in place would break traffic; create a new IPsecTunnel instead"))]
    pub mode: TunnelMode,

    /// ESP transform: AES128GCM (default), AES256GCM, or AES128GMAC (integrity only, no confidentiality: the AH-like option). Immutable: both ends of every SA must agree, so a change needs a new IPsecTunnel.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("cipher is immutable: changing it in place would break traffic; create a new IPsecTunnel instead"))]
    pub cipher: Cipher,

    /// How ESP packets travel between nodes: UDP-encapsulated (RFC 3948, default, passes NAT and firewalls that drop IP protocol 50) or raw ESP (type None).
    #[serde(default)]
    pub encapsulation: Encapsulation,

    /// When keys are rotated. A rotation also happens when a member node leaves the tunnel and on demand when the meshsec.io/rotate annotation changes.
    #[serde(default)]
    pub rotation: Rotation,

    /// Anti-replay window in packets (RFC 4303 ESN window): a power of two from 64 to 8192. Larger windows tolerate more reordering across datapath queues.
    #[serde(default = "default_replay_window")]
    #[schemars(range(min = 64, max = 8192))]
    #[x_kube(validation = Rule::new("self in [64, 128, 256, 512, 1024, 2048, 4096, 8192]").message("replayWindow must be a power of two between 64 and 8192 (64, 128, 256, 512, 1024, 2048, 4096 or 8192)"))]
    pub replay_window: i32,

    /// Pod interface MTU: "auto" (default) lowers the node's underlay MTU by the exact ESP overhead; an integer from 1280 to 9000 sets it explicitly.
    #[serde(default)]
    #[x_kube(validation = Rule::new("type(self) == string ? self == 'auto' : (self >= 1280 && self <= 9000)").message("mtu must be \"auto\" or an integer between 1280 and 9000"))]
    pub mtu: Mtu,

    /// Fail closed in both directions: also drop unencrypted traffic arriving from member nodes' pod CIDRs. Outbound traffic to members is always encrypted or dropped.
    #[serde(default)]
    pub strict: bool,
}

fn default_replay_window() -> i32 {
    REPLAY_WINDOW_DEFAULT
}

/// ESP mode.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum TunnelMode {
    // Pod IP headers stay; the L4 payload is sealed.
    #[default]
    Transport,
    // Node-to-node outer header; the whole pod packet is sealed.
    Tunnel,
}

/// ESP transform.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum Cipher {
    // AES-GCM with a 128-bit key (RFC 4106).
    #[default]
    #[serde(rename = "AES128GCM")]
    Aes128Gcm,
    // AES-GCM with a 256-bit key (RFC 4106).
    #[serde(rename = "AES256GCM")]
    Aes256Gcm,
    // AES-GMAC, integrity only (RFC 4543).
    #[serde(rename = "AES128GMAC")]
    Aes128Gmac,
}

impl Cipher {
    /// AEAD key length in bytes (the 4-byte salt comes on top).
    pub fn key_len(self) -> usize {
        match self {
            Cipher::Aes128Gcm | Cipher::Aes128Gmac => 16,
            Cipher::Aes256Gcm => 32,
        }
    }

    /// Whether the payload is confidential (GMAC only authenticates it).
    pub fn encrypts(self) -> bool {
        !matches!(self, Cipher::Aes128Gmac)
    }

    /// The API spelling, also used as key-schedule input.
    pub fn as_str(self) -> &'static str {
        match self {
            Cipher::Aes128Gcm => "AES128GCM",
            Cipher::Aes256Gcm => "AES256GCM",
            Cipher::Aes128Gmac => "AES128GMAC",
        }
    }
}

/// How ESP is carried between nodes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Encapsulation {
    /// UDP (default): ESP inside UDP (RFC 3948). None: raw ESP, IP protocol 50. Immutable.
    #[serde(default, rename = "type")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("encapsulation.type is immutable: nodes would stop understanding each other mid-change; create a new IPsecTunnel instead"))]
    pub kind: EncapsulationType,

    /// UDP port for type UDP (default 4500), 1 to 65535. Ignored when type is None.
    #[serde(default = "default_udp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for Encapsulation {
    fn default() -> Self {
        Encapsulation {
            kind: EncapsulationType::default(),
            port: UDP_ENCAP_PORT_DEFAULT,
        }
    }
}

fn default_udp_port() -> i32 {
    UDP_ENCAP_PORT_DEFAULT
}

/// ESP carrier.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum EncapsulationType {
    // ESP-in-UDP, RFC 3948.
    #[default]
    #[serde(rename = "UDP")]
    Udp,
    // Raw ESP, IP protocol 50.
    None,
}

/// Rotation policy. Durations use Go syntax ("90s", "15m", "24h", "1h30m").
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// Time between key rotations, from 10s to 720h (default 1h). Each epoch has fresh keys, so this bounds how much traffic one compromised key exposes.
    #[serde(default = "default_interval")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(format!("self.matches('{}') && duration(self) >= duration('10s') && duration(self) <= duration('720h')", crate::validate::DURATION_PATTERN)).message("rotation.interval must be a duration such as 1h or 30m, between 10s and 720h"))]
    pub interval: String,

    /// Rotate once any SA of the current epoch has protected this many bytes, from 1Mi (1048576) to 2^50 (default 64Gi).
    #[serde(default = "default_max_bytes")]
    #[schemars(range(min = 1_048_576, max = 1_125_899_906_842_624_i64))]
    pub max_bytes: i64,

    /// Rotate once any SA of the current epoch has sent this many packets, from 1024 to 2^40 (default 2^31). Sequence numbers never wrap: keys change long before.
    #[serde(default = "default_max_packets")]
    #[schemars(range(min = 1024, max = 1_099_511_627_776_i64))]
    pub max_packets: i64,

    /// How long SAs of the previous epoch stay installed after the switch, so packets in flight still decrypt: 1s to 10m (default 30s).
    #[serde(default = "default_grace_period")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(format!("self.matches('{}') && duration(self) >= duration('1s') && duration(self) <= duration('10m')", crate::validate::DURATION_PATTERN)).message("rotation.gracePeriod must be a duration such as 30s, between 1s and 10m"))]
    pub grace_period: String,

    /// How long a member node may take to acknowledge a rotation step before it is reported (Degraded condition, Event) and cut off from the new epoch: 5s to 1h (default 2m).
    #[serde(default = "default_ack_timeout")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(format!("self.matches('{}') && duration(self) >= duration('5s') && duration(self) <= duration('1h')", crate::validate::DURATION_PATTERN)).message("rotation.ackTimeout must be a duration such as 2m, between 5s and 1h"))]
    pub ack_timeout: String,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            interval: default_interval(),
            max_bytes: default_max_bytes(),
            max_packets: default_max_packets(),
            grace_period: default_grace_period(),
            ack_timeout: default_ack_timeout(),
        }
    }
}

fn default_interval() -> String {
    "1h".to_owned()
}

fn default_max_bytes() -> i64 {
    64 << 30
}

fn default_max_packets() -> i64 {
    1 << 31
}

fn default_grace_period() -> String {
    "30s".to_owned()
}

fn default_ack_timeout() -> String {
    "2m".to_owned()
}

impl Default for IPsecTunnelSpec {
    fn default() -> Self {
        IPsecTunnelSpec {
            node_selector: NodeSelector::default(),
            mode: TunnelMode::default(),
            cipher: Cipher::default(),
            encapsulation: Encapsulation::default(),
            rotation: Rotation::default(),
            replay_window: REPLAY_WINDOW_DEFAULT,
            mtu: Mtu::default(),
            strict: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_spec_deserializes_to_the_documented_defaults() {
        let spec: IPsecTunnelSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(spec, IPsecTunnelSpec::default());
        assert_eq!(spec.mode, TunnelMode::Transport);
        assert_eq!(spec.cipher, Cipher::Aes128Gcm);
        assert_eq!(spec.encapsulation.kind, EncapsulationType::Udp);
        assert_eq!(spec.encapsulation.port, 4500);
        assert_eq!(spec.replay_window, 8192);
        assert_eq!(spec.rotation.interval, "1h");
        assert_eq!(spec.mtu, Mtu::Auto);
        assert!(!spec.strict);
    }

    #[test]
    fn enums_use_the_api_spelling() {
        let spec: IPsecTunnelSpec = serde_json::from_str(
            r#"{"mode":"Tunnel","cipher":"AES256GCM","encapsulation":{"type":"None"}}"#,
        )
        .unwrap();
        assert_eq!(spec.mode, TunnelMode::Tunnel);
        assert_eq!(spec.cipher, Cipher::Aes256Gcm);
        assert_eq!(spec.encapsulation.kind, EncapsulationType::None);
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(back["cipher"], "AES256GCM");
        assert_eq!(back["encapsulation"]["type"], "None");
        assert!(serde_json::from_str::<IPsecTunnelSpec>(r#"{"cipher":"aes128gcm"}"#).is_err());
    }

    #[test]
    fn cipher_properties() {
        assert_eq!(Cipher::Aes128Gcm.key_len(), 16);
        assert_eq!(Cipher::Aes256Gcm.key_len(), 32);
        assert_eq!(Cipher::Aes128Gmac.key_len(), 16);
        assert!(!Cipher::Aes128Gmac.encrypts());
        assert!(Cipher::Aes256Gcm.encrypts());
        for c in [Cipher::Aes128Gcm, Cipher::Aes256Gcm, Cipher::Aes128Gmac] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }
}
