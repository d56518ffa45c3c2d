//! Table-driven tests of the rotation state machine, with simulated nodes
//! that react to the published state like sidecars do.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::*;

const T0: Stamp = Stamp(1_700_000_000);
const ACK_TIMEOUT: u64 = 30;
const GRACE: u64 = 5;

fn n(i: u32) -> Member {
    format!("n{i}")
}

fn policy() -> Policy {
    Policy {
        interval: Some(Duration::from_secs(3600)),
        max_bytes: Some(1 << 30),
        max_packets: None,
        ack_timeout: Duration::from_secs(ACK_TIMEOUT),
        retire_grace: Duration::from_secs(GRACE),
        jitter_seed: 7,
    }
}

/// A cluster of simulated sidecars plus a clock.
struct Sim {
    now: Stamp,
    nodes: BTreeMap<Member, NodeAck>,
    /// Nodes that stopped reacting (hung sidecar).
    frozen: BTreeSet<Member>,
    manual: Option<String>,
    state: TunnelState,
    notes: Vec<Note>,
    /// Sidecars publish the next epoch's key as soon as the current epoch
    /// starts (the protocol); false: only when asked in Prepare (older
    /// sidecars, which the operator still serves).
    early: bool,
}

impl Sim {
    /// Sidecars that publish the next key only in Prepare.
    fn new(n: u32) -> Sim {
        Sim::with(n, false)
    }

    /// Sidecars that publish the next key when the current epoch starts.
    fn early(n: u32) -> Sim {
        Sim::with(n, true)
    }

    fn with(n: u32, early: bool) -> Sim {
        let state = TunnelState::initial(T0);
        let mut sim = Sim {
            now: T0,
            nodes: BTreeMap::new(),
            frozen: BTreeSet::new(),
            manual: None,
            state,
            notes: Vec::new(),
            early,
        };
        for id in 256..256 + n {
            sim.join(&self::n(id));
        }
        sim.react();
        sim.step();
        assert_eq!(sim.state.members.len(), n as usize);
        sim
    }

    fn join(&mut self, name: &str) {
        self.nodes.insert(name.to_owned(), NodeAck::default());
    }

    /// Every non-frozen node does what the published state asks.
    fn react(&mut self) {
        let (epoch, rot) = (self.state.epoch, self.state.rotation.clone());
        for (name, ack) in &mut self.nodes {
            if self.frozen.contains(name) {
                continue;
            }
            let cur = |e: Option<Epoch>| e.max(Some(epoch));
            ack.published = cur(ack.published);
            ack.installed = cur(ack.installed);
            ack.active = cur(ack.active);
            if let Some(r) = &rot {
                ack.published = Some(r.to);
                if r.phase >= RotatingPhase::Install {
                    ack.installed = Some(r.to);
                }
                if r.phase >= RotatingPhase::Switch {
                    ack.active = Some(r.to);
                }
            }
            if self.early {
                // The epoch it sends with has started: offer the next key.
                ack.published = ack.published.max(ack.active.map(|e| e + 1));
            }
        }
    }

    fn obs(&self) -> Observation<'_> {
        Observation {
            now: self.now,
            nodes: &self.nodes,
            manual_token: self.manual.as_deref(),
        }
    }

    fn step(&mut self) -> Decision {
        let d = step(&self.state, &self.obs(), &policy());
        self.state = d.state.clone();
        self.notes.extend(d.notes.clone());
        d
    }

    fn advance(&mut self, secs: u64) {
        self.now = self.now.after(Duration::from_secs(secs));
    }

    /// React + step until stable again (bounded), one second per round.
    fn run_to_stable(&mut self) {
        for _ in 0..200 {
            self.react();
            self.step();
            if self.state.rotation.is_none() && self.state.pending.is_none() {
                return;
            }
            self.advance(1);
        }
        panic!("no convergence: {:?}", self.state);
    }

    fn completed(&self) -> Vec<Epoch> {
        self.notes
            .iter()
            .filter_map(|n| match n {
                Note::Completed { epoch } => Some(*epoch),
                _ => None,
            })
            .collect()
    }

    fn started(&self) -> Vec<(Epoch, Trigger)> {
        self.notes
            .iter()
            .filter_map(|n| match n {
                Note::Started { to, reason, .. } => Some((*to, *reason)),
                _ => None,
            })
            .collect()
    }

    /// The phases entered, in order, as the notes report them.
    fn phase_changes(&self) -> Vec<Phase> {
        self.notes
            .iter()
            .filter_map(|n| match n {
                Note::PhaseChanged { phase, .. } => Some(*phase),
                _ => None,
            })
            .collect()
    }

    fn drive_to(&mut self, phase: Phase) {
        for _ in 0..10 {
            if self.state.phase() == phase {
                return;
            }
            self.react();
            self.step();
            self.advance(1);
        }
        panic!("never reached {phase}");
    }

    fn start_manual(&mut self, token: &str) {
        self.manual = Some(token.into());
        self.step();
        let first = if self.early {
            Phase::Install
        } else {
            Phase::Prepare
        };
        assert_eq!(self.state.phase(), first);
    }

    /// Phases a rotation of this cluster goes through.
    fn phases(&self) -> Vec<Phase> {
        let all = [Phase::Prepare, Phase::Install, Phase::Switch, Phase::Retire];
        all.into_iter()
            .filter(|p| !(self.early && *p == Phase::Prepare))
            .collect()
    }
}

