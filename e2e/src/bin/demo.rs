//! The main job: a local multi-node cluster with encryption on, shown working.
//!
//! Against the real control plane from `e2e/cluster up` (run by `e2e/demo`):
//! installs the CRDs, runs the operator, builds N node namespaces with a pod
//! each, registers every node (Node + IPsecNode with its X25519 public key),
//! lets the operator admit them (node ids, PSK Secret), then runs one
//! sidecar per node with the configuration the API produced, sends ping and
//! an HTTP request carrying a secret marker between pods, and proves from an
//! underlay capture that only ESP crossed the wire and the marker never did.
//!
//! The per-node agent that will turn the API objects into sidecar
//! configuration is not written yet: [`node_config`] does its job here, from
//! exactly the objects the agent will read.

#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine as _;
use clap::Parser;
use meshsec_e2e::kube::{ensure_crds, kubectl, kubectl_stdin, wait_for};
use meshsec_e2e::topology::{Guard, Node, Topology};
use serde_json::Value;

/// Label that scopes the demo's objects (the operator watches only these).
const LABEL: &str = "meshsec.io/demo";
const TUNNEL: &str = "demo";
const NAMESPACE: &str = "meshsec-system";
const MARKER: &str = "meshsec-demo-secret-marker-5f3a";

#[derive(Debug, Parser)]
#[command(about = "Run meshsec on a local multi-node cluster and show it encrypting")]
struct Args {
    /// The meshsec-sidecar binary.
    #[arg(long)]
    sidecar: PathBuf,
    /// The meshsec-operator binary.
    #[arg(long)]
    operator: PathBuf,
    /// Number of node namespaces.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=8))]
    nodes: u8,
    /// Where keys, configs, logs and the capture go.
    #[arg(long, default_value = "/tmp/meshsec-demo")]
    workdir: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.workdir)?;
    let work = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&args.workdir)?
        .keep();
    section("1. API: CRDs and the operator");
    ensure_crds().map_err(anyhow::Error::msg)?;
    kubectl_stdin(
        &["apply", "-f", "-"],
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}\n"),
    )?;
    remove_demo_objects();
    let operator = start_operator(&args.operator, &work)?;
    let _cleanup = ApiCleanup(operator);
    println!(
        "operator running (log: {})",
        work.join("operator.log").display()
    );

    section("2. nodes: network namespaces, Node and IPsecNode objects");
    let topo = Topology::new(args.nodes, 1).map_err(|e| anyhow::anyhow!("{e}"))?;
    let tunnel = create_tunnel()?;
    let epoch = tunnel["status"]["epoch"].as_i64().unwrap_or(1);
    let mut keys = Vec::new();
    for node in &topo.nodes {
        keys.push(register_node(&args.sidecar, &work, node, epoch)?);
    }
    let ids = wait_admitted(&topo)?;
    let n = topo.nodes.len() as i64;
    wait_for(
        "the tunnel to count every node",
        Duration::from_secs(30),
        || {
            let t = get_json(&["get", "ipsectunnel", TUNNEL])?;
            (t["status"]["nodesTotal"].as_i64() == Some(n)).then_some(())
        },
    )?;
    print!(
        "{}",
        kubectl(&["get", "ipsectunnels,ipsecnodes", "-l", LABEL])?
    );
    println!("(admitted with node ids; not ready until their datapaths report healthy)");

    section("3. sidecars: configuration from the API, one datapath per node");
    let psk = write_psk(&work, epoch)?;
    let uid = tunnel["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut sidecars = Vec::new();
    for (i, node) in topo.nodes.iter().enumerate() {
        let cfg = node_config(&work, &topo, i, &ids, &keys, &psk, epoch, &uid)?;
        sidecars.push(start_sidecar(&args.sidecar, &work, node, &cfg)?);
    }
    for node in &topo.nodes {
        wait_healthy(node)?;
    }
    println!("{} sidecars healthy", topo.nodes.len());
    report_healthy(&topo)?;
    print!(
        "{}",
        kubectl(&["get", "ipsectunnels,ipsecnodes", "-l", LABEL])?
    );

    section("4. traffic between pods on different nodes, captured on the underlay");
    let result = traffic(&topo, &work);
    for (i, mut s) in sidecars.into_iter().enumerate() {
        print_counters(&topo.nodes[i]);
        s.signal_and_wait("TERM");
    }
    let verdict = result?;
    section("5. verdict");
    println!("{verdict}");
    println!("\nworkdir: {}", work.display());
    Ok(())
}

fn section(title: &str) {
    println!("\n=== {title}");
}

