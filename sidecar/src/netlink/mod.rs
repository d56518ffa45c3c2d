//! Policy routing through rtnetlink: install a [`plan::Plan`], reconcile it
//! against what is already there (a restart after a crash finds its own
//! rules and blackholes and keeps them), and remove it on clean shutdown.

pub mod plan;

use std::collections::HashSet;
use std::net::IpAddr;

use futures::{TryStreamExt, stream};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage, RulePortRange};
use rtnetlink::packet_route::{AddressFamily, IpProtocol};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};
use tracing::{debug, info};

use crate::cidr::Cidr;
use plan::{Plan, RouteSpec, RouteTarget, RuleSpec};

/// Route and rule requests in flight at once during a reconcile. One at a
/// time, each waiting for its acknowledgement, 5,000 peers' TUN routes took
/// ~0.45 s longer, and after a restart their traffic stays blackholed
/// until they are in (docs/datapath.md, Peer lookup and scale).
const IN_FLIGHT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(std::io::Error),
    #[error("netlink {op} failed: {source}")]
    Request {
        op: String,
        source: rtnetlink::Error,
    },
    #[error("device {0} not found")]
    NoDevice(String),
    #[error("refusing to move the local rule: its copy below meshsec's rules is missing")]
    LocalRuleCopyMissing,
}

/// Runs `op` on every item, [`IN_FLIGHT`] requests at a time (netlink
/// matches each acknowledgement to its request); the first error ends it.
async fn concurrently<I, F, Fut>(items: I, op: F) -> Result<(), NetlinkError>
where
    I: Iterator,
    F: FnMut(I::Item) -> Fut,
    Fut: std::future::Future<Output = Result<(), NetlinkError>>,
{
    stream::iter(items.map(Ok))
        .try_for_each_concurrent(IN_FLIGHT, op)
        .await
}

fn req(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let op = op.into();
    move |source| NetlinkError::Request { op, source }
}

/// A netlink connection driven on the current tokio runtime.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

/// What identifies our state in the kernel: rule priorities and tables.
#[derive(Debug, Clone)]
pub struct Scope {
    pub priorities: std::ops::Range<u32>,
    pub tables: [u32; 2],
}