#[test]
fn idle_stable_step_changes_nothing_and_sleeps_until_the_interval() {
    let mut sim = Sim::new(3);
    sim.notes.clear();
    sim.advance(100);
    let before = sim.state.clone();
    let d = sim.step();
    assert_eq!(
        d.state, before,
        "an idle step must not produce a status write"
    );
    assert!(d.notes.is_empty());
    let due = before.next_rotation_at(&policy()).unwrap();
    assert_eq!(d.requeue_after, Some(sim.now.until(due)));
}

#[test]
fn full_rotation_walks_every_phase_once_and_advances_the_epoch_once() {
    let mut sim = Sim::new(3);
    sim.notes.clear();
    sim.now = sim.state.next_rotation_at(&policy()).unwrap();
    sim.run_to_stable();
    let phases = sim.phase_changes();
    assert_eq!(phases, vec![Phase::Install, Phase::Switch, Phase::Retire]);
    assert_eq!(sim.started(), vec![(2, Trigger::Interval)]);
    assert_eq!(sim.completed(), vec![2]);
    assert_eq!(sim.state.epoch, 2);
    assert_eq!(sim.state.members.len(), 3);
    assert_eq!(sim.state.last_rotation_at, Some(sim.now));
    assert!(sim.state.next_rotation_at(&policy()).unwrap() > sim.now);
}

#[test]
fn phases_wait_for_every_member_then_advance() {
    // Table: (phase, what the lagging node must do to let it advance)
    type Catch = fn(&mut NodeAck, Epoch);
    let cases: [(Phase, Catch); 3] = [
        (Phase::Prepare, |a, to| a.published = Some(to)),
        (Phase::Install, |a, to| a.installed = Some(to)),
        (Phase::Switch, |a, to| a.active = Some(to)),
    ];
    for (phase, ack) in cases {
        let mut sim = Sim::new(3);
        sim.start_manual("r1");
        sim.drive_to(phase);
        sim.frozen.insert(n(258));
        sim.react();
        sim.step();
        assert_eq!(sim.state.phase(), phase, "{phase}: must wait for node 258");
        let lag = sim.nodes.get_mut("n258").unwrap();
        ack(lag, 2);
        sim.step();
        assert_ne!(sim.state.phase(), phase, "{phase}: all acked, must advance");
    }
}

#[test]
fn ack_timeout_in_each_phase_evicts_the_laggard_and_continues() {
    for phase in [Phase::Prepare, Phase::Install, Phase::Switch] {
        let mut sim = Sim::new(3);
        sim.start_manual("r1");
        sim.drive_to(phase);
        sim.frozen.insert(n(257));
        let since = sim.state.rotation.as_ref().unwrap().since;
        // One second before the deadline: still waiting, and says when.
        sim.now = since.after(Duration::from_secs(ACK_TIMEOUT - 1));
        sim.react();
        let d = sim.step();
        assert_eq!(sim.state.phase(), phase);
        assert_eq!(d.requeue_after, Some(Duration::from_secs(1)));
        // At the deadline: evicted, Degraded-worthy note, phase advances.
        sim.advance(1);
        let d = sim.step();
        let rphase = match phase {
            Phase::Prepare => RotatingPhase::Prepare,
            Phase::Install => RotatingPhase::Install,
            _ => RotatingPhase::Switch,
        };
        assert!(
            d.notes.contains(&Note::Evicted {
                to: 2,
                phase: rphase,
                nodes: vec![n(257)]
            }),
            "{phase}: {:?}",
            d.notes
        );
        assert_ne!(sim.state.phase(), phase);
        sim.run_to_stable();
        assert_eq!(sim.state.epoch, 2);
        assert!(
            !sim.state.members.contains("n257"),
            "{phase}: laggard not a member of epoch 2"
        );
        // The hung sidecar comes back and catches up: it rejoins, no rotation.
        sim.frozen.clear();
        sim.notes.clear();
        sim.react();
        sim.step();
        assert!(
            sim.state.members.contains("n257"),
            "{phase}: caught-up node rejoins"
        );
        assert!(
            sim.started().is_empty(),
            "{phase}: rejoining needs no rotation"
        );
    }
}

