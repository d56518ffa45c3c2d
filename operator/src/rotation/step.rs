//! One step of the rotation state machine.
//!
//! Rules (docs/operator.md explains them for operators):
//! - At most one phase transition per step; the caller persists the new
//!   state before the next step, so a transition is never taken twice.
//! - A member that left is removed at once. In `Stable` that starts a
//!   rotation; during a rotation the next PSK has already been issued while
//!   it was a member, so a fresh rotation is queued (`pending`) right after.
//! - Ack timeout: a phase waits at most `ack_timeout` from when it was
//!   entered. Members that have not acknowledged by then are evicted from
//!   the next epoch (Note::Evicted -> Degraded + Warning Event) and the
//!   rotation continues with the rest. An evicted node rejoins when it has
//!   caught up with the phase in progress (or, once stable, when it
//!   publishes a key for the current epoch); no rotation is needed for it.
//! - Prepare is skipped when every member has already published its public
//!   key for the next epoch: sidecars publish it as soon as the current
//!   epoch starts (public keys need no PSK), so the only per-node writes a
//!   rotation waits for are the Install and Switch acknowledgements.
//! - Triggers that fire together start one rotation; the reason is the one
//!   with the highest precedence. A manual request seen after a rotation
//!   started is honoured by another rotation after it completes; an
//!   interval that falls due during a rotation is not (the interval restarts
//!   when the rotation completes).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::state::{
    Epoch, Member, NodeAck, Policy, RotatingPhase, Rotation, Stamp, Trigger, TunnelState,
};

/// What the controller observed for this step.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    pub now: Stamp,
    /// Nodes eligible for membership: selected by the tunnel, admitted
    /// (node id allocated), keyed by node name.
    pub nodes: &'a BTreeMap<Member, NodeAck>,
    /// Current value of the `meshsec.io/rotate` annotation.
    pub manual_token: Option<&'a str>,
}

/// Something worth an Event (and a log line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    Started {
        to: Epoch,
        reason: Trigger,
        /// The first phase: Prepare, or Install when every member had
        /// already published its key for `to`.
        phase: RotatingPhase,
    },
    PhaseChanged {
        to: Epoch,
        phase: crate::rotation::Phase,
    },
    Completed {
        epoch: Epoch,
    },
    /// Members that left (removed from every retained epoch).
    MembersLeft {
        nodes: Vec<Member>,
    },
    /// Members that did not acknowledge `phase` within the ack timeout.
    Evicted {
        to: Epoch,
        phase: RotatingPhase,
        nodes: Vec<Member>,
    },
}

/// The result of a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub state: TunnelState,
    pub notes: Vec<Note>,
    /// Step again after this long even if nothing changes (a deadline).
    pub requeue_after: Option<Duration>,
}

/// Advance the state machine by at most one transition.
#[must_use]
pub fn step(prev: &TunnelState, obs: &Observation<'_>, policy: &Policy) -> Decision {
    let mut s = prev.clone();
    let mut notes = Vec::new();

    let left = remove_departed(&mut s, obs.nodes);
    let mut fired = BTreeSet::new();
    if !left.is_empty() {
        notes.push(Note::MembersLeft { nodes: left });
        if s.rotation.is_some() {
            s.pending = s.pending.max(Some(Trigger::MemberLeft));
        } else {
            fired.insert(Trigger::MemberLeft);
        }
    }
    admit_joiners(&mut s, obs.nodes);

    match s.rotation.take() {
        Some(rotation) => progress(&mut s, rotation, obs, policy, &mut notes),
        None => maybe_start(&mut s, fired, obs, policy, &mut notes),
    }

    let requeue_after = if notes.iter().any(is_transition) {
        // Let the persisted state settle, then look again.
        Some(Duration::ZERO)
    } else {
        next_deadline(&s, policy).map(|at| obs.now.until(at))
    };
    Decision {
        state: s,
        notes,
        requeue_after,
    }
}

fn is_transition(n: &Note) -> bool {
    matches!(
        n,
        Note::Started { .. } | Note::PhaseChanged { .. } | Note::Completed { .. }
    )
}

/// Drop members that are no longer eligible from every retained epoch.
fn remove_departed(s: &mut TunnelState, nodes: &BTreeMap<Member, NodeAck>) -> Vec<Member> {
    let gone = |set: &BTreeSet<Member>| -> Vec<Member> {
        set.iter()
            .filter(|n| !nodes.contains_key(*n))
            .cloned()
            .collect()
    };
    let mut left: BTreeSet<Member> = gone(&s.members).into_iter().collect();
    s.members.retain(|n| nodes.contains_key(n));
    if let Some(r) = s.rotation.as_mut() {
        left.extend(gone(&r.members));
        r.members.retain(|n| nodes.contains_key(n));
    }
    left.into_iter().collect()
}

