//! The rotation state as persisted in `IPsecTunnelStatus`: pure mapping
//! both ways, so a restart resumes from exactly what was written.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use meshsec_crds::{IPsecTunnelStatus, RotationPhase, RotationTrigger};

use crate::rotation::{Phase, RotatingPhase, Rotation, Stamp, Trigger, TunnelState};

#[must_use]
pub fn stamp(t: &Time) -> Stamp {
    Stamp(t.0.as_second())
}

/// Whole-second `Time` (the precision a status keeps).
#[must_use]
pub fn time(s: Stamp) -> Time {
    Time(Timestamp::from_second(s.0).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Rebuild the state machine's memory from a status. A missing status or
/// epoch 0 means the tunnel was never reconciled: a fresh epoch 1 that
/// started when the tunnel was created.
#[must_use]
pub fn restore(status: Option<&IPsecTunnelStatus>, created: Stamp) -> TunnelState {
    let Some(st) = status.filter(|s| s.epoch > 0) else {
        return TunnelState::initial(created);
    };
    let active = u64::try_from(st.epoch).unwrap_or(1);
    let rotating = |phase: RotatingPhase, from: u64| Rotation {
        to: from + 1,
        phase,
        since: st.phase_since.as_ref().map_or(created, stamp),
        reason: st
            .rotation_trigger
            .map_or(Trigger::Interval, trigger_from_api),
        members: st.next_members.iter().cloned().collect(),
    };
    // status.epoch is the epoch members send with: from Switch on, the new one.
    let (epoch, rotation) = match st.phase {
        RotationPhase::Stable => (active, None),
        RotationPhase::Prepare => (active, Some(rotating(RotatingPhase::Prepare, active))),
        RotationPhase::Install => (active, Some(rotating(RotatingPhase::Install, active))),
        RotationPhase::Switch => {
            let from = active.saturating_sub(1).max(1);
            (from, Some(rotating(RotatingPhase::Switch, from)))
        }
        RotationPhase::Retire => {
            let from = active.saturating_sub(1).max(1);
            (from, Some(rotating(RotatingPhase::Retire, from)))
        }
    };
    TunnelState {
        epoch,
        members: st.members.iter().cloned().collect(),
        rotation,
        created_at: created,
        last_rotation_at: st.last_rotation_time.as_ref().map(stamp),
        manual_token: st.rotate_request.clone(),
        pending: st.pending_trigger.map(trigger_from_api),
    }
}

/// Write the state machine's memory into `st` (other fields untouched).
pub fn persist(s: &TunnelState, st: &mut IPsecTunnelStatus) {
    st.epoch = i64::try_from(s.active_epoch()).unwrap_or(i64::MAX);
    st.phase = phase_to_api(s.phase());
    st.phase_since = s.rotation.as_ref().map(|r| time(r.since));
    st.rotation_trigger = s.rotation.as_ref().map(|r| trigger_to_api(r.reason));
    st.last_rotation_time = s.last_rotation_at.map(time);
    st.members = s.members.iter().cloned().collect();
    st.next_members = s
        .rotation
        .iter()
        .flat_map(|r| r.members.iter().cloned())
        .collect();
    st.rotate_request.clone_from(&s.manual_token);
    st.pending_trigger = s.pending.map(trigger_to_api);
}

#[must_use]
pub fn phase_to_api(p: Phase) -> RotationPhase {
    match p {
        Phase::Stable => RotationPhase::Stable,
        Phase::Prepare => RotationPhase::Prepare,
        Phase::Install => RotationPhase::Install,
        Phase::Switch => RotationPhase::Switch,
        Phase::Retire => RotationPhase::Retire,
    }
}

#[must_use]
pub fn trigger_to_api(t: Trigger) -> RotationTrigger {
    match t {
        Trigger::Interval => RotationTrigger::Interval,
        Trigger::Volume => RotationTrigger::Volume,
        Trigger::Manual => RotationTrigger::Manual,
        Trigger::MemberLeft => RotationTrigger::MemberLeft,
    }
}

#[must_use]
pub fn trigger_from_api(t: RotationTrigger) -> Trigger {
    match t {
        RotationTrigger::Interval => Trigger::Interval,
        RotationTrigger::Volume => Trigger::Volume,
        RotationTrigger::Manual => Trigger::Manual,
        RotationTrigger::MemberLeft => Trigger::MemberLeft,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_string()).collect()
    }

    #[test]
    fn every_phase_survives_the_status_round_trip_exactly() {
        let created = Stamp(1_700_000_000);
        let mut states = vec![TunnelState {
            epoch: 4,
            members: set(&["a", "b"]),
            rotation: None,
            created_at: created,
            last_rotation_at: Some(Stamp(1_700_000_500)),
            manual_token: Some("t1".into()),
            pending: None,
        }];
        for (phase, pending) in [
            (RotatingPhase::Prepare, None),
            (RotatingPhase::Install, Some(Trigger::MemberLeft)),
            (RotatingPhase::Switch, None),
            (RotatingPhase::Retire, Some(Trigger::MemberLeft)),
        ] {
            let mut s = states[0].clone();
            s.pending = pending;
            s.rotation = Some(Rotation {
                to: 5,
                phase,
                since: Stamp(1_700_000_900),
                reason: Trigger::Volume,
                members: set(&["a"]),
            });
            states.push(s);
        }
        for s in states {
            let mut st = IPsecTunnelStatus::default();
            persist(&s, &mut st);
            // Through JSON too: what the API server stores.
            let json = serde_json::to_value(&st).unwrap();
            let back: IPsecTunnelStatus = serde_json::from_value(json).unwrap();
            assert_eq!(restore(Some(&back), created), s, "{:?}", s.phase());
        }
    }

    #[test]
    fn status_epoch_is_the_sending_epoch() {
        let mut s = TunnelState::initial(Stamp(0));
        s.rotation = Some(Rotation {
            to: 2,
            phase: RotatingPhase::Install,
            since: Stamp(5),
            reason: Trigger::Manual,
            members: BTreeSet::new(),
        });
        let mut st = IPsecTunnelStatus::default();
        persist(&s, &mut st);
        assert_eq!((st.epoch, st.phase), (1, RotationPhase::Install));
        s.rotation.as_mut().unwrap().phase = RotatingPhase::Switch;
        persist(&s, &mut st);
        assert_eq!((st.epoch, st.phase), (2, RotationPhase::Switch));
    }

    #[test]
    fn a_never_reconciled_tunnel_starts_at_epoch_one() {
        let s = restore(None, Stamp(42));
        assert_eq!(
            (s.epoch, s.created_at, s.rotation.is_none()),
            (1, Stamp(42), true)
        );
        let zero = IPsecTunnelStatus::default();
        assert_eq!(restore(Some(&zero), Stamp(42)), s);
    }
}
