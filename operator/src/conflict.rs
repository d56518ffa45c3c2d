//! Conflict detection between tunnels: pure, no I/O.
//!
//! A node may belong to one tunnel only. Tunnels are considered oldest
//! first (creation time, then name); each claims the nodes it selects
//! unless one of them is already claimed, in which case it is in
//! `Conflict` and claims nothing (nothing is applied for it).

use std::collections::{BTreeMap, BTreeSet};

/// One tunnel's selection, in the order given to [`resolve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub tunnel: String,
    pub nodes: BTreeSet<String>,
}

/// The verdict for one tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It owns all the nodes it selects.
    Owner,
    /// Some selected nodes belong to older tunnels.
    Conflict {
        /// The older tunnel(s) holding the nodes, sorted.
        with: Vec<String>,
        /// Contested nodes, sorted.
        nodes: Vec<String>,
    },
}

/// Decide ownership; `selections` must be ordered oldest first.
#[must_use]
pub fn resolve(selections: &[Selection]) -> BTreeMap<String, Verdict> {
    let mut owner_of: BTreeMap<&str, &str> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for sel in selections {
        let mut with = BTreeSet::new();
        let mut nodes = Vec::new();
        for n in &sel.nodes {
            if let Some(t) = owner_of.get(n.as_str()) {
                with.insert((*t).to_owned());
                nodes.push(n.clone());
            }
        }
        let verdict = if nodes.is_empty() {
            for n in &sel.nodes {
                owner_of.insert(n, &sel.tunnel);
            }
            Verdict::Owner
        } else {
            Verdict::Conflict {
                with: with.into_iter().collect(),
                nodes,
            }
        };
        out.insert(sel.tunnel.clone(), verdict);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(t: &str, nodes: &[&str]) -> Selection {
        Selection {
            tunnel: t.into(),
            nodes: nodes.iter().map(|n| (*n).to_string()).collect(),
        }
    }

    #[test]
    fn disjoint_tunnels_both_own() {
        let v = resolve(&[sel("a", &["n1"]), sel("b", &["n2"])]);
        assert_eq!(v["a"], Verdict::Owner);
        assert_eq!(v["b"], Verdict::Owner);
    }

    #[test]
    fn the_later_tunnel_gets_the_conflict() {
        let v = resolve(&[sel("old", &["n1", "n2"]), sel("new", &["n2", "n3"])]);
        assert_eq!(v["old"], Verdict::Owner);
        assert_eq!(
            v["new"],
            Verdict::Conflict {
                with: vec!["old".into()],
                nodes: vec!["n2".into()]
            }
        );
    }

    #[test]
    fn a_conflicted_tunnel_claims_nothing() {
        // "b" conflicts with "a" on n1, so n3 stays free for "c".
        let v = resolve(&[
            sel("a", &["n1"]),
            sel("b", &["n1", "n3"]),
            sel("c", &["n3"]),
        ]);
        assert!(matches!(v["b"], Verdict::Conflict { .. }));
        assert_eq!(v["c"], Verdict::Owner);
    }

    #[test]
    fn conflicts_with_several_older_tunnels_are_all_named() {
        let v = resolve(&[
            sel("a", &["n1"]),
            sel("b", &["n2"]),
            sel("c", &["n1", "n2"]),
        ]);
        assert_eq!(
            v["c"],
            Verdict::Conflict {
                with: vec!["a".into(), "b".into()],
                nodes: vec!["n1".into(), "n2".into()]
            }
        );
    }

    #[test]
    fn a_tunnel_selecting_no_nodes_is_an_owner_of_nothing() {
        let v = resolve(&[sel("a", &[]), sel("b", &["n1"])]);
        assert_eq!(v["a"], Verdict::Owner);
        assert_eq!(v["b"], Verdict::Owner);
    }
}