impl Netlink {
    pub fn connect() -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    pub async fn ifindex(&self, name: &str) -> Result<u32, NetlinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link.header.index),
            Ok(None) | Err(rtnetlink::Error::NetlinkError(_)) => {
                Err(NetlinkError::NoDevice(name.into()))
            }
            Err(e) => Err(req(format!("link get {name}"))(e)),
        }
    }

    /// Caps how many segments one GSO super-packet handed to device `index`
    /// may carry; the kernel segments larger ones in software first. The
    /// workers split each super-packet into a fixed number of buffers.
    pub async fn set_gso_max_segs(&self, index: u32, segs: u32) -> Result<(), NetlinkError> {
        let mut msg = rtnetlink::packet_route::link::LinkMessage::default();
        msg.header.index = index;
        msg.attributes
            .push(rtnetlink::packet_route::link::LinkAttribute::GsoMaxSegs(
                segs,
            ));
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(req(format!("link set gso_max_segs {segs}")))
    }

    /// Makes the kernel match `plan` within `scope`: adds what is missing,
    /// then deletes what is ours but not planned, and leaves the rest
    /// untouched. Adding first means a change of layout never has a moment
    /// without the rule or route that sends member traffic into the TUN or
    /// a blackhole: the upgrade from one rule per remote prefix to one
    /// `lookup <remote>` rule, deleting first, let plaintext to remote pods
    /// fall through to the main table until the new rule was in.
    pub async fn reconcile(
        &self,
        plan: &Plan,
        scope: &Scope,
        tun_index: Option<u32>,
    ) -> Result<(), NetlinkError> {
        let have_routes = self.routes(scope).await?;
        let have: HashSet<&RouteSpec> = have_routes.iter().map(|(s, _)| s).collect();
        let missing = plan.routes.iter().filter(|s| !have.contains(s));
        concurrently(missing, |spec| self.add_route(spec, tun_index)).await?;
        let want_routes: HashSet<&RouteSpec> = plan.routes.iter().collect();
        let stale = have_routes.iter().filter(|(s, _)| !want_routes.contains(s));
        concurrently(stale, |(spec, msg)| async move {
            debug!(?spec, "deleting stale route");
            let del = self.handle.route().del(msg.clone());
            del.execute().await.map_err(req("route del"))
        })
        .await?;
        let have_rules = self.rules(scope).await?;
        let have: HashSet<&RuleSpec> = have_rules.iter().map(|(s, _)| s).collect();
        let missing = plan.rules.iter().filter(|s| !have.contains(s));
        concurrently(missing, |spec| async move {
            let mut add = self.handle.rule().add();
            *add.message_mut() = rule_message(spec);
            add.execute()
                .await
                .map_err(req(format!("rule add {spec:?}")))
        })
        .await?;
        let want_rules: HashSet<&RuleSpec> = plan.rules.iter().collect();
        let stale = have_rules.iter().filter(|(s, _)| !want_rules.contains(s));
        concurrently(stale, |(spec, msg)| async move {
            debug!(?spec, "deleting stale rule");
            let del = self.handle.rule().del(msg.clone());
            del.execute().await.map_err(req("rule del"))
        })
        .await?;
        info!(
            rules = plan.rules.len(),
            routes = plan.routes.len(),
            "policy routing reconciled"
        );
        Ok(())
    }

    /// Deletes the kernel's `local` rule at priority 0 for one family (tunnel
    /// mode: our ESP rules must come first). The plan holds a copy of it
    /// further down; call after [`Self::reconcile`] installed that copy.
    pub async fn demote_local_rule(&self, v4: bool, scope: &Scope) -> Result<(), NetlinkError> {
        // Never leave the host without local delivery: the copy must exist.
        let copy = self
            .rules(scope)
            .await?
            .iter()
            .any(|(s, _)| s.v4 == v4 && s.table == plan::LOCAL_TABLE);
        if !copy {
            return Err(NetlinkError::LocalRuleCopyMissing);
        }
        for (spec, msg) in self.rules_at_zero(v4).await? {
            if spec.table == plan::LOCAL_TABLE {
                self.handle
                    .rule()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(req("local rule del"))?;
                info!(v4, "moved the local rule below meshsec's ESP rules");
            }
        }
        Ok(())
    }

    /// Puts the kernel's `local` rule back at priority 0 if it is missing.
    pub async fn restore_local_rule(&self, v4: bool) -> Result<(), NetlinkError> {
        let present = self
            .rules_at_zero(v4)
            .await?
            .iter()
            .any(|(s, _)| s.table == plan::LOCAL_TABLE);
        if !present {
            let spec = RuleSpec {
                v4,
                priority: 0,
                table: plan::LOCAL_TABLE,
                iif: None,
                ip_proto: None,
                dport: None,
                src: None,
                dst: None,
            };
            let mut add = self.handle.rule().add();
            *add.message_mut() = rule_message(&spec);
            add.execute().await.map_err(req("local rule add"))?;
            info!(v4, "restored the local rule at priority 0");
        }
        Ok(())
    }

    async fn rules_at_zero(&self, v4: bool) -> Result<Vec<(RuleSpec, RuleMessage)>, NetlinkError> {
        let mut out = Vec::new();
        let mut dump = self
            .handle
            .rule()
            .get(if v4 { IpVersion::V4 } else { IpVersion::V6 })
            .execute();
        while let Some(msg) = dump.try_next().await.map_err(req("rule dump"))? {
            if let Some(spec) = rule_spec(&msg).filter(|s| s.priority == 0) {
                out.push((spec, msg));
            }
        }
        Ok(out)
    }

    /// Removes every rule and route in `scope` (clean shutdown).
    pub async fn remove_all(&self, scope: &Scope) -> Result<(), NetlinkError> {
        self.reconcile(&Plan::default(), scope, None).await
    }

    async fn add_route(
        &self,
        spec: &RouteSpec,
        tun_index: Option<u32>,
    ) -> Result<(), NetlinkError> {
        let builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(spec.dst.addr(), spec.dst.prefix_len())
            .map_err(|e| NetlinkError::Request {
                op: format!("route {spec:?}"),
                source: rtnetlink::Error::InvalidNla(e.to_string()),
            })?
            .table_id(spec.table)
            .priority(spec.metric)
            .protocol(RouteProtocol::Static);
        let msg = match (spec.target, tun_index) {
            (RouteTarget::Blackhole, _) => builder.kind(RouteType::BlackHole).build(),
            (RouteTarget::Tun, Some(idx)) => builder
                .scope(RouteScope::Link)
                .output_interface(idx)
                .build(),
            (RouteTarget::Tun, None) => return Err(NetlinkError::NoDevice("tun".into())),
        };
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(req(format!("route add {spec:?}")))
    }

    async fn routes(&self, scope: &Scope) -> Result<Vec<(RouteSpec, RouteMessage)>, NetlinkError> {
        let mut out = Vec::new();
        for family in [
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ] {
            let mut dump = self.handle.route().get(family).execute();
            while let Some(msg) = dump.try_next().await.map_err(req("route dump"))? {
                if let Some(spec) = route_spec(&msg).filter(|s| scope.tables.contains(&s.table)) {
                    out.push((spec, msg));
                }
            }
        }
        Ok(out)
    }

    async fn rules(&self, scope: &Scope) -> Result<Vec<(RuleSpec, RuleMessage)>, NetlinkError> {
        let mut out = Vec::new();
        for v in [IpVersion::V4, IpVersion::V6] {
            let mut dump = self.handle.rule().get(v).execute();
            while let Some(msg) = dump.try_next().await.map_err(req("rule dump"))? {
                if let Some(spec) =
                    rule_spec(&msg).filter(|s| scope.priorities.contains(&s.priority))
                {
                    out.push((spec, msg));
                }
            }
        }
        Ok(out)
    }
}

