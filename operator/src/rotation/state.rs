//! What the rotation state machine remembers (persisted in the tunnel's
//! status) and the per-node facts it is driven by.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A key epoch. Epoch 1 is the first; each rotation adds exactly one.
pub type Epoch = u64;

/// A member node, by Node name (the IPsecNode has the same name).
pub type Member = String;

/// Wall-clock time in whole Unix seconds.
///
/// Whole seconds because Kubernetes `Time` in a status has second
/// precision: a value that survives the status round trip unchanged keeps
/// an idle reconcile from ever seeing a difference to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp(pub i64);

impl Stamp {
    /// `self + d`, saturating.
    #[must_use]
    pub fn after(self, d: Duration) -> Stamp {
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Stamp(self.0.saturating_add(secs))
    }

    /// How long from `self` until `later` (zero if `later` is not later).
    #[must_use]
    pub fn until(self, later: Stamp) -> Duration {
        Duration::from_secs(u64::try_from(later.0.saturating_sub(self.0)).unwrap_or(0))
    }
}

/// Where a tunnel is in its rotation cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// One epoch in use; nothing in flight.
    Stable,
    /// PSK of the next epoch issued; members publish public keys for it.
    Prepare,
    /// Members install inbound SAs for the next epoch (accept both).
    Install,
    /// Members send with the next epoch (still accept the old one).
    Switch,
    /// Grace period; then the old epoch's SAs and PSK are deleted.
    Retire,
}

/// The phases of a rotation in progress (`Stable` is not one of them, so
/// "rotating in phase Stable" cannot be represented).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RotatingPhase {
    Prepare,
    Install,
    Switch,
    Retire,
}

impl RotatingPhase {
    /// The phase after this one, `None` after `Retire` (back to stable).
    #[must_use]
    pub fn next(self) -> Option<RotatingPhase> {
        match self {
            RotatingPhase::Prepare => Some(RotatingPhase::Install),
            RotatingPhase::Install => Some(RotatingPhase::Switch),
            RotatingPhase::Switch => Some(RotatingPhase::Retire),
            RotatingPhase::Retire => None,
        }
    }
}

impl From<RotatingPhase> for Phase {
    fn from(p: RotatingPhase) -> Phase {
        match p {
            RotatingPhase::Prepare => Phase::Prepare,
            RotatingPhase::Install => Phase::Install,
            RotatingPhase::Switch => Phase::Switch,
            RotatingPhase::Retire => Phase::Retire,
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Phase::Stable => "Stable",
            Phase::Prepare => "Prepare",
            Phase::Install => "Install",
            Phase::Switch => "Switch",
            Phase::Retire => "Retire",
        };
        f.write_str(s)
    }
}

/// Why a rotation started. Ordered by precedence: when several fire in
/// the same step, the greatest is reported as the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Trigger {
    /// `rotation.interval` (minus jitter) elapsed since the last rotation.
    Interval,
    /// A member reported `rotation.maxBytes` / `maxPackets` on one SA.
    Volume,
    /// The `meshsec.io/rotate` annotation changed.
    Manual,
    /// A member left; the next epoch must not be derivable by it.
    MemberLeft,
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Trigger::Interval => "Interval",
            Trigger::Volume => "Volume",
            Trigger::Manual => "Manual",
            Trigger::MemberLeft => "MemberLeft",
        };
        f.write_str(s)
    }
}

/// A rotation from `to - 1` to `to` in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    pub to: Epoch,
    pub phase: RotatingPhase,
    /// When `phase` was entered; the ack deadline counts from here, so a
    /// restart neither resets nor extends it.
    pub since: Stamp,
    pub reason: Trigger,
    /// Members of epoch `to`: the nodes whose acknowledgement is awaited.
    pub members: BTreeSet<Member>,
}

/// Everything the state machine remembers about one tunnel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelState {
    /// The last completed epoch (during a rotation: the one being left).
    pub epoch: Epoch,
    /// Members of `epoch`.
    pub members: BTreeSet<Member>,
    pub rotation: Option<Rotation>,
    /// When the tunnel was created (the start of epoch 1).
    pub created_at: Stamp,
    /// When the last rotation completed (the start of `epoch`).
    pub last_rotation_at: Option<Stamp>,
    /// The last `meshsec.io/rotate` value a rotation was started for.
    pub manual_token: Option<String>,
    /// A trigger that fired during a rotation and must be honoured by a
    /// fresh rotation right after it (a member left after the next PSK was
    /// already issued).
    pub pending: Option<Trigger>,
}

