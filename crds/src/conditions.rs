//! Condition vocabulary of both kinds and helpers to maintain a condition list
//! the way Kubernetes expects (lastTransitionTime moves only when status does).

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Condition `status` values.
pub mod status {
    /// The condition holds.
    pub const TRUE: &str = "True";
    /// The condition does not hold.
    pub const FALSE: &str = "False";
    /// Not known yet.
    pub const UNKNOWN: &str = "Unknown";
}

/// Condition types of `IPsecTunnel`.
pub mod tunnel {
    /// Every member node has a healthy datapath on the current epoch.
    pub const READY: &str = "Ready";
    /// A rotation is in progress (status.phase is not Stable).
    pub const ROTATING: &str = "Rotating";
    /// Some member misbehaves: missed an acknowledgement, reports an unhealthy datapath.
    pub const DEGRADED: &str = "Degraded";
    /// Some selected nodes already belong to an older tunnel; they are not applied here.
    pub const CONFLICT: &str = "Conflict";
}

/// Condition types of `IPsecNode`.
pub mod node {
    /// The operator admitted the node to a tunnel and allocated its id.
    pub const ADMITTED: &str = "Admitted";
    /// Reserved, not written by meshsec: readiness is what the node reports
    /// in its spec (`datapath.healthy`, installed/active epochs), in the
    /// same write as its acknowledgements, and what the tunnel counts in
    /// `status.nodesReady`. Another controller may set it.
    pub const READY: &str = "Ready";
}

/// Reasons (CamelCase, as the API requires).
pub mod reason {
    /// Ready=True: every member is healthy on the current epoch.
    pub const ALL_NODES_READY: &str = "AllNodesReady";
    /// Ready=False: some members are not (yet) healthy on the current epoch.
    pub const NODES_NOT_READY: &str = "NodesNotReady";
    /// Ready=False: the selector matches no node.
    pub const NO_MATCHING_NODES: &str = "NoMatchingNodes";
    /// Rotating=False.
    pub const STABLE: &str = "Stable";
    /// Rotating=True, rotation.interval elapsed.
    pub const INTERVAL_ELAPSED: &str = "IntervalElapsed";
    /// Rotating=True, rotation.maxBytes / maxPackets reached.
    pub const VOLUME_LIMIT_REACHED: &str = "VolumeLimitReached";
    /// Rotating=True, a member node left.
    pub const MEMBER_LEFT: &str = "MemberLeft";
    /// Rotating=True, the meshsec.io/rotate annotation changed.
    pub const MANUAL_ROTATION: &str = "ManualRotation";
    /// Degraded=True: a member did not acknowledge a rotation step within rotation.ackTimeout.
    pub const NODE_ACK_TIMEOUT: &str = "NodeAckTimeout";
    /// Degraded=True: a member reports an unhealthy datapath.
    pub const DATAPATH_UNHEALTHY: &str = "DatapathUnhealthy";
    /// Degraded=False.
    pub const AS_EXPECTED: &str = "AsExpected";
    /// Conflict=True: nodes are claimed by an older tunnel.
    pub const NODES_CLAIMED_BY_OTHER_TUNNEL: &str = "NodesClaimedByOtherTunnel";
    /// Conflict=False.
    pub const NO_CONFLICT: &str = "NoConflict";
    /// Admitted=True on an IPsecNode.
    pub const NODE_ID_ALLOCATED: &str = "NodeIdAllocated";
    /// Admitted=False: no tunnel selects the node.
    pub const NOT_SELECTED: &str = "NotSelected";
    /// Admitted=False: every 24-bit node id is taken.
    pub const NODE_ID_SPACE_EXHAUSTED: &str = "NodeIdSpaceExhausted";
    /// Ready=True on an IPsecNode.
    pub const DATAPATH_READY: &str = "DatapathReady";
    /// Ready=False on an IPsecNode: the sidecar has not installed the current epoch.
    pub const EPOCH_NOT_INSTALLED: &str = "EpochNotInstalled";
}

/// The condition of type `kind`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == kind)
}

/// Whether the condition of type `kind` is present with status True.
pub fn is_condition_true(conditions: &[Condition], kind: &str) -> bool {
    find_condition(conditions, kind).is_some_and(|c| c.status == status::TRUE)
}

/// Insert or update `new` by type. The existing lastTransitionTime is kept
/// when the status did not change, so it records real transitions only.
/// Returns whether anything changed (callers skip no-op status writes).
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            let changed = *old != new;
            *old = new;
            changed
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// Build a condition; `now` becomes lastTransitionTime unless
/// [`set_condition`] finds the status unchanged.
pub fn condition(
    kind: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: kind.to_owned(),
        status: if status { status::TRUE } else { status::FALSE }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn same_status_keeps_transition_time_but_updates_message() {
        let mut list = vec![];
        let first = condition(
            tunnel::READY,
            false,
            reason::NODES_NOT_READY,
            "0/2",
            Some(1),
            at(10),
        );
        assert!(set_condition(&mut list, first));
        let again = condition(
            tunnel::READY,
            false,
            reason::NODES_NOT_READY,
            "1/2",
            Some(1),
            at(20),
        );
        assert!(set_condition(&mut list, again));
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].message, "1/2");
        assert_eq!(list[0].last_transition_time, at(10));
    }

    #[test]
    fn status_change_moves_transition_time() {
        let mut list = vec![condition(
            tunnel::READY,
            false,
            reason::NODES_NOT_READY,
            "",
            None,
            at(10),
        )];
        let ready = condition(
            tunnel::READY,
            true,
            reason::ALL_NODES_READY,
            "",
            None,
            at(30),
        );
        assert!(set_condition(&mut list, ready));
        assert_eq!(list[0].last_transition_time, at(30));
        assert!(is_condition_true(&list, tunnel::READY));
        assert!(!is_condition_true(&list, tunnel::DEGRADED));
    }

    #[test]
    fn identical_condition_is_a_no_op() {
        let c = condition(
            node::ADMITTED,
            true,
            reason::NODE_ID_ALLOCATED,
            "id 256",
            Some(3),
            at(5),
        );
        let mut list = vec![c.clone()];
        let later = Condition {
            last_transition_time: at(99),
            ..c
        };
        assert!(!set_condition(&mut list, later));
        assert_eq!(list[0].last_transition_time, at(5));
    }

    #[test]
    fn other_types_are_left_alone() {
        let mut list = vec![condition(
            tunnel::READY,
            true,
            reason::ALL_NODES_READY,
            "",
            None,
            at(1),
        )];
        set_condition(
            &mut list,
            condition(
                tunnel::ROTATING,
                true,
                reason::MANUAL_ROTATION,
                "",
                None,
                at(2),
            ),
        );
        assert_eq!(list.len(), 2);
        assert!(find_condition(&list, tunnel::READY).is_some());
        assert_eq!(
            find_condition(&list, tunnel::ROTATING).unwrap().reason,
            "ManualRotation"
        );
    }
}