#[test]
fn a_member_leaving_when_stable_starts_a_rotation_that_excludes_it() {
    let mut sim = Sim::new(3);
    sim.notes.clear();
    sim.nodes.remove("n256");
    sim.step();
    assert_eq!(sim.started(), vec![(2, Trigger::MemberLeft)]);
    let r = sim.state.rotation.as_ref().unwrap();
    assert!(!r.members.contains("n256"));
    assert!(!sim.state.members.contains("n256"));
    sim.run_to_stable();
    assert_eq!(sim.state.epoch, 2);
    assert_eq!(sim.state.members, [n(257), n(258)].into_iter().collect());
}

#[test]
fn a_node_vanishing_mid_rotation_in_any_phase_is_cut_off_by_a_follow_up_rotation() {
    for early in [false, true] {
        for phase in Sim::with(1, early).phases() {
            vanish_in(phase, early);
        }
    }
}

fn vanish_in(phase: Phase, early: bool) {
    let mut sim = Sim::with(4, early);
    sim.start_manual("r1");
    sim.drive_to(phase);
    sim.nodes.remove("n259");
    let d = sim.step();
    assert!(
        d.notes.contains(&Note::MembersLeft {
            nodes: vec![n(259)]
        }),
        "{phase} early={early}"
    );
    // The rotation in flight neither waits for it nor restarts.
    assert_eq!(
        sim.state.pending,
        Some(Trigger::MemberLeft),
        "{phase} early={early}"
    );
    sim.run_to_stable();
    // It held PSK_2 (issued while it was a member), so epoch 3 follows.
    assert_eq!(sim.completed(), vec![2, 3], "{phase} early={early}");
    assert_eq!(
        sim.started()[1],
        (3, Trigger::MemberLeft),
        "{phase} early={early}"
    );
    assert!(!sim.state.members.contains("n259"));
    assert_eq!(sim.state.members.len(), 3);
}

#[test]
fn restart_in_every_phase_resumes_from_status_without_doubling() {
    for early in [false, true] {
        let phases = std::iter::once(Phase::Stable).chain(Sim::with(1, early).phases());
        for phase in phases {
            restart_in(phase, early);
        }
    }
}

fn restart_in(phase: Phase, early: bool) {
    let mut sim = Sim::with(3, early);
    if phase != Phase::Stable {
        sim.start_manual("r1");
        sim.drive_to(phase);
    }
    // "Restart": the only memory is what was persisted.
    let persisted = serde_json::to_string(&sim.state).unwrap();
    let restored: TunnelState = serde_json::from_str(&persisted).unwrap();
    assert_eq!(restored, sim.state, "{phase} early={early}");
    // A fresh operator re-reconciling before anyone reacted: no change.
    let d = step(&restored, &sim.obs(), &policy());
    assert_eq!(
        d.state, restored,
        "{phase} early={early}: must not advance without new acks"
    );
    assert!(d.notes.is_empty(), "{phase} early={early}: {:?}", d.notes);
    // The deadline still counts from when the phase was entered.
    if let Some(r) = &restored.rotation {
        let limit = if phase == Phase::Retire {
            GRACE
        } else {
            ACK_TIMEOUT
        };
        assert_eq!(
            d.requeue_after,
            Some(sim.now.until(r.since.after(Duration::from_secs(limit))))
        );
    }
    sim.state = restored;
    sim.run_to_stable();
    let expect = if phase == Phase::Stable { 1 } else { 2 };
    assert_eq!(
        sim.state.epoch, expect,
        "{phase} early={early}: exactly one advance"
    );
    assert_eq!(sim.completed().len(), usize::from(phase != Phase::Stable));
}

