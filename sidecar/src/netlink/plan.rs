//! What the kernel's policy routing must look like for a configuration: a
//! pure function from [`Config`] to rules and routes, so it can be tested
//! without a kernel and diffed against what is installed.
//!
//! Per address family (DESIGN.md, datapath):
//! - `prio+0  iif <tun> lookup main`: what the sidecar writes back is
//!   routed normally (sealed packets to the peer, opened ones to pods).
//! - `prio+1  ipproto esp lookup <local>` and `prio+2  ipproto udp dport
//!   <port> lookup <local>`: ciphertext for local pods goes to the TUN.
//! - `prio+4  lookup <remote>`: plaintext to remote members goes to the TUN
//!   to be sealed. One rule for all peers: the table holds only their pod
//!   prefixes, and a lookup that finds no route there goes on to the next
//!   rule (as the `<local>` lookups above already rely on). With a rule
//!   per prefix the kernel walked every peer's rule for every packet it
//!   routed: 31 % of all samples with 2,000 peers (docs/datapath.md).
//! - `prio+5  from <remote pod prefix> lookup <local>` (strict only):
//!   plaintext from member pods reaches the TUN, which drops and counts it.
//!   A source can only be matched by a rule per prefix; placed after the
//!   remote lookup, they are walked only by packets not bound for a remote
//!   pod (with 5,000 peers they took the single stream from ~7 to ~2
//!   Gbit/s when they came first). Plaintext from a member pod to another
//!   member's pod is then sealed instead of dropped here, and that node's
//!   anti-spoofing check drops it (`spoofed_source`).
//!
//! - tunnel mode only: `prio+6  lookup local` for the endpoint's family.
//!   Tunnel-mode ESP is addressed to the node itself, and the kernel's
//!   `local` rule (priority 0) would deliver it to the host stack before any
//!   of ours; the daemon moves that rule here (as Cilium does for IPsec) and
//!   puts it back on shutdown. It comes after the strict rules, so plaintext
//!   from member pods to the node's own address is still dropped.
//!
//! Both tables hold a `dev <tun>` route per prefix and a blackhole for the
//! same prefix at a higher metric. The TUN route vanishes with the device
//! when the sidecar dies; the blackhole stays, so traffic fails closed.

use crate::cidr::Cidr;
use crate::config::{Config, Encap};

