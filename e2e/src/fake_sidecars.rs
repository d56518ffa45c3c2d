//! Test harness for the operator against the real control plane:
//! [`FakeSidecars`] act as N nodes' sidecars (Node + IPsecNode objects, and
//! acknowledgements that follow the tunnel's rotation phases), and
//! [`OperatorProcess`] runs the real `meshsec-operator` binary as a child
//! process (so "kill the leader" is a real SIGKILL).
//!
//! Isolation: everything a test creates carries the label
//! `meshsec.io/test=<scope>` and its operators run with
//! `--watch-selector meshsec.io/test=<scope>`, so tests running in parallel
//! on one control plane never see each other's objects.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use meshsec_crds::{
    DatapathStatus, EpochPublicKey, IPsecNode, IPsecNodeSpec, IPsecTunnel, IPsecTunnelStatus,
    NodeTunnelState, RotationPhase, encode_public_key,
};
use serde_json::json;

use crate::kube::{kubectl_raw, repo_root};

/// Label every harness object carries; its value is the test's scope.
pub const SCOPE_LABEL: &str = "meshsec.io/test";

/// How many API calls the harness keeps in flight.
/// (`MESHSEC_FAKE_CONCURRENCY` overrides, for the bench.)
const CONCURRENCY: usize = 48;

fn concurrency() -> usize {
    std::env::var("MESHSEC_FAKE_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(CONCURRENCY)
}

/// Harness failures.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// An API call failed.
    #[error("kube API: {0}")]
    Kube(#[from] kube::Error),
    /// Building or starting the operator failed.
    #[error("operator process: {0}")]
    Operator(String),
}

/// Result of the harness.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

/// The label selector of a scope.
pub fn selector(scope: &str) -> String {
    format!("{SCOPE_LABEL}={scope}")
}

/// When a sidecar publishes its public key for the next epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeyPublishing {
    /// As soon as the epoch it sends with starts (the protocol,
    /// docs/protocol.md "Key rotation"): rotations skip Prepare.
    #[default]
    Early,
    /// Only when the tunnel says Prepare (older sidecars; the operator
    /// still serves them, through Prepare).
    OnPrepare,
}

/// What the fake sidecars write for one tunnel, derived from its status
/// exactly as a real sidecar behaves, so each acknowledgement is one write:
///
/// | tunnel says | keys published | installed | active |
/// |---|---|---|---|
/// | Stable(e), Prepare(e to e+1) | e-1 (if any), e, e+1 (`Early`) | e | e |
/// | Install(e to e+1) | e, e+1 | e+1 | e |
/// | Switch/Retire(e+1) | e, e+1, e+2 (`Early`) | e+1 | e+1 |
///
/// With `OnPrepare`, the next epoch's key appears only from Prepare on
/// and the newest key is the highest epoch the phase needs.
pub fn desired_entry(
    tunnel: &str,
    node_index: u32,
    st: &IPsecTunnelStatus,
    publishing: KeyPublishing,
) -> Option<NodeTunnelState> {
    let e = u64::try_from(st.epoch).ok().filter(|e| *e > 0)?;
    let early = publishing == KeyPublishing::Early;
    // (oldest key, newest key, installed, active)
    let (low, high, installed, active) = match st.phase {
        RotationPhase::Stable if early => (e - 1, e + 1, e, e),
        RotationPhase::Stable => (e, e, e, e),
        RotationPhase::Prepare if early => (e - 1, e + 1, e, e),
        RotationPhase::Prepare => (e, e + 1, e, e),
        RotationPhase::Install => (e, e + 1, e + 1, e),
        RotationPhase::Switch | RotationPhase::Retire if early => (e - 1, e + 1, e, e),
        RotationPhase::Switch | RotationPhase::Retire => (e - 1, e, e, e),
    };
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    Some(NodeTunnelState {
        tunnel: tunnel.to_owned(),
        public_keys: (low.max(1)..=high)
            .map(|ep| EpochPublicKey {
                epoch: as_i64(ep),
                key: fake_key(node_index, ep),
            })
            .collect(),
        installed_epoch: Some(as_i64(installed)),
        active_epoch: Some(as_i64(active)),
        usage: None,
    })
}

