//! meshsec-operator: the binary. Wires caches, controllers, leader
//! election and the ops endpoints; all logic lives in the library.

use std::collections::HashMap;
use std::future::ready;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use meshsec_crds::{IPsecNode, IPsecTunnel, conditions};
use meshsec_operator::context::{Context, Settings};
use meshsec_operator::controller::{node, tunnel};
use meshsec_operator::lease::{self, LeaseSettings};
use meshsec_operator::metrics::Metrics;
use meshsec_operator::ops::{self, OpsState};
use meshsec_operator::trim;
use prometheus_client::registry::Registry;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// Reconciles IPsecTunnel policy into PSK Secrets, node ids and
/// make-before-break key rotations (Stable -> Prepare -> Install -> Switch
/// -> Retire), driven by what each node's IPsecNode acknowledges.
///
/// Run two or more replicas: they elect a leader through a Lease and only
/// the leader writes. Logs go to stderr (filter with RUST_LOG, default
/// "info"). Kubernetes access comes from KUBECONFIG or the in-cluster
/// service account.
#[derive(Debug, Parser)]
#[command(name = "meshsec-operator", version, about, long_about)]
struct Args {
    /// Namespace of the PSK Secrets (meshsec-psk-<tunnel>) and of the
    /// leader-election Lease. Sidecars read the Secrets from here.
    #[arg(long, env = "MESHSEC_NAMESPACE", default_value = "meshsec-system")]
    namespace: String,

    /// Name of the coordination.k8s.io Lease the replicas compete for.
    #[arg(long, default_value = "meshsec-operator")]
    lease_name: String,

    /// This replica's identity in the Lease and in Events (default: the
    /// POD_NAME variable, else hostname-pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Seconds the Lease stays valid without renewal. A replica that dies
    /// is replaced after at most this long (plus about one second).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=300))]
    lease_duration: u64,

    /// Seconds before the Lease expires at which the leader renews it; must
    /// be smaller than --lease-duration.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=299))]
    lease_renew_before: u64,

    /// Do not elect a leader: this replica always writes. Only for a single
    /// replica; two replicas with this flag would fight.
    #[arg(long)]
    no_leader_election: bool,

    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    ops_addr: SocketAddr,

    /// Milliseconds the tunnel controller waits after a change before
    /// reconciling, so a burst of node acknowledgements costs one pass.
    #[arg(long, default_value_t = 500)]
    debounce_ms: u64,

    /// Field manager name for server-side apply of status and Secrets.
    #[arg(long, default_value = "meshsec-operator")]
    field_manager: String,

    /// Only manage IPsecTunnels, IPsecNodes and Nodes carrying these labels
    /// (a Kubernetes label selector, e.g. "meshsec.io/shard=a"). Default:
    /// all. Partitions are independent (node ids are unique per partition);
    /// tests use this to run several operators on one control plane.
    #[arg(long)]
    watch_selector: Option<String>,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Human-readable lines.
    Text,
}

/// Broadcast buffer of each shared informer stream.
const SHARED_BUFFER: usize = 1024;

