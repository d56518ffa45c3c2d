//! IPsecTunnel reconciler: membership, conflicts, the rotation step, the
//! PSK Secret, status (server-side apply) and Events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::{Resource, ResourceExt};
use meshsec_crds::conditions::{self, condition, reason, set_condition};
use meshsec_crds::validate::{parse_duration, validate_tunnel_spec};
use meshsec_crds::{ANNOTATION_ROTATE, IPsecTunnel, IPsecTunnelStatus, psk_secret_name};
use serde_json::json;
use tracing::{info, instrument, warn};

use super::{from_finalizer, policy as shared_policy};
use crate::conflict::Verdict;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::metrics::ControllerKind;
use crate::observe::{self, Members, some_names};
use crate::psk;
use crate::rotation::{self, Note, Observation, Phase, Policy, RotatingPhase, TunnelState};
use crate::status::{self, time};

/// Finalizer on every IPsecTunnel: deletion waits for nodes to tear down
/// and for the PSK Secret to go.
pub const FINALIZER: &str = "meshsec.io/teardown";

/// How often an idle tunnel is looked at even without events (cheap: no
/// API call unless something changed).
const IDLE_RESYNC: Duration = Duration::from_secs(300);

/// Names in a condition message before "and N more".
const NAMES_SHOWN: usize = 10;

/// Reconcile one IPsecTunnel.
///
/// # Errors
/// API failures, lost status races (retried), random-source failure.
#[instrument(skip_all, fields(tunnel = %tunnel.name_any()))]
pub async fn reconcile(tunnel: Arc<IPsecTunnel>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(ControllerKind::Tunnel);
    if !ctx.is_leader() {
        return Ok(Action::await_change());
    }
    let api: Api<IPsecTunnel> = Api::all(ctx.client.clone());
    finalizer::finalizer(&api, FINALIZER, tunnel, |event| async {
        match event {
            Finalizer::Apply(t) => apply(&t, &ctx).await,
            Finalizer::Cleanup(t) => cleanup(&t, &ctx).await,
        }
    })
    .await
    .map_err(from_finalizer)
}

/// Count, log, requeue.
pub fn error_policy(tunnel: Arc<IPsecTunnel>, error: &Error, ctx: Arc<Context>) -> Action {
    shared_policy(
        ControllerKind::Tunnel,
        &tunnel.name_any(),
        error,
        &ctx.metrics,
    )
}

async fn apply(t: &IPsecTunnel, ctx: &Context) -> Result<Action> {
    let name = t.name_any();
    let now = Context::now();
    let tunnels = ctx.tunnels.state();
    let nodes = ctx.nodes.state();
    let mut st = t.status.clone().unwrap_or_default();
    let generation = t.metadata.generation;

    if let Err(errors) = validate_tunnel_spec(&t.spec) {
        let msg = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let c = condition(
            conditions::tunnel::READY,
            false,
            "InvalidSpec",
            msg.clone(),
            generation,
            time(now),
        );
        return finish_blocked(t, ctx, st, c, EventType::Warning, "InvalidSpec", &msg).await;
    }
    if let Some(Verdict::Conflict {
        with,
        nodes: contested,
    }) = observe::conflicts(&tunnels, &nodes).remove(&name)
    {
        let msg = format!(
            "node(s) {} are already selected by older IPsecTunnel(s) {}; nothing is applied for this tunnel until its nodeSelector no longer overlaps",
            some_names(&contested, NAMES_SHOWN),
            with.join(", ")
        );
        let c = condition(
            conditions::tunnel::CONFLICT,
            true,
            reason::NODES_CLAIMED_BY_OTHER_TUNNEL,
            msg.clone(),
            generation,
            time(now),
        );
        set_condition(
            &mut st.conditions,
            condition(
                conditions::tunnel::READY,
                false,
                "Conflict",
                "see the Conflict condition",
                generation,
                time(now),
            ),
        );
        return finish_blocked(t, ctx, st, c, EventType::Warning, "Conflict", &msg).await;
    }

    let selected = observe::selection(t, &nodes);
    let members = observe::members(&name, &selected, &ctx.ipsecnodes.state());
    let created = t
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, status::stamp);
    let prev = status::restore(t.status.as_ref(), created);
    let obs = Observation {
        now,
        nodes: &members.eligible,
        manual_token: t.annotations().get(ANNOTATION_ROTATE).map(String::as_str),
    };
    let decision = rotation::step(&prev, &obs, &policy(t));
    let next = &decision.state;

    // The Secret first: sidecars must find PSK_{e+1} when status says Prepare.
    ensure_psk(t, ctx, &next.retained_epochs()).await?;

    status::persist(next, &mut st);
    let ready = ready_nodes(next, &members);
    st.nodes_total = i32::try_from(selected.len()).unwrap_or(i32::MAX);
    st.nodes_ready = i32::try_from(ready).unwrap_or(i32::MAX);
    st.observed_generation = generation;
    set_conditions(
        &mut st,
        next,
        &members,
        selected.len(),
        ready,
        generation,
        time(now),
    );

    if t.status.as_ref() != Some(&st) {
        write_status(t, ctx, &st).await?;
    }
    for note in &decision.notes {
        announce(t, ctx, next, note).await;
    }
    ctx.metrics.tunnel(
        &name,
        next.active_epoch(),
        next.phase(),
        ready,
        selected.len(),
    );
    let wait = decision
        .requeue_after
        .unwrap_or(IDLE_RESYNC)
        .clamp(Duration::from_secs(1), IDLE_RESYNC);
    Ok(Action::requeue(wait))
}