/// A well-formed X25519 public key string (the operator never uses the
/// value; the API server checks its shape).
fn fake_key(node_index: u32, epoch: u64) -> String {
    let mut k = [0u8; 32];
    k[..4].copy_from_slice(&node_index.to_be_bytes());
    k[4..12].copy_from_slice(&epoch.to_be_bytes());
    k[31] = 0x42;
    encode_public_key(&k)
}

/// N fake sidecars for one tunnel.
pub struct FakeSidecars {
    client: Client,
    /// Scope label value of every object created.
    pub scope: String,
    /// The tunnel the sidecars follow.
    pub tunnel: String,
    /// Node names, in creation order.
    pub nodes: Vec<String>,
    frozen: Arc<Mutex<BTreeSet<String>>>,
    gone: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
    /// IPsecNode patches written by the sidecars so far.
    pub writes: Arc<AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for FakeSidecars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSidecars")
            .field("tunnel", &self.tunnel)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl FakeSidecars {
    /// Create `names` as Nodes (labelled with the scope and `labels`) and
    /// their IPsecNodes (owned by the Node), then follow `tunnel`,
    /// publishing next-epoch keys early (the protocol).
    ///
    /// # Errors
    /// Creating an object failed.
    pub async fn start(
        client: &Client,
        scope: &str,
        tunnel: &str,
        names: Vec<String>,
        labels: &BTreeMap<String, String>,
    ) -> Result<FakeSidecars> {
        Self::start_with(client, scope, tunnel, names, labels, KeyPublishing::Early).await
    }

    /// [`FakeSidecars::start`] with a choice of when keys are published.
    ///
    /// # Errors
    /// Creating an object failed.
    pub async fn start_with(
        client: &Client,
        scope: &str,
        tunnel: &str,
        names: Vec<String>,
        labels: &BTreeMap<String, String>,
        publishing: KeyPublishing,
    ) -> Result<FakeSidecars> {
        let nodes: Api<Node> = Api::all(client.clone());
        let ipsec: Api<IPsecNode> = Api::all(client.clone());
        stream::iter(names.iter().enumerate())
            .map(|(i, name)| create_node(&nodes, &ipsec, scope, name, i, labels))
            .buffer_unordered(concurrency())
            .try_collect::<Vec<()>>()
            .await?;
        let mut s = FakeSidecars {
            client: client.clone(),
            scope: scope.to_owned(),
            tunnel: tunnel.to_owned(),
            nodes: names,
            frozen: Arc::default(),
            gone: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
            writes: Arc::default(),
            task: None,
        };
        s.task = Some(tokio::spawn(react(
            client.clone(),
            Shared {
                publishing,
                tunnel: s.tunnel.clone(),
                names: s.nodes.clone(),
                frozen: s.frozen.clone(),
                gone: s.gone.clone(),
                stop: s.stop.clone(),
                writes: s.writes.clone(),
            },
        )));
        Ok(s)
    }

    /// Stop acknowledging on these nodes (a hung sidecar).
    pub fn freeze<'a>(&self, names: impl IntoIterator<Item = &'a String>) {
        let mut f = self.frozen.lock().unwrap_or_else(PoisonError::into_inner);
        f.extend(names.into_iter().cloned());
    }