fn route_spec(msg: &RouteMessage) -> Option<RouteSpec> {
    let mut table = u32::from(msg.header.table);
    let (mut dst, mut metric, mut oif) = (None, 0, false);
    for a in &msg.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(IpAddr::V4(*ip)),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = Some(IpAddr::V6(*ip)),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Oif(_) => oif = true,
            _ => {}
        }
    }
    let target = match msg.header.kind {
        RouteType::BlackHole => RouteTarget::Blackhole,
        RouteType::Unicast if oif => RouteTarget::Tun,
        // Anything else in our tables (e.g. a stale unicast without device)
        // is not ours to interpret; it is kept as an unknown, deletable entry.
        _ => RouteTarget::Tun,
    };
    let dst = Cidr::new(dst?, msg.header.destination_prefix_length).ok()?;
    Some(RouteSpec {
        table,
        dst,
        metric,
        target,
    })
}

fn rule_message(spec: &RuleSpec) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = if spec.v4 {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.action = RuleAction::ToTable;
    m.header.table = if spec.table < 256 {
        spec.table as u8
    } else {
        0
    };
    m.attributes.push(RuleAttribute::Priority(spec.priority));
    m.attributes.push(RuleAttribute::Table(spec.table));
    if let Some(iif) = &spec.iif {
        m.attributes.push(RuleAttribute::Iifname(iif.clone()));
    }
    if let Some(p) = spec.ip_proto {
        m.attributes
            .push(RuleAttribute::IpProtocol(IpProtocol::from(p)));
    }
    if let Some(port) = spec.dport {
        m.attributes
            .push(RuleAttribute::DestinationPortRange(RulePortRange {
                start: port,
                end: port,
            }));
    }
    if let Some(c) = spec.src {
        m.header.src_len = c.prefix_len();
        m.attributes.push(RuleAttribute::Source(c.addr()));
    }
    if let Some(c) = spec.dst {
        m.header.dst_len = c.prefix_len();
        m.attributes.push(RuleAttribute::Destination(c.addr()));
    }
    m
}

fn rule_spec(msg: &RuleMessage) -> Option<RuleSpec> {
    let mut s = RuleSpec {
        v4: msg.header.family == AddressFamily::Inet,
        priority: 0,
        table: u32::from(msg.header.table),
        iif: None,
        ip_proto: None,
        dport: None,
        src: None,
        dst: None,
    };
    for a in &msg.attributes {
        match a {
            RuleAttribute::Priority(p) => s.priority = *p,
            RuleAttribute::Table(t) => s.table = *t,
            RuleAttribute::Iifname(n) => s.iif = Some(n.clone()),
            RuleAttribute::IpProtocol(p) => s.ip_proto = Some(u8::from(*p)),
            RuleAttribute::DestinationPortRange(r) => s.dport = Some(r.start),
            RuleAttribute::Source(ip) => s.src = Cidr::new(*ip, msg.header.src_len).ok(),
            RuleAttribute::Destination(ip) => s.dst = Cidr::new(*ip, msg.header.dst_len).ok(),
            _ => {}
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_rule_message_roundtrip() {
        let spec = RuleSpec {
            v4: false,
            priority: 104,
            table: 2480,
            iif: Some("meshsec0".into()),
            ip_proto: Some(17),
            dport: Some(4500),
            src: Some("fd00:2::/64".parse().unwrap()),
            dst: Some("fd00:3::/64".parse().unwrap()),
        };
        assert_eq!(rule_spec(&rule_message(&spec)), Some(spec));
    }
}