/// Invalid or conflicting: record the condition, write status if it
/// changed (Event only then, so an idle blocked tunnel writes nothing).
async fn finish_blocked(
    t: &IPsecTunnel,
    ctx: &Context,
    mut st: IPsecTunnelStatus,
    c: k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition,
    kind: EventType,
    why: &str,
    msg: &str,
) -> Result<Action> {
    st.observed_generation = t.metadata.generation;
    set_condition(&mut st.conditions, c);
    if t.status.as_ref() != Some(&st) {
        write_status(t, ctx, &st).await?;
        event(t, ctx, kind, why, msg).await;
        warn!(reason = why, "{msg}");
    }
    Ok(Action::requeue(IDLE_RESYNC))
}

/// Rotation settings from the spec (validated before this is called).
fn policy(t: &IPsecTunnel) -> Policy {
    let r = &t.spec.rotation;
    let d =
        |text: &str, fallback: u64| parse_duration(text).unwrap_or(Duration::from_secs(fallback));
    Policy {
        interval: Some(d(&r.interval, 3600)),
        max_bytes: u64::try_from(r.max_bytes).ok(),
        max_packets: u64::try_from(r.max_packets).ok(),
        ack_timeout: d(&r.ack_timeout, 120),
        retire_grace: d(&r.grace_period, 30),
        jitter_seed: fnv1a(t.uid().as_deref().unwrap_or_default()),
    }
}

/// FNV-1a: a stable per-tunnel jitter seed (no security role).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Members of the sending epoch that are healthy and have it installed.
fn ready_nodes(s: &TunnelState, m: &Members) -> usize {
    let active = s.active_epoch();
    let set = match &s.rotation {
        Some(r) if matches!(r.phase, RotatingPhase::Switch | RotatingPhase::Retire) => &r.members,
        _ => &s.members,
    };
    set.iter()
        .filter(|n| !m.unhealthy.contains(*n))
        .filter(|n| {
            m.eligible
                .get(*n)
                .is_some_and(|a| a.installed.is_some_and(|e| e >= active))
        })
        .count()
}

