//! IPsecNode reconciler: node-id allocation and admission to a tunnel; a
//! finalizer keeps a departed node's object (and so its id) until no
//! retained epoch lists it.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use meshsec_crds::conditions::{self, condition, reason, set_condition};
use meshsec_crds::{IPsecNode, IPsecNodeStatus, IPsecTunnel, RotationPhase};
use serde_json::json;
use tracing::{info, instrument};

use super::{from_finalizer, policy as shared_policy};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::ids::{self, Claim, NodeId};
use crate::metrics::ControllerKind;
use crate::observe;
use crate::status::time;

/// Finalizer on every IPsecNode: its node id stays reserved until the
/// epochs that used it are retired.
pub const FINALIZER: &str = "meshsec.io/node-id";

/// Reconcile one IPsecNode.
///
/// # Errors
/// API failures, id exhaustion, or "still retained" (retried).
#[instrument(skip_all, fields(node = %node.name_any()))]
pub async fn reconcile(node: Arc<IPsecNode>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(ControllerKind::Node);
    if !ctx.is_leader() {
        return Ok(Action::await_change());
    }
    let api: Api<IPsecNode> = Api::all(ctx.client.clone());
    finalizer::finalizer(&api, FINALIZER, node, |event| async {
        match event {
            Finalizer::Apply(n) => admit(&n, &ctx).await,
            Finalizer::Cleanup(n) => release(&n, &ctx),
        }
    })
    .await
    .map_err(from_finalizer)
}

/// Count, log, requeue.
pub fn error_policy(node: Arc<IPsecNode>, error: &Error, ctx: Arc<Context>) -> Action {
    shared_policy(ControllerKind::Node, &node.name_any(), error, &ctx.metrics)
}

async fn admit(n: &IPsecNode, ctx: &Context) -> Result<Action> {
    let name = n.name_any();
    let current = n.status.clone().unwrap_or_default();
    let id = match current
        .node_id
        .and_then(|i| NodeId::try_from(i).ok())
        .filter(|i| ids::in_range(*i))
    {
        Some(id) => id,
        None => allocate(&name, ctx).await?,
    };
    let node_meta = ctx.nodes.get(&ObjectRef::new(&name));
    let tunnel = node_meta
        .as_deref()
        .and_then(|m| observe::tunnel_of(m, &ctx.tunnels.state()));

    let mut st = IPsecNodeStatus {
        node_id: Some(i32::try_from(id).unwrap_or(i32::MAX)),
        admitted: tunnel.is_some(),
        tunnel: tunnel.clone(),
        ..current.clone()
    };
    let admitted = match &tunnel {
        Some(t) => condition(
            conditions::node::ADMITTED,
            true,
            reason::NODE_ID_ALLOCATED,
            format!("node id {id}; member of IPsecTunnel {t}"),
            None,
            time(Context::now()),
        ),
        None => condition(
            conditions::node::ADMITTED,
            false,
            reason::NOT_SELECTED,
            format!(
                "node id {id}; no IPsecTunnel selects this node (or the one that does is in Conflict)"
            ),
            None,
            time(Context::now()),
        ),
    };
    set_condition(&mut st.conditions, admitted);
    if st != current {
        let api: Api<IPsecNode> = Api::all(ctx.client.clone());
        let patch = json!({
            "apiVersion": "meshsec.io/v1alpha1",
            "kind": "IPsecNode",
            "metadata": { "name": name },
            "status": st,
        });
        let params = PatchParams::apply(&ctx.settings.field_manager).force();
        let res = api
            .patch_status(&name, &params, &Patch::Apply(&patch))
            .await;
        ctx.metrics.write("node_status", res.is_ok());
        res?;
        if current.node_id.is_none() {
            info!(node_id = id, tunnel = ?tunnel, "node admitted");
        }
    }
    Ok(Action::await_change())
}

/// Pick an id no cached IPsecNode holds and this replica has not just
/// handed out (the cache may lag our own writes).
async fn allocate(name: &str, ctx: &Context) -> Result<NodeId> {
    let mut recent = ctx.allocated.lock().await;
    if let Some(id) = recent.get(name) {
        return Ok(*id);
    }
    let mut taken: BTreeSet<NodeId> = ctx
        .ipsecnodes
        .state()
        .iter()
        .filter_map(|n| n.status.as_ref()?.node_id)
        .filter_map(|i| NodeId::try_from(i).ok())
        .collect();
    taken.extend(recent.values().copied());
    let plan = ids::plan(
        &[Claim {
            name: name.to_owned(),
            id: None,
        }],
        &taken,
    )?;
    let id = plan
        .assign
        .first()
        .map(|(_, id)| *id)
        .ok_or(Error::Ids(ids::IdError::Exhausted))?;
    recent.insert(name.to_owned(), id);
    Ok(id)
}

/// The IPsecNode is being deleted (its Node went away). Keep it while the
/// tunnel it belonged to still retains an epoch it was a member of: until
/// that tunnel is Stable again with the node out of its member list.
fn release(n: &IPsecNode, ctx: &Context) -> Result<Action> {
    let name = n.name_any();
    if let Some(tunnel) = n.status.as_ref().and_then(|s| s.tunnel.clone())
        && let Some(t) = ctx.tunnels.get(&ObjectRef::<IPsecTunnel>::new(&tunnel))
        && retains(&t, &name)
    {
        return Err(Error::Retained { node: name, tunnel });
    }
    info!("node id released");
    Ok(Action::await_change())
}

fn retains(t: &IPsecTunnel, node: &str) -> bool {
    t.status.as_ref().is_some_and(|s| {
        s.phase != RotationPhase::Stable
            || s.pending_trigger.is_some()
            || s.members.iter().any(|m| m == node)
            || s.next_members.iter().any(|m| m == node)
    })
}
