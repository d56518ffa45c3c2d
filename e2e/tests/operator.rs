//! The operator against the real control plane (`e2e/cluster up`), run as
//! real processes (target/debug/meshsec-operator, built by the harness via
//! `cargo build`) so a leader can be SIGKILLed. Fake sidecars
//! (`meshsec_e2e::fake_sidecars`) create Nodes + IPsecNodes and acknowledge
//! rotation phases like real sidecars.
//!
//! Each test has its own scope label, node/tunnel names, Lease and operator
//! replicas (`--watch-selector`), and deletes what it made, also on panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use meshsec_crds::conditions::{self, find_condition};
use meshsec_crds::{IPsecNode, IPsecTunnel, IPsecTunnelStatus, RotationPhase};
use meshsec_e2e::fake_sidecars::{
    FakeSidecars, KeyPublishing, OperatorOptions, OperatorProcess, SCOPE_LABEL, Scope, node_names,
    scoped_ipsecnodes,
};
use meshsec_e2e::kube::{client, ensure_crds, kubectl_raw, unique_name};
use meshsec_e2e::tunnels::{
    POOL_LABEL, create_tunnel, delete_tunnel_and_wait, psk, request_rotation, stable_ready,
    wait_tunnel,
};

const NS: &str = "meshsec-system";

/// Deletes the scope's objects when dropped (after the operators die).
struct Guard(Scope);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.cleanup(NS);
    }
}

async fn setup(prefix: &str) -> (Client, Guard) {
    let client = client().await.unwrap_or_else(|e| panic!("{e}"));
    ensure_crds().unwrap_or_else(|e| panic!("installing CRDs: {e}"));
    let _ = kubectl_raw(&["create", "namespace", NS], None);
    (client, Guard(Scope::new(&unique_name(prefix))))
}

fn options(scope: &Scope, lease_duration: u64) -> OperatorOptions {
    OperatorOptions {
        selector: scope.selector(),
        lease: format!("lease-{}", scope.id),
        namespace: NS.into(),
        lease_duration,
        release: false,
        kubeconfig: None,
    }
}

fn pool(scope: &Scope, pool: &str) -> BTreeMap<String, String> {
    [(POOL_LABEL.to_string(), format!("{}-{pool}", scope.id))]
        .into_iter()
        .collect()
}

fn cond<'a>(st: &'a IPsecTunnelStatus, kind: &str) -> Option<&'a meshsec_crds::Condition> {
    find_condition(&st.conditions, kind)
}

fn is_true(st: &IPsecTunnelStatus, kind: &str) -> bool {
    conditions::is_condition_true(&st.conditions, kind)
}

/// The start most tests share: one tunnel selecting three fake sidecars'
/// nodes, one operator, and the tunnel Stable at epoch 1 with every node
/// ready.
struct StableMesh {
    tunnel: String,
    names: Vec<String>,
    sidecars: FakeSidecars,
    op: OperatorProcess,
    first: IPsecTunnel,
}

async fn stable_mesh(client: &Client, scope: &Scope, ack_timeout: &str) -> StableMesh {
    let tunnel = format!("{}-t", scope.id);
    let labels = pool(scope, "a");
    create_tunnel(client, scope, &tunnel, &labels[POOL_LABEL], ack_timeout).await;
    let names = node_names(&scope.id, 3);
    let sidecars = FakeSidecars::start(client, &scope.id, &tunnel, names.clone(), &labels)
        .await
        .unwrap();
    let op = OperatorProcess::spawn(&format!("{}-op", scope.id), &options(scope, 10)).unwrap();
    let first = wait_tunnel(
        client,
        &tunnel,
        Duration::from_secs(60),
        "epoch 1 ready on 3 nodes",
        stable_ready(1, 3),
    )
    .await;
    StableMesh {
        tunnel,
        names,
        sidecars,
        op,
        first,
    }
}