fn start_operator(bin: &Path, work: &Path) -> Result<Guard> {
    let log = std::fs::File::create(work.join("operator.log"))?;
    let child = Command::new(bin)
        .args([
            "--no-leader-election",
            "--ops-addr",
            "127.0.0.1:18080",
            "--log-format",
            "text",
            "--namespace",
            NAMESPACE,
            "--watch-selector",
            LABEL,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Guard(Some(child)))
}

/// The cluster-wide policy, scoped to the demo's nodes; returns it once the
/// operator has reconciled it (status.epoch set).
fn create_tunnel() -> Result<Value> {
    kubectl_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: meshsec.io/v1alpha1\nkind: IPsecTunnel\nmetadata:\n  name: {TUNNEL}\n  labels: {{{LABEL}: \"true\"}}\nspec:\n  nodeSelector:\n    matchLabels: {{{LABEL}: \"true\"}}\n"
        ),
    )?;
    let t = wait_for(
        "the operator to reconcile the tunnel",
        Duration::from_secs(30),
        || {
            let t = get_json(&["get", "ipsectunnel", TUNNEL])?;
            t["status"]["epoch"].as_i64().filter(|e| *e > 0).map(|_| t)
        },
    )?;
    Ok(t)
}

/// What the agent will do at start: a fresh key pair, the Node's IPsecNode
/// with its endpoint, pod CIDRs and public key. Returns the private key file
/// and the public key (hex).
fn register_node(
    sidecar: &Path,
    work: &Path,
    node: &Node,
    epoch: i64,
) -> Result<(PathBuf, String)> {
    let name = node_name(node);
    let key_file = work.join(format!("{name}.key"));
    let out = Command::new(sidecar)
        .args(["keygen", "--out"])
        .arg(&key_file)
        .output()
        .with_context(|| format!("running {}", sidecar.display()))?;
    ensure!(
        out.status.success(),
        "keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public_hex = String::from_utf8(out.stdout)?.trim().to_owned();
    let public_b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(&public_hex)?);
    kubectl_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{{LABEL}: \"true\"}}\n"
        ),
    )?;
    let node_uid = kubectl(&["get", "node", &name, "-o", "jsonpath={.metadata.uid}"])?;
    kubectl_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: meshsec.io/v1alpha1
kind: IPsecNode
metadata:
  name: {name}
  labels: {{{LABEL}: \"true\"}}
  ownerReferences: [{{apiVersion: v1, kind: Node, name: {name}, uid: {node_uid}}}]
spec:
  endpoint: {ep}
  podCIDRs: [{c4}, {c6}]
  keyGeneration: 1
  tunnels:
  - tunnel: {TUNNEL}
    publicKeys: [{{epoch: {epoch}, key: {public_b64}}}]
    installedEpoch: {epoch}
    activeEpoch: {epoch}
",
            ep = node.underlay4,
            c4 = node.pod_cidr4,
            c6 = node.pod_cidr6,
        ),
    )?;
    println!(
        "{name}: endpoint {} pods {} public key {public_b64}",
        node.underlay4, node.pod_cidr4
    );
    Ok((key_file, public_hex))
}

fn node_name(node: &Node) -> String {
    format!("demo-node-{}", node.index)
}

/// Node ids the operator allocated, in topology order.
fn wait_admitted(topo: &Topology) -> Result<Vec<i64>> {
    let mut ids = Vec::new();
    for node in &topo.nodes {
        let name = node_name(node);
        let id = wait_for(
            &format!("{name} to be admitted"),
            Duration::from_secs(30),
            || {
                let n = get_json(&["get", "ipsecnode", &name])?;
                (n["status"]["admitted"].as_bool() == Some(true))
                    .then(|| n["status"]["nodeId"].as_i64())
                    .flatten()
            },
        )?;
        ids.push(id);
    }
    Ok(ids)
}

