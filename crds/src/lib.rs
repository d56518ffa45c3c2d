//! The meshsec.io API: the `IPsecTunnel` policy and the per-node `IPsecNode`
//! custom resources, their condition vocabulary, and pure helpers that mirror
//! the server-side validation so callers can check values before writing them.
//!
//! Both kinds are cluster-scoped, group [`GROUP`], version [`VERSION`]. The
//! YAML manifests in `crds/` are generated from these types by `crdgen`
//! (see [`manifests`]); a test fails when they drift.

pub mod conditions;
pub mod manifests;
pub mod mtu;
pub mod node;
pub mod pubkey;
pub mod selector;
pub mod tunnel;
pub mod tunnel_status;
pub mod validate;

pub use conditions::{Condition, find_condition, is_condition_true, set_condition};
pub use mtu::Mtu;
pub use node::{
    DatapathCounters, DatapathStatus, EpochPublicKey, EpochUsage, IPsecNode, IPsecNodeSpec,
    IPsecNodeStatus, NodeTunnelState,
};
pub use pubkey::{PublicKeyError, decode_public_key, encode_public_key};
pub use selector::{NodeSelector, NodeSelectorRequirement, SelectorOperator};
pub use tunnel::{
    Cipher, Encapsulation, EncapsulationType, IPsecTunnel, IPsecTunnelSpec, Rotation, TunnelMode,
};
pub use tunnel_status::{IPsecTunnelStatus, RotationPhase, RotationTrigger};

/// API group of every meshsec kind.
pub const GROUP: &str = "meshsec.io";
/// API version served and stored.
pub const VERSION: &str = "v1alpha1";

/// Annotation on an `IPsecTunnel`: setting it to a new value asks the
/// operator for a rotation now (the "manual" trigger).
pub const ANNOTATION_ROTATE: &str = "meshsec.io/rotate";

/// Name of the Secret (in the operator's namespace) holding a tunnel's
/// per-epoch pre-shared keys.
pub fn psk_secret_name(tunnel: &str) -> String {
    format!("meshsec-psk-{tunnel}")
}
