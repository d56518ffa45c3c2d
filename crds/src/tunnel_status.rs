//! `IPsecTunnel` status: written only by the operator (the Lease holder).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;

/// Observed state of an IPsecTunnel, maintained by the meshsec operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IPsecTunnelStatus {
    /// metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Rotating, Degraded and Conflict conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Key epoch members send with. Starts at 0 and only grows.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub epoch: i64,

    /// Rotation phase: Stable, Prepare (next epoch's PSK written, nodes publish keys), Install (nodes accept both epochs), Switch (nodes send with the next epoch), Retire (the old epoch's SAs and keys are deleted after the grace period).
    #[serde(default)]
    pub phase: RotationPhase,

    /// When the current phase began; acknowledgement timeouts count from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<Time>,

    /// What started the rotation in progress (absent when Stable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_trigger: Option<RotationTrigger>,

    /// When the last rotation completed its Switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,

    /// Member nodes whose datapath is healthy with the current epoch installed.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub nodes_ready: i32,

    /// Nodes selected by this tunnel and admitted to it.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub nodes_total: i32,

    /// Names of the member nodes, sorted and unique. A name leaving this list triggers a rotation. Atomic: only the operator writes it, always whole (per-name field ownership made server-side apply and every read of a large tunnel several times more expensive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16384))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub members: Vec<String>,

    /// During a rotation: the member nodes of the next epoch, sorted and unique (the nodes whose acknowledgement the current phase waits for). Empty when Stable. Atomic, like members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16384))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub next_members: Vec<String>,

    /// The last meshsec.io/rotate annotation value a rotation was started for; a different value asks for another rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub rotate_request: Option<String>,

    /// A trigger that fired during the rotation in progress and starts another rotation right after it (a member left after the next epoch's PSK was issued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_trigger: Option<RotationTrigger>,
}

/// Make-before-break rotation phase.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum RotationPhase {
    // No rotation in progress.
    #[default]
    Stable,
    // PSK for epoch+1 written; nodes publish public keys for it.
    Prepare,
    // Nodes install inbound SAs for epoch+1 (accepting both epochs).
    Install,
    // Nodes send with epoch+1.
    Switch,
    // Old epoch's SAs and keys are deleted after the grace period.
    Retire,
}

impl RotationPhase {
    /// The phase that follows this one in a rotation; Retire ends in Stable.
    pub fn next(self) -> RotationPhase {
        match self {
            RotationPhase::Stable => RotationPhase::Prepare,
            RotationPhase::Prepare => RotationPhase::Install,
            RotationPhase::Install => RotationPhase::Switch,
            RotationPhase::Switch => RotationPhase::Retire,
            RotationPhase::Retire => RotationPhase::Stable,
        }
    }

    /// Whether a rotation is in progress.
    pub fn is_rotating(self) -> bool {
        self != RotationPhase::Stable
    }

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RotationPhase::Stable => "Stable",
            RotationPhase::Prepare => "Prepare",
            RotationPhase::Install => "Install",
            RotationPhase::Switch => "Switch",
            RotationPhase::Retire => "Retire",
        }
    }
}

/// Why a rotation started.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RotationTrigger {
    // rotation.interval elapsed.
    Interval,
    // rotation.maxBytes or rotation.maxPackets reached.
    Volume,
    // A member node left; it must not learn the next epoch's keys.
    MemberLeft,
    // The meshsec.io/rotate annotation changed.
    Manual,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_walks_every_phase_and_returns_to_stable() {
        let mut phase = RotationPhase::Stable;
        let mut seen = vec![];
        for _ in 0..5 {
            phase = phase.next();
            seen.push(phase.as_str());
        }
        assert_eq!(seen, ["Prepare", "Install", "Switch", "Retire", "Stable"]);
        assert!(!RotationPhase::Stable.is_rotating());
        assert!(RotationPhase::Install.is_rotating());
    }

    #[test]
    fn empty_status_is_stable_epoch_zero() {
        let s: IPsecTunnelStatus = serde_json::from_str("{}").unwrap();
        assert_eq!(s, IPsecTunnelStatus::default());
        assert_eq!(s.phase, RotationPhase::Stable);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"epoch": 0, "phase": "Stable", "nodesReady": 0, "nodesTotal": 0})
        );
    }

    #[test]
    fn phase_spelling_matches_serde() {
        for p in [
            RotationPhase::Stable,
            RotationPhase::Prepare,
            RotationPhase::Install,
            RotationPhase::Switch,
            RotationPhase::Retire,
        ] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
    }
}