pub const MAIN_TABLE: u32 = 254;
pub const LOCAL_TABLE: u32 = 255;
const IPPROTO_ESP: u8 = 50;
const IPPROTO_UDP: u8 = 17;
/// Metric of the routes into the TUN (below the blackholes').
pub const TUN_METRIC: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleSpec {
    pub v4: bool,
    pub priority: u32,
    pub table: u32,
    pub iif: Option<String>,
    pub ip_proto: Option<u8>,
    pub dport: Option<u16>,
    pub src: Option<Cidr>,
    pub dst: Option<Cidr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteTarget {
    /// Into the TUN device.
    Tun,
    /// Drop (fail closed).
    Blackhole,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    pub table: u32,
    pub dst: Cidr,
    pub metric: u32,
    pub target: RouteTarget,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub rules: Vec<RuleSpec>,
    pub routes: Vec<RouteSpec>,
}

fn rule(v4: bool, priority: u32, table: u32) -> RuleSpec {
    RuleSpec {
        v4,
        priority,
        table,
        iif: None,
        ip_proto: None,
        dport: None,
        src: None,
        dst: None,
    }
}

/// The rules and routes `cfg` needs; `routes` only hold the blackholes when
/// `with_tun` is false (installed before the TUN exists, so the window
/// between start and ready already fails closed).
pub fn plan(cfg: &Config, with_tun: bool) -> Plan {
    let d = &cfg.datapath;
    let p = d.rule_priority;
    let remote: Vec<Cidr> = cfg
        .peers
        .iter()
        .flat_map(|peer| peer.pod_cidrs.iter().copied())
        .collect();
    let mut local: Vec<Cidr> = cfg.pod_cidrs.clone();
    if cfg.tunnel.mode == crate::config::Mode::Tunnel {
        // Tunnel-mode ESP is addressed to the node itself.
        local.push(Cidr::host(cfg.endpoint));
    }
    let mut out = Plan::default();
    for v4 in [true, false] {
        let fam = |c: &&Cidr| c.is_ipv4() == v4;
        out.rules.push(RuleSpec {
            iif: Some(d.device.clone()),
            ..rule(v4, p, MAIN_TABLE)
        });
        out.rules.push(RuleSpec {
            ip_proto: Some(IPPROTO_ESP),
            ..rule(v4, p + 1, d.local_table)
        });
        if cfg.tunnel.encap == Encap::Udp {
            out.rules.push(RuleSpec {
                ip_proto: Some(IPPROTO_UDP),
                dport: Some(cfg.tunnel.udp_port),
                ..rule(v4, p + 2, d.local_table)
            });
        }
        // One rule, not one per prefix: the kernel walks the rules for
        // every packet it routes, but looks a table up in O(prefix bits).
        if remote.iter().any(|c| fam(&c)) {
            out.rules.push(rule(v4, p + 4, d.remote_table));
        }
        if cfg.tunnel.strict {
            for c in remote.iter().filter(fam) {
                out.rules.push(RuleSpec {
                    src: Some(*c),
                    ..rule(v4, p + 5, d.local_table)
                });
            }
        }
        if cfg.tunnel.mode == crate::config::Mode::Tunnel && cfg.endpoint.is_ipv4() == v4 {
            out.rules.push(rule(v4, p + 6, LOCAL_TABLE));
        }
    }
    for (table, prefixes) in [(d.remote_table, &remote), (d.local_table, &local)] {
        for c in prefixes.iter() {
            let bh = RouteSpec {
                table,
                dst: *c,
                metric: d.blackhole_metric,
                target: RouteTarget::Blackhole,
            };
            out.routes.push(bh);
            if with_tun {
                out.routes.push(RouteSpec {
                    table,
                    dst: *c,
                    metric: TUN_METRIC,
                    target: RouteTarget::Tun,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::TEST_PEER_KEY as PK;

    fn cfg(extra: &str) -> Config {
        let s = format!(
            "nodeId: 1\nendpoint: 10.0.0.1\npodCidrs: [10.244.1.0/24, fd00:1::/64]\nprivateKeyFile: /k\npskFile: /p\n\
             peers:\n- nodeId: 2\n  endpoint: 10.0.0.2\n  podCidrs: [10.244.2.0/24, fd00:2::/64]\n  publicKey: {PK}\n{extra}"
        );
        let c: Config = serde_norway::from_str(&s).unwrap();
        c.validate().unwrap();
        c
    }

    #[test]
    fn test_transport_plan() {
        let p = plan(&cfg(""), true);
        // per family: iif, esp, udp, to-remote
        assert_eq!(p.rules.len(), 8);
        assert!(p.rules.iter().any(|r| r.iif.as_deref() == Some("meshsec0")
            && r.table == MAIN_TABLE
            && r.priority == 100));
        assert!(
            p.rules
                .iter()
                .any(|r| r.dport == Some(4500) && r.table == 2481)
        );
        assert!(p.rules.iter().all(|r| r.src.is_none()), "no strict rules");
        assert!(
            p.rules.iter().all(|r| r.dst.is_none()),
            "no rule per prefix"
        );
        let to_remote: Vec<_> = p.rules.iter().filter(|r| r.table == 2480).collect();
        assert_eq!(to_remote.len(), 2, "one per family");
        assert!(
            to_remote
                .iter()
                .all(|r| r.priority == 104 && r.iif.is_none() && r.ip_proto.is_none())
        );
        // 2 remote + 2 local prefixes, each with a TUN route and a blackhole
        assert_eq!(p.routes.len(), 8);
        assert_eq!(
            p.routes
                .iter()
                .filter(|r| r.target == RouteTarget::Blackhole && r.metric == 4000)
                .count(),
            4
        );
    }

    #[test]
    fn test_rules_do_not_grow_with_peers() {
        let peers: String = (3..203)
            .map(|n| {
                format!(
                    "- nodeId: {n}\n  endpoint: 10.1.0.{n}\n  podCidrs: [10.245.{n}.0/24]\n  publicKey: {PK}\n"
                )
            })
            .collect();
        let p = plan(&cfg(&peers), true);
        assert_eq!(p.rules.len(), 8, "as with one peer");
        assert_eq!(
            p.routes.len(),
            8 + 2 * 200,
            "a TUN route and a blackhole per prefix"
        );
    }

    #[test]
    fn test_blackholes_only_before_tun() {
        let p = plan(&cfg(""), false);
        assert!(p.routes.iter().all(|r| r.target == RouteTarget::Blackhole));
        assert_eq!(p.routes.len(), 4);
    }

    #[test]
    fn test_strict_and_raw_esp() {
        let p = plan(&cfg("tunnel:\n  strict: true\n  encap: none\n"), true);
        assert!(
            p.rules.iter().all(|r| r.dport.is_none()),
            "no UDP rule for raw ESP"
        );
        let strict: Vec<_> = p.rules.iter().filter(|r| r.src.is_some()).collect();
        assert_eq!(strict.len(), 2);
        // After the remote lookup: walked only by what is not sealed.
        assert!(strict.iter().all(|r| r.table == 2481 && r.priority == 105));
        assert!(p.rules.iter().any(|r| r.table == 2480 && r.priority == 104));
    }

    #[test]
    fn test_tunnel_mode_routes_own_endpoint() {
        let p = plan(&cfg("tunnel:\n  mode: tunnel\n"), true);
        let host: Cidr = "10.0.0.1/32".parse().unwrap();
        assert!(
            p.rules
                .iter()
                .any(|r| r.v4 && r.table == LOCAL_TABLE && r.priority == 106)
        );
        assert!(
            !p.rules.iter().any(|r| !r.v4 && r.table == LOCAL_TABLE),
            "only the endpoint's family"
        );
        assert!(
            p.routes
                .iter()
                .any(|r| r.dst == host && r.table == 2481 && r.target == RouteTarget::Tun)
        );
    }
}
