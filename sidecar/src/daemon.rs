//! `run`: bring the datapath up fail-closed, serve metrics, rekey when asked,
//! and tear everything down on SIGTERM/SIGINT.
//!
//! Order matters for fail-closed: blackholes and rules first (traffic is
//! dropped, never sent in clear), then the TUN and its routes, then workers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::config::{Config, Encap, Mode, Steering};
use crate::datapath::{Datapath, Polling};
use crate::metrics::Metrics;
use crate::netlink::{Netlink, Scope, plan::plan};
use crate::{generation, keys, tun};

pub fn run(cfg: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(cfg))
}

fn scope(cfg: &Config) -> Scope {
    Scope {
        priorities: cfg.rule_priorities(),
        tables: [cfg.datapath.remote_table, cfg.datapath.local_table],
    }
}

async fn run_async(cfg: Config) -> anyhow::Result<()> {
    let keypair = keys::read_private_key(&cfg.private_key_file)?;
    let psk = keys::read_psk(&cfg.psk_file)?;
    let nl = Netlink::connect()?;
    let scope = scope(&cfg);
    let tunnel_v4 = (cfg.tunnel.mode == Mode::Tunnel).then_some(cfg.endpoint.is_ipv4());
    // A crashed tunnel-mode run may have left the local rule moved.
    for v4 in [true, false] {
        nl.restore_local_rule(v4).await?;
    }
    nl.reconcile(&plan(&cfg, false), &scope, None)
        .await
        .context("installing fail-closed routes")?;

    let generation = generation::next(&cfg.state_file, cfg.generation)?;
    let metrics = Arc::new(Metrics::new());
    let dp = Datapath::new(&cfg, keypair, psk, generation, metrics.clone())?;
    let pin = cfg.datapath.steering != Steering::Flow;
    let queues = match cfg.datapath.queues {
        _ if pin => crate::steering::queues()?,
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    let devices = tun::open(
        &cfg.datapath.device,
        cfg.tunnel.mtu,
        queues,
        cfg.datapath.offload,
    )?;
    // Held for the process's lifetime: it shows the program in
    // /proc/<pid>/fd (the TUN keeps its own reference).
    let _steering = match (
        devices.first(),
        crate::steering::program(
            cfg.datapath.steering,
            (cfg.tunnel.encap == Encap::Udp).then_some(cfg.tunnel.udp_port),
        ),
    ) {
        (Some(q), Some(prog)) => Some(crate::steering::attach(q, &prog)?),
        _ => None,
    };
    let index = nl.ifindex(&cfg.datapath.device).await?;
    if cfg.datapath.offload {
        nl.set_gso_max_segs(index, crate::datapath::MAX_SEGMENTS)
            .await
            .context("capping TUN super-packet segments")?;
    }
    let polling = Polling::of(&cfg.datapath);
    let workers = dp
        .spawn(devices, cfg.tunnel.mtu, cfg.tunnel.strict, polling, pin)
        .context("starting workers")?;
    nl.reconcile(&plan(&cfg, true), &scope, Some(index))
        .await
        .context("routing into the TUN")?;
    if let Some(v4) = tunnel_v4 {
        nl.demote_local_rule(v4, &scope).await?;
    }
    metrics.ready.set(1);
    info!(
        node = cfg.node_id,
        generation,
        queues = workers,
        ?polling,
        peers = cfg.peers.len(),
        "datapath up"
    );

    if let Some(addr) = cfg.metrics.listen {
        let m = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::http::serve(addr, m).await {
                warn!(%addr, error = %e, "metrics server stopped");
            }
        });
    }
    wait_and_rekey(&cfg, &dp).await?;

    metrics.ready.set(0);
    info!("shutting down: removing routes and rules");
    if let Some(v4) = tunnel_v4 {
        nl.restore_local_rule(v4).await?;
    }
    nl.remove_all(&scope)
        .await
        .context("removing routes and rules")?;
    // Workers sleep on or poll their TUN queues; exiting the process closes
    // the queues and the kernel removes the device.
    std::process::exit(0)
}

/// Runs until SIGTERM/SIGINT; meanwhile installs a fresh generation whenever
/// a worker reports an outbound SA near its limits.
async fn wait_and_rekey(cfg: &Config, dp: &Datapath) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // After a stall (spinning workers can starve this thread) one check is
    // enough; a burst of catch-up ticks would only repeat it.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = tick.tick() => {
                if dp.take_rekey_request() {
                    rekey(cfg, dp).await;
                }
            }
        }
    }
}

/// Persists the next generation, then installs SAs under it. The fsync
/// runs off this single-threaded runtime: it waits for the disk (up to
/// 144 ms measured under a 4 GB write), and `/healthz` and `/metrics` are
/// served here. A failed rekey is retried on the next request; until then
/// the current SAs keep sealing (the soft limit is far below the hard one,
/// where seal refuses).
async fn rekey(cfg: &Config, dp: &Datapath) {
    let (path, base) = (cfg.state_file.clone(), cfg.generation);
    let persisted = tokio::task::spawn_blocking(move || generation::next(&path, base)).await;
    let installed = persisted
        .map_err(anyhow::Error::from)
        .and_then(|r| r.map_err(anyhow::Error::from))
        .and_then(|g| dp.rekey(g).map(|()| g).map_err(anyhow::Error::from));
    match installed {
        Ok(generation) => info!(generation, "rekeyed outbound SAs"),
        Err(e) => warn!(error = %e, "rekey failed"),
    }
}