fn set_conditions(
    st: &mut IPsecTunnelStatus,
    s: &TunnelState,
    m: &Members,
    total: usize,
    ready: usize,
    generation: Option<i64>,
    now: Time,
) {
    use conditions::tunnel::{CONFLICT, DEGRADED, READY, ROTATING};
    let epoch = s.active_epoch();
    let c =
        |kind, ok, why: &str, msg: String| condition(kind, ok, why, msg, generation, now.clone());
    let ready_c = if total == 0 {
        c(
            READY,
            false,
            reason::NO_MATCHING_NODES,
            "nodeSelector matches no node".into(),
        )
    } else if ready == total {
        c(
            READY,
            true,
            reason::ALL_NODES_READY,
            format!("{ready}/{total} nodes ready on epoch {epoch}"),
        )
    } else {
        c(
            READY,
            false,
            reason::NODES_NOT_READY,
            format!("{ready}/{total} nodes ready on epoch {epoch}"),
        )
    };
    let rotating = match &s.rotation {
        None => c(
            ROTATING,
            false,
            reason::STABLE,
            format!("epoch {epoch} in use"),
        ),
        Some(r) => {
            let why = match r.reason {
                rotation::Trigger::Interval => reason::INTERVAL_ELAPSED,
                rotation::Trigger::Volume => reason::VOLUME_LIMIT_REACHED,
                rotation::Trigger::Manual => reason::MANUAL_ROTATION,
                rotation::Trigger::MemberLeft => reason::MEMBER_LEFT,
            };
            c(
                ROTATING,
                true,
                why,
                format!(
                    "rotating to epoch {} (phase {})",
                    r.to,
                    Phase::from(r.phase)
                ),
            )
        }
    };
    let keyed = s.rotation.as_ref().map_or(&s.members, |r| &r.members);
    let not_keyed: BTreeSet<&String> = m.eligible.keys().filter(|n| !keyed.contains(*n)).collect();
    let degraded = if !not_keyed.is_empty() {
        let msg = format!(
            "{} node(s) not acknowledging the current keys (evicted after rotation.ackTimeout, or not yet published): {}",
            not_keyed.len(),
            some_names(not_keyed.iter().copied(), NAMES_SHOWN)
        );
        c(DEGRADED, true, reason::NODE_ACK_TIMEOUT, msg)
    } else if !m.unhealthy.is_empty() {
        let msg = format!(
            "datapath unhealthy on: {}",
            some_names(&m.unhealthy, NAMES_SHOWN)
        );
        c(DEGRADED, true, reason::DATAPATH_UNHEALTHY, msg)
    } else {
        c(
            DEGRADED,
            false,
            reason::AS_EXPECTED,
            "all members acknowledge and are healthy".into(),
        )
    };
    for cond in [
        ready_c,
        rotating,
        degraded,
        c(
            CONFLICT,
            false,
            reason::NO_CONFLICT,
            "no selected node belongs to another tunnel".into(),
        ),
    ] {
        set_condition(&mut st.conditions, cond);
    }
}

/// Server-side apply of the whole status, conditional on the
/// resourceVersion the decision was based on: a decision made from a stale
/// cache is rejected (409) instead of advancing a rotation twice.
async fn write_status(t: &IPsecTunnel, ctx: &Context, st: &IPsecTunnelStatus) -> Result<()> {
    let name = t.name_any();
    let api: Api<IPsecTunnel> = Api::all(ctx.client.clone());
    let patch = json!({
        "apiVersion": "meshsec.io/v1alpha1",
        "kind": "IPsecTunnel",
        "metadata": { "name": name, "resourceVersion": t.resource_version() },
        "status": st,
    });
    let params = PatchParams::apply(&ctx.settings.field_manager).force();
    let res = api
        .patch_status(&name, &params, &Patch::Apply(&patch))
        .await;
    ctx.metrics.write("tunnel_status", res.is_ok());
    res.map(|_| ()).map_err(Error::from)
}

/// Make the PSK Secret hold exactly the retained epochs' keys.
async fn ensure_psk(t: &IPsecTunnel, ctx: &Context, retained: &[u64]) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let name = psk_secret_name(&t.name_any());
    let mut data: BTreeMap<_, _> = api
        .get_opt(&name)
        .await?
        .and_then(|s| s.data)
        .unwrap_or_default();
    let plan = psk::plan(&data, retained);
    if plan.is_empty() {
        psk::wipe(&mut data);
        return Ok(());
    }
    let applied = psk::apply(&mut data, &plan);
    let res = match applied {
        Ok(()) => write_secret(t, ctx, &api, &name, &data).await,
        Err(e) => Err(e),
    };
    psk::wipe(&mut data);
    res?;
    // Epoch numbers only: key bytes never reach a log.
    info!(secret = %name, added = ?plan.add, removed = ?plan.remove, "PSK Secret updated");
    Ok(())
}

async fn write_secret(
    t: &IPsecTunnel,
    ctx: &Context,
    api: &Api<Secret>,
    name: &str,
    data: &BTreeMap<String, k8s_openapi::ByteString>,
) -> Result<()> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ctx.settings.namespace.clone()),
            labels: Some(
                [
                    (
                        "app.kubernetes.io/managed-by".to_owned(),
                        "meshsec-operator".to_owned(),
                    ),
                    ("meshsec.io/tunnel".to_owned(), t.name_any()),
                ]
                .into_iter()
                .collect(),
            ),
            owner_references: t.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(data.clone()),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    };
    let params = PatchParams::apply(&ctx.settings.field_manager).force();
    let res = api.patch(name, &params, &Patch::Apply(&secret)).await;
    let mut sent = secret;
    if let Some(d) = sent.data.as_mut() {
        psk::wipe(d);
    }
    ctx.metrics.write("secret", res.is_ok());
    res.map(|_| ()).map_err(Error::from)
}