/// (reason, message, occurrences) of the Events about `tunnel`, oldest
/// first. Occurrences matter: the recorder folds repeats into a series.
async fn events(client: &Client, tunnel: &str) -> Vec<(String, String, i32)> {
    let api: Api<Event> = Api::all(client.clone());
    let lp = ListParams::default().fields(&format!("involvedObject.name={tunnel}"));
    let mut evs = api.list(&lp).await.unwrap().items;
    evs.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
    evs.into_iter()
        .map(|e| {
            let series = e.series.as_ref().and_then(|s| s.count).unwrap_or(1);
            let n = e.count.unwrap_or(1).max(series);
            (
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
                n,
            )
        })
        .collect()
}

fn count(evs: &[(String, String, i32)], reason: &str) -> i32 {
    evs.iter()
        .filter(|(r, _, _)| r == reason)
        .map(|(_, _, n)| *n)
        .sum()
}

async fn wait_leader(ops: &mut [OperatorProcess], timeout: Duration) -> usize {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let leaders: Vec<usize> = (0..ops.len()).filter(|i| ops[*i].is_leader()).collect();
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(leaders.len() < 2, "two replicas claim the Lease at once");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "no leader within {timeout:?}; log:\n{}",
        ops[0].log_tail(30)
    );
}

#[tokio::test]
async fn full_rotation_completes_with_node_acks_and_replaces_the_psk() {
    let (client, guard) = setup("op-rot").await;
    let scope = &guard.0;
    let StableMesh {
        tunnel,
        sidecars,
        op,
        first: t,
        ..
    } = stable_mesh(&client, scope, "30s").await;
    assert_eq!(t.status.as_ref().unwrap().members.len(), 3);
    for n in scoped_ipsecnodes(&client, &scope.id).await.unwrap() {
        let st = n.status.unwrap();
        assert!(
            st.admitted,
            "{} admitted",
            n.metadata.name.unwrap_or_default()
        );
        assert!((256..=0xFF_FFFF).contains(&st.node_id.unwrap()));
        assert_eq!(st.tunnel.as_deref(), Some(tunnel.as_str()));
    }
    let ids: std::collections::BTreeSet<i32> = scoped_ipsecnodes(&client, &scope.id)
        .await
        .unwrap()
        .iter()
        .filter_map(|n| n.status.as_ref()?.node_id)
        .collect();
    assert_eq!(ids.len(), 3, "node ids unique");
    let before = psk(&client, NS, &tunnel).await.expect("PSK Secret exists");
    assert_eq!(before.keys().collect::<Vec<_>>(), vec!["epoch-1"]);
    assert_eq!(before["epoch-1"].len(), 32);

    request_rotation(&client, &tunnel, "r1").await;
    let t = wait_tunnel(
        &client,
        &tunnel,
        Duration::from_secs(60),
        "epoch 2 stable",
        stable_ready(2, 3),
    )
    .await;
    let st = t.status.unwrap();
    assert_eq!(st.rotate_request.as_deref(), Some("r1"));
    assert!(st.last_rotation_time.is_some());
    assert!(!is_true(&st, conditions::tunnel::ROTATING));
    assert!(!is_true(&st, conditions::tunnel::DEGRADED));

    let after = psk(&client, NS, &tunnel).await.unwrap();
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        vec!["epoch-2"],
        "only the current epoch's PSK is kept"
    );
    assert_eq!(after["epoch-2"].len(), 32);
    assert_ne!(after["epoch-2"], before["epoch-1"]);

    let evs = events(&client, &tunnel).await;
    assert_eq!(count(&evs, "RotationStarted"), 1, "{evs:#?}");
    assert!(
        evs.iter()
            .any(|(r, m, _)| r == "RotationStarted" && m.contains("(Manual)")),
        "{evs:#?}"
    );
    // The sidecars published their epoch-2 keys early, so the rotation
    // started in Install (no Prepare round).
    assert!(
        evs.iter().all(|(_, m, _)| !m.contains("Prepare")),
        "{evs:#?}"
    );
    for phase in ["Install", "Switch", "Retire"] {
        assert!(
            evs.iter().any(|(r, m, _)| (*r == format!("Rotation{phase}")
                || r == "RotationStarted")
                && m.ends_with(&format!("phase {phase}"))),
            "{phase}: {evs:#?}"
        );
    }
    assert_eq!(count(&evs, "RotationCompleted"), 1, "{evs:#?}");
    let metric = op.metric(&format!(
        "meshsec_operator_tunnel_epoch{{tunnel=\"{tunnel}\"}} "
    ));
    assert_eq!(metric, Some(2.0));

    delete_tunnel_and_wait(&client, NS, &tunnel).await;
    sidecars.stop().await;
    drop(op);
}

