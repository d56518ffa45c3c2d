//! Scale bench of the operator (run by `e2e/bench/operator`, ignored in the
//! normal suite): MESHSEC_BENCH_NODES simulated nodes (Node + IPsecNode,
//! fake sidecars acknowledging) on the real control plane; measures one
//! full rotation (manual trigger -> Stable on the next epoch with every node
//! ready) and the operator's peak RSS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, DeleteParams};
use meshsec_crds::{IPsecTunnel, RotationPhase};
use meshsec_e2e::fake_sidecars::{
    FakeSidecars, OperatorOptions, OperatorProcess, Scope, node_names,
};
use meshsec_e2e::kube::{client, ensure_crds, kubectl_raw, unique_name};
use meshsec_e2e::tunnels::{POOL_LABEL, create_tunnel, request_rotation};

const NS: &str = "meshsec-system";

struct Guard(Scope);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.cleanup(NS);
    }
}

/// Poll until the tunnel's status satisfies `pred`, recording when each
/// rotation phase was first seen.
async fn wait(
    client: &Client,
    name: &str,
    timeout: Duration,
    seen: &mut Vec<(RotationPhase, Duration)>,
    start: Instant,
    pred: impl Fn(&meshsec_crds::IPsecTunnelStatus) -> bool,
) {
    let api: Api<IPsecTunnel> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(t) = api.get(name).await
            && let Some(st) = t.status
        {
            if seen.last().is_none_or(|(p, _)| *p != st.phase) {
                seen.push((st.phase, start.elapsed()));
            }
            if pred(&st) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out; last status: phase {:?} epoch {} ready {}/{}",
                st.phase,
                st.epoch,
                st.nodes_ready,
                st.nodes_total
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With `MESHSEC_BENCH_PPROF=<file>`: a CPU profile of the API server
/// over the rotation (`MESHSEC_BENCH_PPROF_SECONDS`, default 60), taken
/// from its /debug/pprof (on by default) with the admin kubeconfig;
/// read it with `go tool pprof -top <file>`.
fn start_apiserver_profile() -> Option<std::process::Child> {
    let file = std::env::var_os("MESHSEC_BENCH_PPROF")?;
    let secs: u64 = std::env::var("MESHSEC_BENCH_PPROF_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let out = std::fs::File::create(&file).ok()?;
    std::process::Command::new("kubectl")
        .args([
            "get",
            "--request-timeout=0",
            "--raw",
            &format!("/debug/pprof/profile?seconds={secs}"),
        ])
        .stdout(out)
        .spawn()
        .ok()
}

#[tokio::test]
#[ignore = "scale bench: run e2e/bench/operator"]
async fn rotation_at_scale() {
    let n: usize = std::env::var("MESHSEC_BENCH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let client = client().await.unwrap_or_else(|e| panic!("{e}"));
    ensure_crds().unwrap();
    let _ = kubectl_raw(&["create", "namespace", NS], None);
    let guard = Guard(Scope::new(&unique_name("bench")));
    let scope = &guard.0;
    let tunnel = format!("{}-t", scope.id);
    create_tunnel(&client, scope, &tunnel, &scope.id, "10m").await;

    let opts = OperatorOptions {
        selector: scope.selector(),
        lease: format!("lease-{}", scope.id),
        namespace: NS.into(),
        lease_duration: 10,
        release: true,
        kubeconfig: None,
    };
    let op = OperatorProcess::spawn(&format!("{}-op", scope.id), &opts).unwrap();
    let setup = Instant::now();
    let labels = [(POOL_LABEL.to_string(), scope.id.clone())].into();
    let sidecars = FakeSidecars::start(
        &client,
        &scope.id,
        &tunnel,
        node_names(&scope.id, n),
        &labels,
    )
    .await
    .unwrap();
    let created = setup.elapsed();
    let want = i32::try_from(n).unwrap();
    let mut seen = Vec::new();
    wait(
        &client,
        &tunnel,
        Duration::from_secs(900),
        &mut seen,
        setup,
        |s| s.epoch == 1 && s.phase == RotationPhase::Stable && s.nodes_ready == want,
    )
    .await;
    let admitted = setup.elapsed();

    let rss_admitted_mib = op.peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    let profile = start_apiserver_profile();
    let start = Instant::now();
    request_rotation(&client, &tunnel, "bench").await;
    let mut phases = Vec::new();
    wait(
        &client,
        &tunnel,
        Duration::from_secs(900),
        &mut phases,
        start,
        |s| s.epoch == 2 && s.phase == RotationPhase::Stable && s.nodes_ready == want,
    )
    .await;
    let rotation = start.elapsed();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    if let Some(mut p) = profile {
        let _ = p.wait();
    }
    let rss_mib = op.peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    let sidecar_writes = sidecars.writes.load(std::sync::atomic::Ordering::Relaxed);
    let phase_text: Vec<String> = phases
        .iter()
        .map(|(p, at)| format!("{}@{:.1}s", p.as_str(), at.as_secs_f64()))
        .collect();
    println!(
        "bench: nodes={n} create_s={:.1} admit_and_epoch1_s={:.1} rotation_s={:.1} operator_rss_mib={rss_mib:.1} rss_before_rotation_mib={rss_admitted_mib:.1} sidecar_patches={sidecar_writes} loadavg={} phases=[{}]",
        created.as_secs_f64(),
        admitted.as_secs_f64(),
        rotation.as_secs_f64(),
        loadavg.join(","),
        phase_text.join(" ")
    );
    // Object sizes as the API server stores and serves them (JSON,
    // managedFields included): what every GET, watch event and write of
    // them costs.
    let size = |kind: &str, name: &str| {
        kubectl_raw(
            &["get", kind, name, "-o", "json", "--show-managed-fields"],
            None,
        )
        .map_or(0, |o| o.stdout.len())
    };
    println!(
        "bench: tunnel_bytes={} ipsecnode_bytes={}",
        size("ipsectunnel", &tunnel),
        size("ipsecnode", &sidecars.nodes[0])
    );
    if let Some((_, body)) = op.get("/metrics") {
        for l in body.lines().filter(|l| {
            l.starts_with("meshsec_operator_reconciles_total")
                || l.starts_with("meshsec_operator_reconcile_duration_seconds_sum")
                || l.starts_with("meshsec_operator_api_writes_total")
        }) {
            println!("bench: metric {l}");
        }
    }

    // Teardown while the operator still runs (it releases the finalizers):
    // the tunnel, then every IPsecNode and Node of the scope with one
    // deletecollection call each (the garbage collector would delete the
    // IPsecNodes too, but at its own ~20 requests/s); bounded, and the
    // guard strips whatever is left. MESHSEC_BENCH_SKIP_TEARDOWN=1 leaves
    // everything (for `e2e/cluster down` right after).
    sidecars.stop().await;
    if std::env::var_os("MESHSEC_BENCH_SKIP_TEARDOWN").is_some() {
        std::mem::forget(guard);
        return;
    }
    let teardown = Instant::now();
    let lp = kube::api::ListParams::default().labels(&scope.selector());
    let _ = Api::<IPsecTunnel>::all(client.clone())
        .delete(&tunnel, &DeleteParams::default())
        .await;
    let nodes: Api<meshsec_crds::IPsecNode> = Api::all(client.clone());
    let _ = nodes
        .delete_collection(&DeleteParams::background(), &lp)
        .await;
    let _ = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .delete_collection(&DeleteParams::background(), &lp)
        .await;
    while teardown.elapsed() < Duration::from_secs(600) {
        match nodes.list_metadata(&lp).await {
            Ok(l) if l.items.is_empty() => break,
            _ => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
    println!("bench: teardown_s={:.1}", teardown.elapsed().as_secs_f64());
    drop(op);
}