/// An Event (and a log line) for a state-machine note.
async fn announce(t: &IPsecTunnel, ctx: &Context, s: &TunnelState, note: &Note) {
    let (kind, why, msg) = match note {
        Note::Started { to, reason, phase } => (
            EventType::Normal,
            "RotationStarted",
            match phase {
                RotatingPhase::Prepare => {
                    format!("rotation to epoch {to} started ({reason}): phase Prepare")
                }
                other => format!(
                    "rotation to epoch {to} started ({reason}); every member had already published its epoch-{to} key: phase {}",
                    Phase::from(*other)
                ),
            },
        ),
        Note::PhaseChanged { to, phase } => {
            // One reason per phase: the event recorder folds repeats of a
            // reason into one series, which would hide phases.
            let why = match phase {
                Phase::Install => "RotationInstall",
                Phase::Switch => "RotationSwitch",
                _ => "RotationRetire",
            };
            (
                EventType::Normal,
                why,
                format!("rotation to epoch {to}: phase {phase}"),
            )
        }
        Note::Completed { epoch } => (
            EventType::Normal,
            "RotationCompleted",
            format!(
                "epoch {epoch} is current; {} member node(s)",
                s.members.len()
            ),
        ),
        Note::MembersLeft { nodes } => (
            EventType::Normal,
            "MembersLeft",
            format!(
                "{} node(s) left and are cut off by a new epoch: {}",
                nodes.len(),
                some_names(nodes, NAMES_SHOWN)
            ),
        ),
        Note::Evicted { to, phase, nodes } => (
            EventType::Warning,
            "NodeAckTimeout",
            format!(
                "{} node(s) did not acknowledge phase {} of the rotation to epoch {to} within rotation.ackTimeout and are excluded from it until they catch up: {}",
                nodes.len(),
                Phase::from(*phase),
                some_names(nodes, NAMES_SHOWN)
            ),
        ),
    };
    info!(reason = why, epoch = s.active_epoch(), phase = %s.phase(), "{msg}");
    event(t, ctx, kind, why, &msg).await;
}

async fn event(t: &IPsecTunnel, ctx: &Context, type_: EventType, reason: &str, note: &str) {
    let ev = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.to_owned()),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    let res = ctx.recorder.publish(&ev, &t.object_ref(&())).await;
    ctx.metrics.write("event", res.is_ok());
    if let Err(e) = res {
        warn!(error = %e, "could not publish Event");
    }
}

/// Deletion: nodes see the tunnel's deletionTimestamp and tear down; wait
/// (up to rotation.ackTimeout) until none lists the tunnel any more, then
/// delete the PSK Secret and let the tunnel go.
async fn cleanup(t: &IPsecTunnel, ctx: &Context) -> Result<Action> {
    let name = t.name_any();
    let pending: Vec<String> = ctx
        .ipsecnodes
        .state()
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none() && n.spec.tunnel(&name).is_some())
        .map(|n| n.name_any())
        .collect();
    let since = t
        .metadata
        .deletion_timestamp
        .as_ref()
        .map_or_else(Context::now, status::stamp);
    let deadline = since.after(policy(t).ack_timeout);
    if !pending.is_empty() {
        if Context::now() < deadline {
            return Err(Error::TeardownPending {
                tunnel: name,
                pending: pending.len(),
            });
        }
        let msg = format!(
            "{} node(s) did not confirm teardown within rotation.ackTimeout; deleting the PSK anyway: {}",
            pending.len(),
            some_names(&pending, NAMES_SHOWN)
        );
        event(t, ctx, EventType::Warning, "TeardownTimeout", &msg).await;
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let res = api
        .delete(&psk_secret_name(&name), &DeleteParams::default())
        .await;
    ctx.metrics.write(
        "secret_delete",
        res.is_ok() || is_not_found(res.as_ref().err()),
    );
    match res {
        Ok(_) => {}
        Err(e) if is_not_found(Some(&e)) => {}
        Err(e) => return Err(e.into()),
    }
    event(
        t,
        ctx,
        EventType::Normal,
        "TornDown",
        "PSK Secret deleted; nodes tore the tunnel down",
    )
    .await;
    ctx.metrics.forget_tunnel(&name);
    info!("tunnel torn down");
    Ok(Action::await_change())
}