/// IPsecNode reconciles in flight at once. Unbounded, 5,000 nodes arriving
/// together meant thousands of concurrent admission writes, each holding
/// its request and response in memory; the API server cannot take them
/// faster than ~64 at a time here anyway.
const NODE_CONCURRENCY: u16 = 64;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.lease_renew_before >= args.lease_duration {
        bail!(
            "--lease-renew-before ({}) must be smaller than --lease-duration ({})",
            args.lease_renew_before,
            args.lease_duration
        );
    }
    init_logs(args.log_format);
    run(args).await
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn identity(args: &Args) -> String {
    args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let identity = identity(&args);
    let mut config = kube::Config::infer()
        .await
        .context("no Kubernetes config (KUBECONFIG or in-cluster)")?;
    // Lets audit logs (and tests counting writes) tell this replica apart.
    let agent = format!(
        "meshsec-operator/{} ({identity})",
        env!("CARGO_PKG_VERSION")
    );
    config.headers.push((
        hyper::header::USER_AGENT,
        agent.parse().context("user agent")?,
    ));
    let client = Client::try_from(config).context("building the Kubernetes client")?;

    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let ops_state = Arc::new(OpsState {
        registry,
        ready: false.into(),
        healthy: true.into(),
    });

    let election = if args.no_leader_election {
        lease::always_leader()
    } else {
        let settings = LeaseSettings {
            namespace: args.namespace.clone(),
            name: args.lease_name.clone(),
            identity: identity.clone(),
            duration: args.lease_duration,
            grace: args.lease_renew_before,
        };
        lease::elect(client.clone(), &settings)
            .await
            .context("joining the leader election")?
    };
    let tracker = tokio::spawn(track_leadership(election.leader.clone(), metrics.clone()));

    // Shared informers: one watch per kind, fanned out to both controllers.
    let (tunnels, tunnel_writer) = reflector::store_shared::<IPsecTunnel>(SHARED_BUFFER);
    let (ipsecnodes, ipsecnode_writer) = reflector::store_shared::<IPsecNode>(SHARED_BUFFER);
    let (nodes, node_writer) = reflector::store_shared(SHARED_BUFFER);
    let subscribe_err = || anyhow::anyhow!("shared store without a dispatcher");
    let t_for_tunnels = tunnel_writer.subscribe().ok_or_else(subscribe_err)?;
    let t_for_nodes = tunnel_writer.subscribe().ok_or_else(subscribe_err)?;
    let n_for_tunnels = ipsecnode_writer.subscribe().ok_or_else(subscribe_err)?;
    let n_for_nodes = ipsecnode_writer.subscribe().ok_or_else(subscribe_err)?;
    let k_for_tunnels = node_writer.subscribe().ok_or_else(subscribe_err)?;
    let k_for_nodes = node_writer.subscribe().ok_or_else(subscribe_err)?;

    let wc = match &args.watch_selector {
        Some(sel) => watcher::Config::default().labels(sel),
        None => watcher::Config::default(),
    };
    let informers = futures::future::join3(
        watcher(Api::<IPsecTunnel>::all(client.clone()), wc.clone())
            .default_backoff()
            .modify(trim::for_cache)
            .reflect_shared(tunnel_writer)
            .for_each(log_watch_error),
        watcher(Api::<IPsecNode>::all(client.clone()), wc.clone())
            .default_backoff()
            .modify(trim::for_cache)
            .reflect_shared(ipsecnode_writer)
            .for_each(log_watch_error),
        watcher(Api::<PartialObjectMeta<Node>>::all(client.clone()), wc)
            .default_backoff()
            .modify(trim::for_cache)
            .reflect_shared(node_writer)
            .for_each(log_watch_error),
    );
    let informers = tokio::spawn(informers);

    let ops_task = tokio::spawn(ops::serve(args.ops_addr, ops_state.clone()));
    tokio::time::timeout(Duration::from_secs(120), async {
        tunnels.wait_until_ready().await?;
        ipsecnodes.wait_until_ready().await?;
        nodes.wait_until_ready().await
    })
    .await
    .context("caches did not sync within 120 s")?
    .context("cache writer dropped")?;
    ops_state.ready.store(true, Ordering::Relaxed);
    info!(%identity, "caches synced");

    let reporter = Reporter {
        controller: "meshsec-operator".into(),
        instance: Some(identity.clone()),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics: metrics.clone(),
        settings: Settings {
            namespace: args.namespace.clone(),
            field_manager: args.field_manager.clone(),
        },
        leader: election.leader.clone(),
        tunnels: tunnels.clone(),
        ipsecnodes: ipsecnodes.clone(),
        nodes: nodes.clone(),
        allocated: Arc::default(),
    });

    let debounce = Duration::from_millis(args.debounce_ms);
    let tunnel_ctrl = Controller::for_shared_stream(t_for_tunnels, tunnels.clone())
        .watches_shared_stream(n_for_tunnels, all(&tunnels))
        .watches_shared_stream(k_for_tunnels, all(&tunnels))
        .with_config(ControllerConfig::default().debounce(debounce))
        .reconcile_all_on(lease::became_leader(election.leader.clone()))
        .graceful_shutdown_on(shutdown_signal())
        .run(tunnel::reconcile, tunnel::error_policy, ctx.clone())
        .for_each(|_| ready(()));
    let node_ctrl = Controller::for_shared_stream(n_for_nodes, ipsecnodes.clone())
        .watches_shared_stream(k_for_nodes, |n: Arc<PartialObjectMeta<Node>>| {
            Some(ObjectRef::new(&n.name_any()))
        })
        .watches_shared_stream(admission_relevant(t_for_nodes), all(&ipsecnodes))
        .with_config(ControllerConfig::default().concurrency(NODE_CONCURRENCY))
        .reconcile_all_on(lease::became_leader(election.leader.clone()))
        .graceful_shutdown_on(shutdown_signal())
        .run(node::reconcile, node::error_policy, ctx.clone())
        .for_each(|_| ready(()));

    info!(%identity, namespace = %args.namespace, "controllers started");
    tokio::join!(tunnel_ctrl, node_ctrl);
    ops_state.healthy.store(false, Ordering::Relaxed);
    info!("controllers stopped; releasing the Lease");
    drop(ctx);
    tracker.abort();
    let _ = tracker.await;
    let Some(task) = release_lease(election) else {
        return Ok(());
    };
    if tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .is_err()
    {
        warn!("Lease release timed out; standbys take over when it expires");
    }
    informers.abort();
    ops_task.abort();
    Ok(())
}