/// Eligible nodes become members once they have caught up: for the stable
/// epoch, a published key; for a rotation, the phase in progress.
fn admit_joiners(s: &mut TunnelState, nodes: &BTreeMap<Member, NodeAck>) {
    for (name, ack) in nodes {
        if !s.members.contains(name) && ack.published.is_some_and(|e| e >= s.epoch) {
            s.members.insert(name.clone());
        }
        if let Some(r) = s.rotation.as_mut()
            && !r.members.contains(name)
            && ack.has_acked(r.phase, r.to)
        {
            r.members.insert(name.clone());
        }
    }
}

fn maybe_start(
    s: &mut TunnelState,
    mut fired: BTreeSet<Trigger>,
    obs: &Observation<'_>,
    policy: &Policy,
    notes: &mut Vec<Note>,
) {
    if let Some(p) = s.pending.take() {
        fired.insert(p);
    }
    if obs.manual_token.is_some() && obs.manual_token != s.manual_token.as_deref() {
        fired.insert(Trigger::Manual);
    }
    if over_limit(s, obs.nodes, policy) {
        fired.insert(Trigger::Volume);
    }
    if s.next_rotation_at(policy).is_some_and(|at| obs.now >= at) {
        fired.insert(Trigger::Interval);
    }
    let Some(reason) = fired.last().copied() else {
        return;
    };
    // Every request seen so far is served by this rotation.
    s.manual_token = obs.manual_token.map(str::to_owned);
    let to = s.epoch + 1;
    // The PSK for `to` is issued now, after every departure seen so far, so
    // a key published early by a node that has left derives nothing: it is
    // not among the members, and public keys alone give no SA.
    let phase = if s.members.iter().all(|m| {
        obs.nodes
            .get(m)
            .is_some_and(|a| a.has_acked(RotatingPhase::Prepare, to))
    }) {
        RotatingPhase::Install
    } else {
        RotatingPhase::Prepare
    };
    s.rotation = Some(Rotation {
        to,
        phase,
        since: obs.now,
        reason,
        members: s.members.clone(),
    });
    notes.push(Note::Started { to, reason, phase });
}

/// Has any member of the current epoch used an SA past a limit?
fn over_limit(s: &TunnelState, nodes: &BTreeMap<Member, NodeAck>, policy: &Policy) -> bool {
    s.members
        .iter()
        .filter_map(|n| nodes.get(n)?.usage)
        .any(|u| {
            u.epoch == s.epoch
                && (policy.max_bytes.is_some_and(|m| u.bytes >= m)
                    || policy.max_packets.is_some_and(|m| u.packets >= m))
        })
}

fn progress(
    s: &mut TunnelState,
    mut r: Rotation,
    obs: &Observation<'_>,
    policy: &Policy,
    notes: &mut Vec<Note>,
) {
    if r.phase == RotatingPhase::Retire {
        if obs.now >= r.since.after(policy.retire_grace) {
            complete(s, r, obs.now, notes);
        } else {
            s.rotation = Some(r);
        }
        return;
    }
    let waiting: Vec<Member> = r
        .members
        .iter()
        .filter(|n| {
            !obs.nodes
                .get(*n)
                .is_some_and(|a| a.has_acked(r.phase, r.to))
        })
        .cloned()
        .collect();
    if !waiting.is_empty() {
        if obs.now < r.since.after(policy.ack_timeout) {
            s.rotation = Some(r);
            return;
        }
        for n in &waiting {
            r.members.remove(n);
        }
        notes.push(Note::Evicted {
            to: r.to,
            phase: r.phase,
            nodes: waiting,
        });
    }
    if let Some(next) = r.phase.next() {
        r.phase = next;
        r.since = obs.now;
        notes.push(Note::PhaseChanged {
            to: r.to,
            phase: next.into(),
        });
        s.rotation = Some(r);
    }
}

fn complete(s: &mut TunnelState, r: Rotation, now: Stamp, notes: &mut Vec<Note>) {
    s.epoch = r.to;
    s.members = r.members;
    s.last_rotation_at = Some(now);
    notes.push(Note::Completed { epoch: r.to });
}

/// The next instant at which time alone may change the decision.
fn next_deadline(s: &TunnelState, policy: &Policy) -> Option<Stamp> {
    match &s.rotation {
        Some(r) if r.phase == RotatingPhase::Retire => Some(r.since.after(policy.retire_grace)),
        Some(r) => Some(r.since.after(policy.ack_timeout)),
        None => s.next_rotation_at(policy),
    }
}