impl TunnelState {
    /// A new tunnel: epoch 1, no members yet.
    #[must_use]
    pub fn initial(created_at: Stamp) -> TunnelState {
        TunnelState {
            epoch: 1,
            members: BTreeSet::new(),
            rotation: None,
            created_at,
            last_rotation_at: None,
            manual_token: None,
            pending: None,
        }
    }

    /// When the interval trigger fires next (`None`: no interval). Not
    /// persisted: derived from when `epoch` started, so a changed interval
    /// applies at once and a restart computes the same instant.
    #[must_use]
    pub fn next_rotation_at(&self, policy: &Policy) -> Option<Stamp> {
        policy.next_rotation(self.last_rotation_at.unwrap_or(self.created_at), self.epoch)
    }

    #[must_use]
    pub fn phase(&self) -> Phase {
        self.rotation
            .as_ref()
            .map_or(Phase::Stable, |r| r.phase.into())
    }

    /// The epoch members send with.
    #[must_use]
    pub fn active_epoch(&self) -> Epoch {
        match &self.rotation {
            Some(r) if matches!(r.phase, RotatingPhase::Switch | RotatingPhase::Retire) => r.to,
            _ => self.epoch,
        }
    }

    /// Epochs whose keys must exist (PSK Secret holds exactly these).
    #[must_use]
    pub fn retained_epochs(&self) -> Vec<Epoch> {
        match &self.rotation {
            Some(r) => vec![self.epoch, r.to],
            None => vec![self.epoch],
        }
    }

    /// Whether `node` is a member of a retained epoch (its IPsecNode, and
    /// with it its node id, must then be kept: see [`crate::ids`]).
    #[must_use]
    pub fn retains(&self, node: &str) -> bool {
        self.members.contains(node)
            || self
                .rotation
                .as_ref()
                .is_some_and(|r| r.members.contains(node))
    }
}

/// The tunnel's rotation settings (spec plus operator flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Rotate this often (minus jitter); `None` disables the interval.
    pub interval: Option<Duration>,
    /// Rotate once a member reports this many bytes on one SA.
    pub max_bytes: Option<u64>,
    /// Rotate once a member reports this many packets on one SA.
    pub max_packets: Option<u64>,
    /// How long a phase waits for a member's acknowledgement.
    pub ack_timeout: Duration,
    /// How long the old epoch stays accepted after everyone switched.
    pub retire_grace: Duration,
    /// Per-tunnel seed for the interval jitter (e.g. a hash of the uid), so
    /// tunnels created together do not rotate together.
    pub jitter_seed: u64,
}

impl Policy {
    /// When to rotate away from `epoch`, which became current at `from`:
    /// `interval` minus up to 10 % jitter, derived from the seed and the
    /// epoch so a restart computes the same instant.
    #[must_use]
    pub fn next_rotation(&self, from: Stamp, epoch: Epoch) -> Option<Stamp> {
        let interval = self.interval?;
        let spread = interval.as_secs() / 10;
        let jitter = if spread == 0 {
            0
        } else {
            splitmix64(self.jitter_seed ^ epoch) % spread
        };
        Some(from.after(Duration::from_secs(interval.as_secs() - jitter)))
    }
}

/// SplitMix64: a tiny, well-distributed mixer (no security role; it only
/// spreads rotation instants).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SA usage a node reports for one epoch (the largest of its SAs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub epoch: Epoch,
    pub bytes: u64,
    pub packets: u64,
}

/// What one node's IPsecNode says about this tunnel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeAck {
    /// Highest epoch it published a public key for.
    pub published: Option<Epoch>,
    /// Highest epoch whose inbound SAs it installed.
    pub installed: Option<Epoch>,
    /// Epoch it sends with.
    pub active: Option<Epoch>,
    pub usage: Option<Usage>,
}

impl NodeAck {
    /// Has this node done everything `phase` of a rotation to `to` asks?
    /// Cumulative: installing implies having published, etc.
    #[must_use]
    pub fn has_acked(&self, phase: RotatingPhase, to: Epoch) -> bool {
        let at_least = |e: Option<Epoch>| e.is_some_and(|e| e >= to);
        let published = at_least(self.published);
        match phase {
            RotatingPhase::Prepare => published,
            RotatingPhase::Install => published && at_least(self.installed),
            RotatingPhase::Switch | RotatingPhase::Retire => {
                published && at_least(self.installed) && at_least(self.active)
            }
        }
    }
}
