//! Test assertions about IPsecTunnels shared by the control-plane tests:
//! create one selecting a pool of fake nodes, wait for a status, delete it
//! and wait for the teardown. They panic with the last status seen, like
//! `assert!`, because they are the tests' checks.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use meshsec_crds::conditions;
use meshsec_crds::{IPsecTunnel, IPsecTunnelSpec, IPsecTunnelStatus, NodeSelector, RotationPhase};

use crate::fake_sidecars::{SCOPE_LABEL, Scope};

/// The node label a test's tunnels select on.
pub const POOL_LABEL: &str = "meshsec.io/test-pool";

/// Creates a tunnel in `scope` selecting the nodes labelled
/// `POOL_LABEL=<pool>`, with a 1 s grace period.
pub async fn create_tunnel(
    client: &Client,
    scope: &Scope,
    name: &str,
    pool: &str,
    ack_timeout: &str,
) {
    let mut spec = IPsecTunnelSpec {
        node_selector: NodeSelector {
            match_labels: Some(
                [(POOL_LABEL.to_string(), pool.to_string())]
                    .into_iter()
                    .collect(),
            ),
            match_expressions: None,
        },
        ..IPsecTunnelSpec::default()
    };
    spec.rotation.ack_timeout = ack_timeout.into();
    spec.rotation.grace_period = "1s".into();
    let mut t = IPsecTunnel::new(name, spec);
    t.metadata.labels = Some(
        [(SCOPE_LABEL.to_string(), scope.id.clone())]
            .into_iter()
            .collect(),
    );
    Api::<IPsecTunnel>::all(client.clone())
        .create(&PostParams::default(), &t)
        .await
        .unwrap();
}

/// Asks for a manual rotation: the `meshsec.io/rotate` annotation set to
/// `token` (a value the tunnel has not served yet).
pub async fn request_rotation(client: &Client, tunnel: &str, token: &str) {
    let patch = serde_json::json!({"metadata": {"annotations": {"meshsec.io/rotate": token}}});
    Api::<IPsecTunnel>::all(client.clone())
        .patch(tunnel, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Polls the tunnel until `pred` holds; panics with the last status.
pub async fn wait_tunnel(
    client: &Client,
    name: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&IPsecTunnelStatus) -> bool,
) -> IPsecTunnel {
    let api: Api<IPsecTunnel> = Api::all(client.clone());
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < timeout {
        if let Ok(t) = api.get(name).await {
            if t.status.as_ref().is_some_and(&pred) {
                return t;
            }
            last = Some(t);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "timed out after {timeout:?} waiting for {what}; last: {:#?}",
        last.map(|t| t.status)
    );
}

/// Stable on `epoch`, Ready, with every one of `nodes` members ready.
pub fn stable_ready(epoch: i64, nodes: i32) -> impl Fn(&IPsecTunnelStatus) -> bool {
    move |s| {
        s.epoch == epoch
            && s.phase == RotationPhase::Stable
            && s.nodes_ready == nodes
            && s.nodes_total == nodes
            && conditions::is_condition_true(&s.conditions, conditions::tunnel::READY)
    }
}

/// The PSK Secret of `tunnel` in `namespace` (data key -> bytes), if any.
pub async fn psk(
    client: &Client,
    namespace: &str,
    tunnel: &str,
) -> Option<BTreeMap<String, Vec<u8>>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let s = api
        .get_opt(&format!("meshsec-psk-{tunnel}"))
        .await
        .unwrap()?;
    Some(
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect(),
    )
}

/// Deletes the tunnel and waits until the finalizer let it go (the
/// sidecars tore down); its PSK Secret in `namespace` must be gone too.
pub async fn delete_tunnel_and_wait(client: &Client, namespace: &str, tunnel: &str) {
    let api: Api<IPsecTunnel> = Api::all(client.clone());
    api.delete(tunnel, &DeleteParams::default()).await.unwrap();
    let start = Instant::now();
    while api.get_opt(tunnel).await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "tunnel {tunnel} not torn down in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        psk(client, namespace, tunnel).await.is_none(),
        "PSK Secret must be deleted with the tunnel"
    );
}