/// Drop our receiver so the election loop releases the Lease.
fn release_lease(
    election: lease::Election,
) -> Option<
    tokio::task::JoinHandle<
        Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>,
    >,
> {
    let lease::Election { leader, task, .. } = election;
    drop(leader);
    task
}

/// Map any change to "reconcile every object in `store`".
fn all<K, O>(store: &Store<K>) -> impl Fn(Arc<O>) -> Vec<ObjectRef<K>> + Send + Sync + 'static
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let store = store.clone();
    move |_| {
        store
            .state()
            .iter()
            .map(|o| ObjectRef::from_obj(o.as_ref()))
            .collect()
    }
}

/// Tunnel events that can change node admission: selector (generation),
/// deletion, or the Conflict condition flipping. Status churn during a
/// rotation is filtered out, so 5,000 nodes are not re-examined per phase.
fn admission_relevant(
    s: impl Stream<Item = Arc<IPsecTunnel>> + Send + 'static,
) -> impl Stream<Item = Arc<IPsecTunnel>> + Send + 'static {
    // (generation, deleting, in conflict) last seen per tunnel.
    type Key = (Option<i64>, bool, bool);
    let seen: Arc<Mutex<HashMap<String, Key>>> = Arc::default();
    s.filter(move |t| {
        let conflict = t.status.as_ref().is_some_and(|s| {
            conditions::is_condition_true(&s.conditions, conditions::tunnel::CONFLICT)
        });
        let key = (
            t.metadata.generation,
            t.metadata.deletion_timestamp.is_some(),
            conflict,
        );
        let mut map = seen.lock().unwrap_or_else(PoisonError::into_inner);
        ready(map.insert(t.name_any(), key) != Some(key))
    })
}

async fn log_watch_error<T>(r: Result<T, watcher::Error>) {
    if let Err(e) = r {
        warn!(error = %e, "watch failed; retrying with back-off");
    }
}

async fn track_leadership(mut rx: tokio::sync::watch::Receiver<bool>, metrics: Arc<Metrics>) {
    loop {
        let leader = *rx.borrow_and_update();
        metrics.leader.set(i64::from(leader));
        info!(leader, "leadership");
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
    info!("shutdown requested");
}