    /// Resume acknowledging everywhere.
    pub fn thaw_all(&self) {
        self.frozen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Delete a Node (its IPsecNode is garbage-collected through the owner
    /// reference) and stop its sidecar.
    ///
    /// # Errors
    /// The delete call failed.
    pub async fn delete_node(&self, name: &str) -> Result<()> {
        self.gone
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned());
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes.delete(name, &DeleteParams::background()).await?;
        Ok(())
    }

    /// Stop the sidecars' loop (objects stay; see [`Scope::cleanup`]).
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for FakeSidecars {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn create_node(
    nodes: &Api<Node>,
    ipsec: &Api<IPsecNode>,
    scope: &str,
    name: &str,
    index: usize,
    labels: &BTreeMap<String, String>,
) -> Result<()> {
    let mut all = labels.clone();
    all.insert(SCOPE_LABEL.to_owned(), scope.to_owned());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(all.clone()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    let node = nodes.create(&PostParams::default(), &node).await?;
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: name.to_owned(),
        uid: node.uid().unwrap_or_default(),
        ..OwnerReference::default()
    };
    let idx = u32::try_from(index).unwrap_or(u32::MAX);
    let spec = IPsecNodeSpec {
        endpoint: format!(
            "10.{}.{}.{}",
            100 + (idx >> 16) % 100,
            (idx >> 8) & 0xff,
            idx & 0xff
        ),
        pod_cidrs: vec![format!("10.{}.{}.0/24", (idx >> 8) % 100, idx & 0xff)],
        key_generation: 1,
        tunnels: vec![],
        datapath: Some(DatapathStatus {
            healthy: true,
            ..DatapathStatus::default()
        }),
    };
    let mut obj = IPsecNode::new(name, spec);
    obj.metadata.labels = Some(all);
    obj.metadata.owner_references = Some(vec![owner]);
    ipsec.create(&PostParams::default(), &obj).await?;
    Ok(())
}

/// Follow the tunnel: every 100 ms read it and patch each live, unfrozen
/// node whose tunnel entry differs from what the phase asks.
/// What the sidecars' loop shares with [`FakeSidecars`].
struct Shared {
    publishing: KeyPublishing,
    tunnel: String,
    names: Vec<String>,
    frozen: Arc<Mutex<BTreeSet<String>>>,
    gone: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
}

async fn react(client: Client, sh: Shared) {
    let Shared {
        publishing,
        tunnel,
        names,
        frozen,
        gone,
        stop,
        writes,
    } = sh;
    let tunnels: Api<IPsecTunnel> = Api::all(client.clone());
    let ipsec: Api<IPsecNode> = Api::all(client);
    let mut written: HashMap<String, Option<NodeTunnelState>> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(t) = tunnels.get_opt(&tunnel).await else {
            continue;
        };
        let deleting = t
            .as_ref()
            .is_none_or(|t| t.meta().deletion_timestamp.is_some());
        let status = t.and_then(|t| t.status).unwrap_or_default();
        let skip: BTreeSet<String> = {
            let f = frozen.lock().unwrap_or_else(PoisonError::into_inner);
            let g = gone.lock().unwrap_or_else(PoisonError::into_inner);
            f.union(&g).cloned().collect()
        };
        let todo: Vec<(String, Option<NodeTunnelState>)> = names
            .iter()
            .enumerate()
            .filter(|(_, n)| !skip.contains(*n))
            .map(|(i, n)| {
                let want = if deleting {
                    None
                } else {
                    desired_entry(
                        &tunnel,
                        u32::try_from(i).unwrap_or(u32::MAX),
                        &status,
                        publishing,
                    )
                };
                (n.clone(), want)
            })
            .filter(|(n, want)| written.get(n) != Some(want))
            .collect();
        let done: Vec<(String, Option<NodeTunnelState>)> = stream::iter(todo)
            .map(|(n, want)| {
                let ipsec = ipsec.clone();
                async move {
                    let tunnels: Vec<&NodeTunnelState> = want.iter().collect();
                    let patch = json!({ "spec": { "tunnels": tunnels } });
                    ipsec
                        .patch(&n, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .ok()
                        .map(|_| (n, want))
                }
            })
            .buffer_unordered(concurrency())
            .filter_map(|r| async move { r })
            .collect()
            .await;
        writes.fetch_add(u64::try_from(done.len()).unwrap_or(0), Ordering::Relaxed);
        written.extend(done);
    }
}

/// Everything one test creates, for cleanup (also on panic).
#[derive(Debug)]
pub struct Scope {
    /// The label value.
    pub id: String,
}

impl Scope {
    /// A scope named `id` (use `kube::unique_name`).
    pub fn new(id: &str) -> Scope {
        Scope { id: id.to_owned() }
    }

    /// The label selector of this scope.
    pub fn selector(&self) -> String {
        selector(&self.id)
    }

    /// Delete every object of this scope, stripping finalizers first (the
    /// operator may already be gone), and the PSK Secrets of its tunnels.
    pub fn cleanup(&self, namespace: &str) {
        let sel = self.selector();
        for kind in ["ipsectunnels.meshsec.io", "ipsecnodes.meshsec.io"] {
            let names = kubectl_raw(&["get", kind, "-l", &sel, "-o", "name"], None)
                .map(|o| o.stdout)
                .unwrap_or_default();
            for name in names.lines().filter(|l| !l.is_empty()) {
                if kind.starts_with("ipsectunnels") {
                    let secret = format!(
                        "meshsec-psk-{}",
                        name.rsplit('/').next().unwrap_or_default()
                    );
                    let _ = kubectl_raw(
                        &[
                            "-n",
                            namespace,
                            "delete",
                            "secret",
                            &secret,
                            "--ignore-not-found",
                        ],
                        None,
                    );
                }
                let _ = kubectl_raw(
                    &[
                        "patch",
                        name,
                        "--type=merge",
                        "-p",
                        r#"{"metadata":{"finalizers":null}}"#,
                    ],
                    None,
                );
            }
            let _ = kubectl_raw(
                &[
                    "delete",
                    kind,
                    "-l",
                    &sel,
                    "--ignore-not-found",
                    "--wait=false",
                ],
                None,
            );
        }
        let _ = kubectl_raw(
            &[
                "delete",
                "nodes",
                "-l",
                &sel,
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
        // The tests' Lease is named after the scope (see OperatorOptions).
        let lease = format!("lease-{}", self.id);
        let _ = kubectl_raw(
            &[
                "-n",
                namespace,
                "delete",
                "lease",
                &lease,
                "--ignore-not-found",
            ],
            None,
        );
    }
}

/// Build `meshsec-operator` once per test process and return its path
/// (`MESHSEC_OPERATOR_BIN` overrides: use that binary, build nothing).
///
/// # Errors
/// cargo failed; the message has its output.
pub fn operator_binary(release: bool) -> Result<PathBuf, String> {
    static DEBUG: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    static RELEASE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let cell = if release { &RELEASE } else { &DEBUG };
    cell.get_or_init(|| build_operator(release)).clone()
}

fn build_operator(release: bool) -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("MESHSEC_OPERATOR_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root()).args([
        "build",
        "-q",
        "-p",
        "meshsec-operator",
        "--bin",
        "meshsec-operator",
    ]);
    // `cargo test` exports CARGO_PKG_*, CARGO_MANIFEST_DIR, ... to the test;
    // build scripts that watch such variables would rerun and rebuild the
    // whole dependency tree. Give the inner cargo a clean environment.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let keep = matches!(key.as_str(), "CARGO_HOME" | "CARGO_TARGET_DIR");
        if !keep && (key.starts_with("CARGO_") || key == "OUT_DIR") {
            cmd.env_remove(&key);
        }
    }
    if release {
        cmd.arg("--release");
    }
    let out = cmd.output().map_err(|e| format!("running cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p meshsec-operator failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from);
    let bin = target
        .join(if release { "release" } else { "debug" })
        .join("meshsec-operator");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("built, but {} is missing", bin.display()))
    }
}

/// A running operator replica.
#[derive(Debug)]
pub struct OperatorProcess {
    child: Child,
    /// Its identity in the Lease.
    pub identity: String,
    /// Port of its /metrics, /healthz, /readyz.
    pub ops_port: u16,
    /// Where its logs go.
    pub log: PathBuf,
}

/// How to start a replica.
#[derive(Debug, Clone)]
pub struct OperatorOptions {
    /// Scope selector (`--watch-selector`).
    pub selector: String,
    /// Lease name (unique per test; `lease-<scope>` is deleted by
    /// [`Scope::cleanup`]).
    pub lease: String,
    /// Namespace of Secrets and Lease.
    pub namespace: String,
    /// Lease duration in seconds.
    pub lease_duration: u64,
    /// Use the release build.
    pub release: bool,
    /// Run with this kubeconfig instead of the harness's (admin) one, e.g.
    /// the chart's service-account token to prove its RBAC suffices.
    pub kubeconfig: Option<std::path::PathBuf>,
}

impl OperatorProcess {
    /// Start a replica named `identity`.
    ///
    /// # Errors
    /// Building or spawning failed.
    pub fn spawn(identity: &str, opts: &OperatorOptions) -> Result<OperatorProcess> {
        let bin = operator_binary(opts.release).map_err(HarnessError::Operator)?;
        let port = free_port().map_err(|e| HarnessError::Operator(format!("no free port: {e}")))?;
        let dir = repo_root().join("target").join("e2e-logs");
        std::fs::create_dir_all(&dir).map_err(|e| HarnessError::Operator(e.to_string()))?;
        let log = dir.join(format!("{identity}.log"));
        let file =
            std::fs::File::create(&log).map_err(|e| HarnessError::Operator(e.to_string()))?;
        let child = Command::new(&bin)
            .args([
                "--identity",
                identity,
                "--watch-selector",
                &opts.selector,
                "--lease-name",
                &opts.lease,
            ])
            .args(["--namespace", &opts.namespace, "--log-format", "text"])
            .args([
                "--lease-duration",
                &opts.lease_duration.to_string(),
                "--lease-renew-before",
                "2",
            ])
            .args(["--ops-addr", &format!("127.0.0.1:{port}")])
            .env(
                "RUST_LOG",
                std::env::var("MESHSEC_OPERATOR_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
            )
            .envs(
                opts.kubeconfig
                    .iter()
                    .map(|k| ("KUBECONFIG", k.as_os_str())),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|e| HarnessError::Operator(format!("spawning {}: {e}", bin.display())))?;
        Ok(OperatorProcess {
            child,
            identity: identity.to_owned(),
            ops_port: port,
            log,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no Lease release, no cleanup, like a crashed pod.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// GET a path of its ops server (`None` if it does not answer).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.ops_port, path)
    }

    /// The value of a metric line starting with `series` (exact series text).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    /// Whether it reports holding the Lease.
    pub fn is_leader(&self) -> bool {
        self.metric("meshsec_operator_leader ") == Some(1.0)
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status.lines().find_map(|l| {
            l.strip_prefix("VmHWM:")?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
    }

    /// The tail of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Minimal HTTP/1.0 GET on loopback (the ops endpoints are plain HTTP).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((code, body))
}

/// Names `<prefix>-0..n`.
pub fn node_names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// List the IPsecNodes of a scope.
///
/// # Errors
/// The list call failed.
pub async fn scoped_ipsecnodes(client: &Client, scope: &str) -> Result<Vec<IPsecNode>> {
    let api: Api<IPsecNode> = Api::all(client.clone());
    Ok(api
        .list(&ListParams::default().labels(&selector(scope)))
        .await?
        .items)
}

/// Path helper so callers need not know the layout.
pub fn e2e_log_dir() -> PathBuf {
    Path::new(&repo_root()).join("target").join("e2e-logs")
}