#[test]
fn replaying_a_step_on_its_own_output_takes_at_most_one_transition() {
    let mut sim = Sim::new(2);
    sim.start_manual("r1");
    sim.react(); // everyone published for epoch 2
    let a = step(&sim.state, &sim.obs(), &policy());
    assert_eq!(a.state.phase(), Phase::Install);
    // Same observation again (e.g. a duplicate watch event): no second hop.
    let b = step(&a.state, &sim.obs(), &policy());
    assert_eq!(b.state, a.state);
}

#[test]
fn triggers_racing() {
    struct Case {
        name: &'static str,
        /// manual token set at start (together with the interval being due)
        manual_at_start: Option<&'static str>,
        interval_due_at_start: bool,
        /// manual token set while the first rotation is in Install
        manual_during: Option<&'static str>,
        /// make the interval due while the first rotation runs
        interval_due_during: bool,
        want: Vec<(Epoch, Trigger)>,
    }
    let cases = vec![
        Case {
            name: "manual and interval due together: one rotation",
            manual_at_start: Some("a"),
            interval_due_at_start: true,
            manual_during: None,
            interval_due_during: false,
            want: vec![(2, Trigger::Manual)],
        },
        Case {
            name: "manual request during an interval rotation: honoured after it",
            manual_at_start: None,
            interval_due_at_start: true,
            manual_during: Some("b"),
            interval_due_during: false,
            want: vec![(2, Trigger::Interval), (3, Trigger::Manual)],
        },
        Case {
            name: "interval falling due during a manual rotation: absorbed",
            manual_at_start: Some("a"),
            interval_due_at_start: false,
            manual_during: None,
            interval_due_during: true,
            want: vec![(2, Trigger::Manual)],
        },
        Case {
            name: "the same manual token again: ignored",
            manual_at_start: Some("a"),
            interval_due_at_start: false,
            manual_during: Some("a"),
            interval_due_during: false,
            want: vec![(2, Trigger::Manual)],
        },
    ];
    for c in cases {
        let mut sim = Sim::new(3);
        sim.notes.clear();
        sim.manual = c.manual_at_start.map(str::to_owned);
        if c.interval_due_at_start {
            sim.now = sim.state.next_rotation_at(&policy()).unwrap();
        }
        sim.step();
        sim.drive_to(Phase::Install);
        if let Some(t) = c.manual_during {
            sim.manual = Some(t.into());
        }
        if c.interval_due_during {
            sim.now = sim.state.next_rotation_at(&policy()).unwrap();
        }
        sim.run_to_stable();
        // Quiet period: nothing else may start before the next interval.
        sim.advance(60);
        sim.step();
        assert_eq!(sim.started(), c.want, "{}", c.name);
    }
}

#[test]
fn sa_limits_trigger_only_for_the_current_epoch() {
    let mut sim = Sim::new(2);
    sim.notes.clear();
    let over = Usage {
        epoch: 1,
        bytes: 1 << 30,
        packets: 0,
    };
    sim.nodes.get_mut("n256").unwrap().usage = Some(over);
    sim.step();
    assert_eq!(sim.started(), vec![(2, Trigger::Volume)]);
    sim.run_to_stable();
    // The stale epoch-1 report must not trigger again in epoch 2.
    sim.advance(10);
    sim.step();
    assert_eq!(sim.started().len(), 1);
    // Under the limit in the new epoch: nothing.
    sim.nodes.get_mut("n256").unwrap().usage = Some(Usage {
        epoch: 2,
        bytes: 10,
        packets: 0,
    });
    sim.step();
    assert_eq!(sim.started().len(), 1);
}

#[test]
fn joining_nodes_need_no_rotation() {
    let mut sim = Sim::new(2);
    sim.notes.clear();
    sim.join("n300");
    sim.step();
    assert!(
        !sim.state.members.contains("n300"),
        "not a member before publishing"
    );
    sim.react();
    sim.step();
    assert!(sim.state.members.contains("n300"));
    assert!(sim.started().is_empty());
}

#[test]
fn members_are_retained_until_the_rotation_that_cuts_them_off_starts() {
    let mut sim = Sim::new(2);
    assert!(sim.state.retains("n256"));
    sim.start_manual("r1");
    assert!(sim.state.retains("n256"), "member of both retained epochs");
    assert_eq!(sim.state.retained_epochs(), vec![1, 2]);
    sim.nodes.remove("n256");
    sim.step();
    assert!(!sim.state.retains("n256"));
    assert!(sim.state.retains("n257"));
}

