//! The Helm chart against the real control plane: `helm install` with the
//! real helm, then the operator runs with the token of the chart's own
//! ServiceAccount (not the admin kubeconfig) and must admit nodes, rotate
//! and tear a tunnel down. Any permission the chart forgot shows up as a
//! failed phase here; `kubectl auth can-i` shows the ones it must not give.
//!
//! There is no kubelet, so the chart's Deployment never runs a pod; the
//! same binary runs as a local process under the chart's identity instead.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use meshsec_e2e::fake_sidecars::{
    FakeSidecars, OperatorOptions, OperatorProcess, Scope, node_names,
};
use meshsec_e2e::kube::{client, ensure_crds, kubectl, kubectl_raw, repo_root, unique_name};
use meshsec_e2e::tunnels::{
    POOL_LABEL, create_tunnel, delete_tunnel_and_wait, request_rotation, stable_ready, wait_tunnel,
};

/// Uninstalls the release and deletes its namespace and the scope's
/// objects when dropped (also on panic).
struct Release {
    name: String,
    namespace: String,
    scope: Scope,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.scope.cleanup(&self.namespace);
        let _ = Command::new("helm")
            .args(["uninstall", &self.name, "-n", &self.namespace])
            .output();
        let _ = kubectl_raw(
            &["delete", "namespace", &self.namespace, "--wait=false"],
            None,
        );
    }
}

fn helm_install(name: &str, namespace: &str) {
    let chart = repo_root().join("charts/meshsec");
    let out = Command::new("helm")
        .args(["install", name])
        .arg(&chart)
        .args(["-n", namespace, "--create-namespace"])
        .output()
        .expect("running helm (on PATH via `e2e/cluster env`)");
    assert!(
        out.status.success(),
        "helm install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A kubeconfig for `sa` in `namespace`: the admin kubeconfig's server and
/// CA with a fresh token of the ServiceAccount (TokenRequest).
fn service_account_kubeconfig(namespace: &str, sa: &str, dir: &Path) -> PathBuf {
    let token = kubectl(&["-n", namespace, "create", "token", sa, "--duration=1h"]).unwrap();
    let server = kubectl(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ])
    .unwrap();
    let ca = kubectl(&[
        "config",
        "view",
        "--minify",
        "--raw",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority-data}",
    ])
    .unwrap();
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    \
         certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    token: {}\n\
         contexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
        server.trim(),
        ca.trim(),
        token.trim()
    );
    let path = dir.join(format!("{sa}.kubeconfig"));
    std::fs::write(&path, yaml).unwrap();
    path
}

/// `kubectl auth can-i` as the ServiceAccount: "yes" or "no".
fn can_i(namespace: &str, sa: &str, args: &[&str]) -> bool {
    let who = format!("system:serviceaccount:{namespace}:{sa}");
    let mut full = vec!["auth", "can-i", "--as", &who];
    full.extend_from_slice(args);
    let out = kubectl_raw(&full, None).unwrap();
    out.stdout.trim() == "yes"
}

#[tokio::test]
async fn the_chart_rbac_is_enough_for_a_full_rotation_and_no_more() {
    let client = client().await.unwrap_or_else(|e| panic!("{e}"));
    ensure_crds().unwrap_or_else(|e| panic!("installing CRDs: {e}"));
    let id = unique_name("chart");
    let rel = Release {
        name: id.clone(),
        namespace: format!("{id}-ns"),
        scope: Scope::new(&id),
    };
    helm_install(&rel.name, &rel.namespace);
    let sa = format!("{}-operator", rel.name);
    let ns = rel.namespace.as_str();

    // What it needs...
    for args in [
        ["patch", "ipsectunnels.meshsec.io", "--subresource=status"].as_slice(),
        &["watch", "ipsecnodes.meshsec.io"],
        &["list", "nodes"],
        &["-n", ns, "get", "secrets/meshsec-psk-x"],
        &["-n", ns, "update", "leases.coordination.k8s.io"],
    ] {
        assert!(can_i(ns, &sa, args), "the chart should allow {args:?}");
    }
    // ...and what it must not have: other namespaces' Secrets, listing
    // Secrets at all, writing Nodes or the tunnel policy.
    for args in [
        ["-n", "default", "get", "secrets/anything"].as_slice(),
        &["-n", ns, "list", "secrets"],
        &["-n", ns, "watch", "secrets"],
        &["patch", "nodes"],
        &["create", "ipsectunnels.meshsec.io"],
        &["delete", "ipsecnodes.meshsec.io"],
        &["get", "secrets", "--all-namespaces"],
    ] {
        assert!(!can_i(ns, &sa, args), "the chart must not allow {args:?}");
    }

    // A tunnel and three fake sidecars, reconciled by the operator under
    // the chart's identity.
    let tunnel = format!("{id}-t");
    create_tunnel(&client, &rel.scope, &tunnel, &id, "2m").await;
    let labels = [(POOL_LABEL.to_string(), id.clone())].into();
    let sidecars = FakeSidecars::start(&client, &id, &tunnel, node_names(&id, 3), &labels)
        .await
        .unwrap();

    let dir = repo_root().join("target").join("e2e-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let opts = OperatorOptions {
        selector: rel.scope.selector(),
        lease: sa.clone(),
        namespace: ns.into(),
        lease_duration: 10,
        release: false,
        kubeconfig: Some(service_account_kubeconfig(ns, &sa, &dir)),
    };
    let op = OperatorProcess::spawn(&format!("{id}-op"), &opts).unwrap();
    let ready = Duration::from_secs(90);
    wait_tunnel(&client, &tunnel, ready, "epoch 1", stable_ready(1, 3)).await;

    request_rotation(&client, &tunnel, "1").await;
    wait_tunnel(&client, &tunnel, ready, "epoch 2", stable_ready(2, 3)).await;

    // Teardown: the finalizer deletes the PSK Secret (delete permission).
    delete_tunnel_and_wait(&client, ns, &tunnel).await;

    let log = std::fs::read_to_string(&op.log).unwrap();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "the operator hit a permission the chart lacks:\n{log}"
    );
    drop(sidecars);
}