/// The epoch's PSK from the operator's Secret, into a 0600 file (hex).
fn write_psk(work: &Path, epoch: i64) -> Result<PathBuf> {
    let secret = get_json(&[
        "get",
        "secret",
        &format!("meshsec-psk-{TUNNEL}"),
        "-n",
        NAMESPACE,
    ])
    .context("the operator wrote no PSK Secret")?;
    let b64 = secret["data"][format!("epoch-{epoch}")]
        .as_str()
        .with_context(|| format!("PSK Secret has no key for epoch {epoch}"))?;
    let psk = base64::engine::general_purpose::STANDARD.decode(b64)?;
    let path = work.join("psk");
    write_private(&path, &hex::encode(psk))?;
    Ok(path)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Static-mode configuration for node `i`, from the API objects: its id,
/// the tunnel's uid and epoch, the PSK, and every other member as a peer.
#[allow(clippy::too_many_arguments)]
fn node_config(
    work: &Path,
    topo: &Topology,
    i: usize,
    ids: &[i64],
    keys: &[(PathBuf, String)],
    psk: &Path,
    epoch: i64,
    tunnel_uid: &str,
) -> Result<PathBuf> {
    let me = &topo.nodes[i];
    let mut y = format!(
        "nodeId: {}\nendpoint: {}\npodCidrs: [{}, {}]\nprivateKeyFile: {}\npskFile: {}\nepoch: {epoch}\nstateFile: {}\ntunnelUid: {tunnel_uid}\ntunnel:\n  mode: transport\n  encap: udp\npeers:\n",
        ids[i],
        me.underlay4,
        me.pod_cidr4,
        me.pod_cidr6,
        keys[i].0.display(),
        psk.display(),
        work.join(format!("{}.gen", node_name(me))).display(),
    );
    for (j, p) in topo.nodes.iter().enumerate().filter(|(j, _)| *j != i) {
        writeln!(
            y,
            "- nodeId: {}\n  endpoint: {}\n  podCidrs: [{}, {}]\n  publicKey: {}",
            ids[j], p.underlay4, p.pod_cidr4, p.pod_cidr6, keys[j].1
        )?;
    }
    let path = work.join(format!("{}.yaml", node_name(me)));
    std::fs::write(&path, y)?;
    Ok(path)
}

/// What the agent will do once its datapath is up: report it healthy in the
/// node's IPsecNode; the operator then counts the node as ready.
fn report_healthy(topo: &Topology) -> Result<()> {
    for node in &topo.nodes {
        kubectl(&[
            "patch",
            "ipsecnode",
            &node_name(node),
            "--type=merge",
            "-p",
            r#"{"spec":{"datapath":{"healthy":true}}}"#,
        ])?;
    }
    let n = topo.nodes.len() as i64;
    wait_for(
        "the tunnel to count every node ready",
        Duration::from_secs(30),
        || {
            let t = get_json(&["get", "ipsectunnel", TUNNEL])?;
            (t["status"]["nodesReady"].as_i64() == Some(n)).then_some(())
        },
    )?;
    Ok(())
}

fn start_sidecar(bin: &Path, work: &Path, node: &Node, cfg: &Path) -> Result<Guard> {
    let log = std::fs::File::create(work.join(format!("{}.log", node_name(node))))?;
    let child = Topology::command(
        &node.ns,
        &bin.to_string_lossy(),
        &["run", "--config", &cfg.to_string_lossy()],
    )
    .env("RUST_LOG", "info")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(log)
    .spawn()?;
    Ok(Guard(Some(child)))
}

fn wait_healthy(node: &Node) -> Result<()> {
    wait_for(
        &format!("{} sidecar /healthz", node_name(node)),
        Duration::from_secs(15),
        || {
            let out =
                Topology::exec(&node.ns, "curl", &["-sf", "http://127.0.0.1:9480/healthz"]).ok()?;
            String::from_utf8_lossy(&out.stdout)
                .starts_with("ok")
                .then_some(())
        },
    )?;
    Ok(())
}

/// Ping every other node's pod from node 1's pod, and fetch `/<MARKER>` over
/// HTTP from node 2's pod, while tcpdump records the underlay. Returns the
/// verdict, or an error when anything crossed in clear.
fn traffic(topo: &Topology, work: &Path) -> Result<String> {
    let pcap = work.join("underlay.pcap");
    // --immediate-mode: otherwise libpcap hands packets over in blocks and
    // the last ones are lost when the capture is stopped.
    let mut capture = quiet(
        &topo.underlay_ns,
        "tcpdump",
        &[
            "-i",
            "br0",
            "--immediate-mode",
            "-U",
            "-s",
            "0",
            "-w",
            &pcap.to_string_lossy(),
        ],
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let client = &topo.nodes[0].pods[0];
    let mut report = String::new();
    for node in &topo.nodes[1..] {
        let dst = node.pods[0].ip4.to_string();
        let out = Topology::exec(
            &client.ns,
            "ping",
            &["-c", "3", "-i", "0.2", "-W", "2", &dst],
        );
        let ok = out.is_ok();
        writeln!(
            report,
            "ping {} -> {dst}: {}",
            client.ip4,
            if ok { "3/3 replies" } else { "FAILED" }
        )?;
        ensure!(ok, "ping {} -> {dst} failed", client.ip4);
    }
    let server_pod = &topo.nodes[1].pods[0];
    let mut server = quiet(
        &server_pod.ns,
        "python3",
        &[
            "-m",
            "http.server",
            "8080",
            "--bind",
            &server_pod.ip4.to_string(),
            "--directory",
            "/nonexistent-meshsec",
        ],
    )?;
    let url = format!("http://{}:8080/{MARKER}", server_pod.ip4);
    let code = wait_for(
        "the HTTP server in the pod",
        Duration::from_secs(10),
        || {
            let out = Topology::exec(
                &client.ns,
                "curl",
                &["-s", "-o", "/dev/null", "-w", "%{http_code}", &url],
            )
            .ok()?;
            Some(String::from_utf8_lossy(&out.stdout).into_owned())
        },
    )?;
    writeln!(
        report,
        "HTTP GET {url}: status {code} (the path is the marker)"
    )?;
    server.signal_and_wait("TERM");
    std::thread::sleep(Duration::from_millis(300));
    capture.signal_and_wait("INT");
    report.push_str(&judge_capture(&pcap, topo)?);
    Ok(report)
}

/// Starts `prog` in `ns` in the background with its output discarded.
fn quiet(ns: &str, prog: &str, args: &[&str]) -> Result<Guard> {
    let child = Topology::command(ns, prog, args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {prog}"))?;
    Ok(Guard(Some(child)))
}

/// Reads the capture with tshark (Wireshark's dissectors, independent of
/// ours): every packet between pod addresses must be ESP, and the marker's
/// bytes must appear nowhere in the file.
fn judge_capture(pcap: &Path, topo: &Topology) -> Result<String> {
    let raw = std::fs::read(pcap)?;
    let marker_seen = raw.windows(MARKER.len()).any(|w| w == MARKER.as_bytes());
    let pods: Vec<String> = topo
        .nodes
        .iter()
        .map(|n| n.pods[0].ip4.to_string())
        .collect();
    let pod_filter = pods
        .iter()
        .map(|p| format!("ip.addr=={p}"))
        .collect::<Vec<_>>()
        .join(" || ");
    let count = |filter: &str| -> Result<usize> {
        let out = Command::new("tshark")
            .args(["-r", &pcap.to_string_lossy(), "-Y", filter])
            .stderr(Stdio::null())
            .output()
            .context("running tshark")?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().count())
    };
    let esp = count(&format!("({pod_filter}) && esp"))?;
    let clear = count(&format!("({pod_filter}) && !esp"))?;
    let mut r = String::new();
    writeln!(
        r,
        "underlay capture: {esp} ESP packets between pods, {clear} not ESP"
    )?;
    writeln!(
        r,
        "marker bytes in the capture: {}",
        if marker_seen { "FOUND" } else { "absent" }
    )?;
    if marker_seen || clear > 0 || esp == 0 {
        bail!("{r}encryption NOT shown: see {}", pcap.display());
    }
    r.push_str("pod traffic between nodes crossed the underlay only as ESP: encryption is on.");
    Ok(r)
}

fn print_counters(node: &Node) {
    let Ok(out) = Topology::exec(&node.ns, "curl", &["-sf", "http://127.0.0.1:9480/metrics"])
    else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let wanted = [
        "meshsec_datapath_packets_out_total",
        "meshsec_datapath_packets_in_total",
        "meshsec_datapath_drops_auth_failed_total",
    ];
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| wanted.iter().any(|w| l.starts_with(w)))
        .collect();
    println!("{}: {}", node_name(node), lines.join("  "));
}

fn get_json(args: &[&str]) -> Option<Value> {
    let mut full = args.to_vec();
    full.extend(["-o", "json"]);
    kubectl(&full)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
}

/// Deletes the demo's API objects when the demo ends, however it ends,
/// while the operator (held here, stopped after) can still run their
/// finalizers.
struct ApiCleanup(#[allow(dead_code)] Guard);

impl Drop for ApiCleanup {
    fn drop(&mut self) {
        remove_demo_objects();
    }
}

const DEMO_KINDS: [&str; 3] = ["ipsecnodes", "nodes", "ipsectunnels"];

/// Deletes every object labelled by an earlier or this demo run. The
/// operator's finalizers (node ids, tunnel teardown) wait for sidecars that
/// the demo has already stopped, so after a short grace period the demo
/// lifts them itself.
fn remove_demo_objects() {
    for kind in DEMO_KINDS {
        let _ = kubectl(&[
            "delete",
            kind,
            "-l",
            LABEL,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
    let gone = || {
        DEMO_KINDS.iter().all(|k| {
            kubectl(&["get", k, "-l", LABEL, "-o", "name"]).is_ok_and(|s| s.trim().is_empty())
        })
    };
    if wait_for("demo objects to go", Duration::from_secs(10), || {
        gone().then_some(())
    })
    .is_ok()
    {
        return;
    }
    for kind in DEMO_KINDS {
        let names = kubectl(&["get", kind, "-l", LABEL, "-o", "name"]).unwrap_or_default();
        for name in names.split_whitespace() {
            let _ = kubectl(&[
                "patch",
                name,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ]);
        }
    }
}