fn is_not_found(e: Option<&kube::Error>) -> bool {
    matches!(e, Some(kube::Error::Api(s)) if s.code == 404)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::rotation::{NodeAck, Rotation, Stamp, Trigger};

    fn ack(e: u64) -> NodeAck {
        NodeAck {
            published: Some(e),
            installed: Some(e),
            active: Some(e),
            usage: None,
        }
    }

    fn state(members: &[&str]) -> TunnelState {
        let mut s = TunnelState::initial(Stamp(0));
        s.members = members.iter().map(|m| (*m).to_string()).collect();
        s
    }

    fn members(nodes: &[(&str, NodeAck)], unhealthy: &[&str]) -> Members {
        Members {
            eligible: nodes
                .iter()
                .map(|(n, a)| ((*n).to_string(), a.clone()))
                .collect(),
            unhealthy: unhealthy.iter().map(|n| (*n).to_string()).collect(),
        }
    }

    fn now() -> Time {
        Time(Timestamp::from_second(1_700_000_000).unwrap())
    }

    fn get<'a>(st: &'a IPsecTunnelStatus, kind: &str) -> &'a meshsec_crds::Condition {
        conditions::find_condition(&st.conditions, kind).unwrap()
    }

    #[test]
    fn ready_counts_healthy_members_with_the_sending_epoch_installed() {
        let s = state(&["a", "b", "c"]);
        let m = members(
            &[("a", ack(1)), ("b", ack(1)), ("c", NodeAck::default())],
            &["b"],
        );
        assert_eq!(
            ready_nodes(&s, &m),
            1,
            "b unhealthy, c has nothing installed"
        );
    }

    #[test]
    fn conditions_say_what_is_wrong() {
        let s = state(&["a"]);
        // "b" is eligible but not a member: it never acknowledged.
        let m = members(&[("a", ack(1)), ("b", NodeAck::default())], &[]);
        let mut st = IPsecTunnelStatus::default();
        set_conditions(&mut st, &s, &m, 2, 1, Some(3), now());
        let ready = get(&st, conditions::tunnel::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "NodesNotReady")
        );
        assert_eq!(ready.message, "1/2 nodes ready on epoch 1");
        let degraded = get(&st, conditions::tunnel::DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "NodeAckTimeout")
        );
        assert!(degraded.message.contains('b'), "{}", degraded.message);
        assert_eq!(get(&st, conditions::tunnel::CONFLICT).status, "False");
        assert_eq!(ready.observed_generation, Some(3));
    }

    #[test]
    fn rotating_condition_names_the_trigger_and_phase() {
        let mut s = state(&["a"]);
        s.rotation = Some(Rotation {
            to: 2,
            phase: RotatingPhase::Install,
            since: Stamp(5),
            reason: Trigger::MemberLeft,
            members: BTreeSet::from(["a".to_string()]),
        });
        let m = members(&[("a", ack(1))], &[]);
        let mut st = IPsecTunnelStatus::default();
        set_conditions(&mut st, &s, &m, 1, 1, None, now());
        let rot = get(&st, conditions::tunnel::ROTATING);
        assert_eq!(
            (rot.status.as_str(), rot.reason.as_str()),
            ("True", "MemberLeft")
        );
        assert_eq!(rot.message, "rotating to epoch 2 (phase Install)");
        assert_eq!(get(&st, conditions::tunnel::READY).reason, "AllNodesReady");
    }

    #[test]
    fn recomputing_identical_conditions_changes_nothing() {
        // The zero-writes-when-idle rule: a later reconcile with the same
        // facts must produce an identical status (transition times kept).
        let s = state(&["a"]);
        let m = members(&[("a", ack(1))], &[]);
        let mut st = IPsecTunnelStatus::default();
        set_conditions(&mut st, &s, &m, 1, 1, Some(1), now());
        let before = st.clone();
        let later = Time(Timestamp::from_second(1_700_000_999).unwrap());
        set_conditions(&mut st, &s, &m, 1, 1, Some(1), later);
        assert_eq!(st, before);
    }

    #[test]
    fn empty_selection_is_reported() {
        let mut st = IPsecTunnelStatus::default();
        set_conditions(&mut st, &state(&[]), &Members::default(), 0, 0, None, now());
        let ready = get(&st, conditions::tunnel::READY);
        assert_eq!(
            (ready.reason.as_str(), ready.message.as_str()),
            ("NoMatchingNodes", "nodeSelector matches no node")
        );
    }
}