#[test]
fn jitter_spreads_tunnels_but_never_exceeds_the_interval() {
    let interval = 3600;
    let mut seen = BTreeSet::new();
    for seed in 0..50u64 {
        let p = Policy {
            jitter_seed: seed,
            ..policy()
        };
        let at = p.next_rotation(T0, 1).unwrap();
        assert!(at <= T0.after(Duration::from_secs(interval)));
        assert!(at >= T0.after(Duration::from_secs(interval - interval / 10)));
        assert_eq!(p.next_rotation(T0, 1), Some(at), "deterministic");
        seen.insert(at);
    }
    assert!(
        seen.len() > 25,
        "50 tunnels should not rotate at a handful of instants: {}",
        seen.len()
    );
    let none = Policy {
        interval: None,
        ..policy()
    };
    assert_eq!(none.next_rotation(T0, 1), None);
}

#[test]
fn all_members_timing_out_still_completes_and_reports_them() {
    let mut sim = Sim::new(2);
    sim.start_manual("r1");
    sim.frozen = [n(256), n(257)].into_iter().collect();
    sim.advance(ACK_TIMEOUT);
    let d = sim.step();
    assert!(d.notes.contains(&Note::Evicted {
        to: 2,
        phase: RotatingPhase::Prepare,
        nodes: vec![n(256), n(257)]
    }));
    sim.run_to_stable();
    assert_eq!(sim.state.epoch, 2);
    assert!(sim.state.members.is_empty());
}

#[test]
fn keys_published_early_make_rotations_start_in_install() {
    let mut sim = Sim::early(3);
    assert!(
        sim.nodes.values().all(|a| a.published == Some(2)),
        "stable at epoch 1, every node already offers its epoch-2 key"
    );
    sim.notes.clear();
    sim.manual = Some("r1".into());
    let d = sim.step();
    assert_eq!(
        d.notes,
        vec![Note::Started {
            to: 2,
            reason: Trigger::Manual,
            phase: RotatingPhase::Install
        }]
    );
    assert_eq!(d.state.retained_epochs(), vec![1, 2], "PSK_2 issued now");
    sim.run_to_stable();
    let phases = sim.phase_changes();
    assert_eq!(phases, vec![Phase::Switch, Phase::Retire]);
    assert_eq!((sim.state.epoch, sim.state.members.len()), (2, 3));
    // From Switch on the nodes offer epoch-3 keys: the next one skips too.
    sim.start_manual("r2");
    sim.run_to_stable();
    assert_eq!(sim.completed(), vec![2, 3]);
}

#[test]
fn one_member_without_an_early_key_keeps_prepare_and_is_awaited() {
    let mut sim = Sim::early(3);
    // An older sidecar: it has not offered an epoch-2 key.
    sim.nodes.get_mut("n257").unwrap().published = Some(1);
    sim.frozen.insert(n(257));
    sim.manual = Some("r1".into());
    sim.step();
    assert_eq!(sim.state.phase(), Phase::Prepare);
    sim.react();
    sim.step();
    assert_eq!(sim.state.phase(), Phase::Prepare, "waits for n257's key");
    sim.frozen.clear();
    sim.react();
    sim.step();
    assert_eq!(sim.state.phase(), Phase::Install);
    sim.run_to_stable();
    assert_eq!((sim.state.epoch, sim.state.members.len()), (2, 3));
}

#[test]
fn a_leaver_that_published_its_next_key_early_is_still_cut_off() {
    let mut sim = Sim::early(3);
    sim.notes.clear();
    assert_eq!(sim.nodes["n256"].published, Some(2));
    assert_eq!(
        sim.state.retained_epochs(),
        vec![1],
        "no PSK_2 exists while it is a member"
    );
    sim.nodes.remove("n256");
    let d = sim.step();
    // PSK_2 is issued by this very step, after the departure, and n256 is
    // in neither member list: its early epoch-2 key is never used.
    assert_eq!(d.state.retained_epochs(), vec![1, 2]);
    let r = d.state.rotation.as_ref().unwrap();
    assert_eq!(
        (r.phase, r.reason),
        (RotatingPhase::Install, Trigger::MemberLeft)
    );
    assert!(!r.members.contains("n256"));
    assert!(!d.state.members.contains("n256"));
    sim.run_to_stable();
    assert_eq!(sim.state.members, [n(257), n(258)].into_iter().collect());
}