#[tokio::test]
async fn a_node_leaving_triggers_a_rotation_that_cuts_it_off() {
    let (client, guard) = setup("op-leave").await;
    let scope = &guard.0;
    let StableMesh {
        tunnel,
        names,
        sidecars,
        op,
        ..
    } = stable_mesh(&client, scope, "2m").await;

    // The survivors hold the rotation in its first phase until the garbage
    // collector has marked the leaver's IPsecNode deleted: on a freshly
    // started control plane it only watches a new CRD's objects after its
    // next discovery resync (every 30 s), so that can take a while, and a
    // rotation of three nodes is over in seconds.
    let leaver = names[2].clone();
    sidecars.freeze(&names[..2]);
    sidecars.delete_node(&leaver).await.unwrap();
    wait_tunnel(
        &client,
        &tunnel,
        Duration::from_secs(30),
        "a rotation to start",
        |s| s.phase != RotationPhase::Stable,
    )
    .await;
    // Its IPsecNode (and so its node id) is held while the old epoch lives.
    let api: Api<IPsecNode> = Api::all(client.clone());
    let start = Instant::now();
    loop {
        let held = api.get_opt(&leaver).await.unwrap();
        let held = held.expect("departed node's IPsecNode kept during the rotation");
        if held.metadata.deletion_timestamp.is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the garbage collector never deleted {leaver}'s IPsecNode (owner: its Node)"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    sidecars.thaw_all();

    let t = wait_tunnel(
        &client,
        &tunnel,
        Duration::from_secs(60),
        "epoch 2 on the 2 remaining",
        stable_ready(2, 2),
    )
    .await;
    let st = t.status.unwrap();
    assert_eq!(
        st.members,
        names[..2].to_vec(),
        "the leaver is not a member of epoch 2"
    );
    let evs = events(&client, &tunnel).await;
    assert!(
        evs.iter()
            .any(|(r, m, _)| r == "RotationStarted" && m.contains("(MemberLeft)")),
        "{evs:#?}"
    );
    assert!(
        evs.iter()
            .any(|(r, m, _)| r == "MembersLeft" && m.contains(&leaver)),
        "{evs:#?}"
    );

    // After the old epoch is retired the id is released and the object goes.
    let start = Instant::now();
    while api.get_opt(&leaver).await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "IPsecNode {leaver} never released"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    delete_tunnel_and_wait(&client, NS, &tunnel).await;
    sidecars.stop().await;
    drop(op);
}

#[tokio::test]
async fn killing_the_leader_mid_rotation_the_standby_resumes_and_advances_once() {
    let (client, guard) = setup("op-fail").await;
    let scope = &guard.0;
    let tunnel = format!("{}-t", scope.id);
    let labels = pool(scope, "a");
    create_tunnel(&client, scope, &tunnel, &labels[POOL_LABEL], "60s").await;
    // Sidecars that publish keys only when asked, so Prepare is a real
    // phase this test can hold the rotation in.
    let sidecars = FakeSidecars::start_with(
        &client,
        &scope.id,
        &tunnel,
        node_names(&scope.id, 4),
        &labels,
        KeyPublishing::OnPrepare,
    )
    .await
    .unwrap();
    let opts = options(scope, 6);
    let mut ops = vec![
        OperatorProcess::spawn(&format!("{}-a", scope.id), &opts).unwrap(),
        OperatorProcess::spawn(&format!("{}-b", scope.id), &opts).unwrap(),
    ];
    let leader = wait_leader(&mut ops, Duration::from_secs(30)).await;
    wait_tunnel(
        &client,
        &tunnel,
        Duration::from_secs(60),
        "epoch 1 ready",
        stable_ready(1, 4),
    )
    .await;

    // Hold the rotation in Prepare: the sidecars stop acknowledging.
    sidecars.freeze(&sidecars.nodes);
    request_rotation(&client, &tunnel, "failover").await;
    wait_tunnel(
        &client,
        &tunnel,
        Duration::from_secs(30),
        "phase Prepare",
        |s| s.phase == RotationPhase::Prepare,
    )
    .await;
    let next_psk = psk(&client, NS, &tunnel).await.unwrap()["epoch-2"].clone();

    let killed_at = Instant::now();
    ops[leader].kill();
    sidecars.thaw_all();
    let standby = 1 - leader;
    while !ops[standby].is_leader() {
        assert!(
            killed_at.elapsed() < Duration::from_secs(15),
            "standby did not take over within 15 s; log:\n{}",
            ops[standby].log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failover = killed_at.elapsed();
    eprintln!("failover took {failover:?}");

    let t = wait_tunnel(
        &client,
        &tunnel,
        Duration::from_secs(60),
        "epoch 2 stable",
        stable_ready(2, 4),
    )
    .await;
    assert_eq!(t.status.unwrap().epoch, 2, "advanced exactly once");
    // Settle a little: nothing may advance further.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t = Api::<IPsecTunnel>::all(client.clone())
        .get(&tunnel)
        .await
        .unwrap();
    assert_eq!(t.status.as_ref().unwrap().epoch, 2);
    let after = psk(&client, NS, &tunnel).await.unwrap();
    assert_eq!(
        after["epoch-2"], next_psk,
        "the new leader resumed with the issued PSK, not a fresh one"
    );
    let evs = events(&client, &tunnel).await;
    assert_eq!(count(&evs, "RotationStarted"), 1, "{evs:#?}");
    assert_eq!(count(&evs, "RotationCompleted"), 1, "{evs:#?}");

    delete_tunnel_and_wait(&client, NS, &tunnel).await;
    sidecars.stop().await;
    drop(ops);
}

#[tokio::test]
async fn invalid_and_conflicting_specs_get_clear_messages() {
    let (client, guard) = setup("op-bad").await;
    let scope = &guard.0;

    // Invalid specs never get in: the API server names the field.
    let bad = format!(
        "apiVersion: meshsec.io/v1alpha1\nkind: IPsecTunnel\nmetadata: {{name: {}-bad, labels: {{{SCOPE_LABEL}: {}}}}}\nspec: {{rotation: {{interval: 5s}}, replayWindow: 100}}\n",
        scope.id, scope.id
    );
    let out = kubectl_raw(&["apply", "-f", "-"], Some(&bad)).unwrap();
    assert!(!out.success);
    assert!(
        out.stderr.contains(
            "rotation.interval must be a duration such as 1h or 30m, between 10s and 720h"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("replayWindow must be a power of two"),
        "{}",
        out.stderr
    );

    let labels = pool(scope, "a");
    let older = format!("{}-old", scope.id);
    let newer = format!("{}-new", scope.id);
    let empty = format!("{}-empty", scope.id);
    create_tunnel(&client, scope, &older, &labels[POOL_LABEL], "30s").await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // creation times differ by >= 1 s
    create_tunnel(&client, scope, &newer, &labels[POOL_LABEL], "30s").await;
    create_tunnel(&client, scope, &empty, "no-such-pool", "30s").await;
    let names = node_names(&scope.id, 2);
    let sidecars = FakeSidecars::start(&client, &scope.id, &older, names.clone(), &labels)
        .await
        .unwrap();
    let op = OperatorProcess::spawn(&format!("{}-op", scope.id), &options(scope, 10)).unwrap();

    let t = wait_tunnel(
        &client,
        &newer,
        Duration::from_secs(60),
        "Conflict on the newer tunnel",
        |s| is_true(s, conditions::tunnel::CONFLICT),
    )
    .await;
    let st = t.status.unwrap();
    let c = cond(&st, conditions::tunnel::CONFLICT).unwrap();
    assert_eq!(c.reason, "NodesClaimedByOtherTunnel");
    assert!(
        c.message.contains(&older) && c.message.contains(&names[0]),
        "{}",
        c.message
    );
    assert!(!is_true(&st, conditions::tunnel::READY));
    assert!(
        psk(&client, NS, &newer).await.is_none(),
        "nothing applied for a conflicting tunnel"
    );
    assert!(
        events(&client, &newer)
            .await
            .iter()
            .any(|(r, m, _)| r == "Conflict" && m.contains(&older))
    );

    let t = wait_tunnel(
        &client,
        &older,
        Duration::from_secs(60),
        "older tunnel ready",
        stable_ready(1, 2),
    )
    .await;
    assert!(!is_true(
        t.status.as_ref().unwrap(),
        conditions::tunnel::CONFLICT
    ));
    for n in scoped_ipsecnodes(&client, &scope.id).await.unwrap() {
        assert_eq!(
            n.status.unwrap().tunnel.as_deref(),
            Some(older.as_str()),
            "nodes belong to the older tunnel"
        );
    }

    let t = wait_tunnel(
        &client,
        &empty,
        Duration::from_secs(30),
        "NoMatchingNodes",
        |s| cond(s, conditions::tunnel::READY).is_some_and(|c| c.reason == "NoMatchingNodes"),
    )
    .await;
    let ready = cond(t.status.as_ref().unwrap(), conditions::tunnel::READY)
        .unwrap()
        .clone();
    assert_eq!(ready.status, "False");
    assert_eq!(ready.message, "nodeSelector matches no node");

    // The older tunnel goes: the newer one is no longer in conflict.
    delete_tunnel_and_wait(&client, NS, &older).await;
    wait_tunnel(
        &client,
        &newer,
        Duration::from_secs(60),
        "Conflict cleared",
        |s| !is_true(s, conditions::tunnel::CONFLICT) && s.epoch == 1,
    )
    .await;
    assert!(psk(&client, NS, &newer).await.is_some());
    delete_tunnel_and_wait(&client, NS, &newer).await;
    delete_tunnel_and_wait(&client, NS, &empty).await;
    sidecars.stop().await;
    drop(op);
}

/// Writes in the apiserver audit log made with this user agent, after
/// `offset` bytes, as (verb, resource) pairs.
fn audited_writes(log: &str, offset: u64, agent: &str) -> Vec<(String, String)> {
    let text = std::fs::read(log).unwrap_or_default();
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(text.len());
    String::from_utf8_lossy(&text[start..])
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["userAgent"].as_str().is_some_and(|u| u.contains(agent)))
        .map(|v| {
            (
                v["verb"].as_str().unwrap_or_default().to_owned(),
                v["objectRef"]["resource"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_idle_cluster_sees_zero_api_writes_from_the_operator_over_60_s() {
    let (client, guard) = setup("op-idle").await;
    let scope = &guard.0;
    let StableMesh {
        tunnel,
        sidecars,
        op,
        ..
    } = stable_mesh(&client, scope, "30s").await;
    let identity = format!("{}-op", scope.id);
    tokio::time::sleep(Duration::from_secs(3)).await; // let in-flight work settle

    let audit = std::env::var("MESHSEC_AUDIT_LOG").ok();
    let offset = audit
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len());
    let rv = |t: &IPsecTunnel| t.resource_version();
    let tunnels: Api<IPsecTunnel> = Api::all(client.clone());
    let t0 = rv(&tunnels.get(&tunnel).await.unwrap());
    let nodes0: Vec<_> = scoped_ipsecnodes(&client, &scope.id)
        .await
        .unwrap()
        .iter()
        .map(|n| n.resource_version())
        .collect();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let s0 = secrets
        .get(&format!("meshsec-psk-{tunnel}"))
        .await
        .unwrap()
        .resource_version();
    let sidecar_writes0 = sidecars.writes.load(std::sync::atomic::Ordering::Relaxed);
    let status_writes = |op: &OperatorProcess| {
        op.metric("meshsec_operator_api_writes_total{kind=\"tunnel_status\",result=\"ok\"} ")
            .unwrap_or(0.0)
    };
    let m0 = status_writes(&op);

    tokio::time::sleep(Duration::from_secs(60)).await;

    assert_eq!(
        rv(&tunnels.get(&tunnel).await.unwrap()),
        t0,
        "tunnel written while idle"
    );
    let nodes1: Vec<_> = scoped_ipsecnodes(&client, &scope.id)
        .await
        .unwrap()
        .iter()
        .map(|n| n.resource_version())
        .collect();
    assert_eq!(nodes1, nodes0, "IPsecNodes written while idle");
    assert_eq!(
        secrets
            .get(&format!("meshsec-psk-{tunnel}"))
            .await
            .unwrap()
            .resource_version(),
        s0
    );
    assert_eq!(status_writes(&op), m0);
    assert_eq!(
        sidecars.writes.load(std::sync::atomic::Ordering::Relaxed),
        sidecar_writes0
    );
    if let Some(log) = audit {
        let writes = audited_writes(&log, offset, &identity);
        let non_lease: Vec<_> = writes.iter().filter(|(_, r)| r != "leases").collect();
        let leases = writes.len() - non_lease.len();
        eprintln!(
            "audit: {leases} Lease renewal(s), {} other write(s) in 60 s",
            non_lease.len()
        );
        assert!(
            non_lease.is_empty(),
            "operator wrote while idle: {non_lease:?}"
        );
        assert!(
            leases > 0,
            "the audit log must show this replica (its Lease renewals), else the filter is wrong"
        );
    } else {
        eprintln!(
            "MESHSEC_AUDIT_LOG unset: counted by resourceVersions and the operator's own counter only"
        );
    }
    delete_tunnel_and_wait(&client, NS, &tunnel).await;
    sidecars.stop().await;
    drop(op);
}

#[tokio::test]
async fn a_node_missing_the_ack_timeout_is_evicted_reported_and_rejoins_when_it_catches_up() {
    let (client, guard) = setup("op-ack").await;
    let scope = &guard.0;
    let StableMesh {
        tunnel,
        names,
        sidecars,
        op,
        ..
    } = stable_mesh(&client, scope, "5s").await;

    let hung = names[1].clone();
    sidecars.freeze([&hung]);
    request_rotation(&client, &tunnel, "ack").await;
    let t = wait_tunnel(
        &client,
        &tunnel,
        Duration::from_secs(60),
        "epoch 2 without the hung node",
        |s| s.epoch == 2 && s.phase == RotationPhase::Stable,
    )
    .await;
    let st = t.status.unwrap();
    assert!(
        !st.members.contains(&hung),
        "evicted from epoch 2: {:?}",
        st.members
    );
    assert_eq!(st.nodes_ready, 2);
    let degraded = cond(&st, conditions::tunnel::DEGRADED).unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "NodeAckTimeout")
    );
    assert!(degraded.message.contains(&hung), "{}", degraded.message);
    let evs = events(&client, &tunnel).await;
    assert!(
        evs.iter().any(|(r, m, _)| r == "NodeAckTimeout"
            && m.contains(&hung)
            && m.contains("phase Install")),
        "{evs:#?}"
    );

    // The sidecar recovers: it catches up and rejoins without a rotation.
    sidecars.thaw_all();
    let t = wait_tunnel(
        &client,
        &tunnel,
        Duration::from_secs(30),
        "the node rejoined",
        |s| s.members.contains(&hung) && !is_true(s, conditions::tunnel::DEGRADED),
    )
    .await;
    assert_eq!(t.status.unwrap().epoch, 2, "rejoining needs no rotation");
    assert_eq!(count(&events(&client, &tunnel).await, "RotationStarted"), 1);

    delete_tunnel_and_wait(&client, NS, &tunnel).await;
    sidecars.stop().await;
    drop(op);
}
