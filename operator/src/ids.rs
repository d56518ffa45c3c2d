//! Node-id allocation: pure, no I/O.
//!
//! Every IPsecNode gets a 24-bit id, unique in the cluster, persisted in its
//! status. The id is the low 24 bits of every SPI the node sends with (SPI =
//! epoch slot (2 bits) | generation (6 bits) | id (24 bits)); ids start at
//! 256 so no SPI ever falls in the reserved range 0..=255 (RFC 4303 §2.1).
//! An id is never handed out while an epoch that used it is retained: the
//! operator keeps a departed node's IPsecNode (finalizer) until no retained
//! epoch lists it, and every existing IPsecNode's id counts as taken, so a
//! late packet from the old holder is never attributed to a new node.
//! `retained` covers ids known by other means (none today; kept explicit so
//! the rule is tested).

use std::collections::BTreeSet;

use thiserror::Error;

/// A node's 24-bit id.
pub type NodeId = u32;

/// Smallest id handed out: keeps every SPI >= 256.
pub const MIN_NODE_ID: NodeId = 256;
/// Largest 24-bit id.
pub const MAX_NODE_ID: NodeId = (1 << 24) - 1;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdError {
    #[error("all {} node ids are in use or retained", MAX_NODE_ID - MIN_NODE_ID + 1)]
    Exhausted,
}

/// Whether `id` may be carried by a node.
#[must_use]
pub fn in_range(id: NodeId) -> bool {
    (MIN_NODE_ID..=MAX_NODE_ID).contains(&id)
}

/// What a node currently claims (its persisted id, if any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub name: String,
    pub id: Option<NodeId>,
}

/// The outcome of [`plan`]: ids to write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// (node, new id) for nodes without a valid, unique id.
    pub assign: Vec<(String, NodeId)>,
    /// (node, rejected id): claims that were out of range or duplicated;
    /// each of these nodes also appears in `assign` (if ids remain).
    pub rejected: Vec<(String, NodeId)>,
}

/// Decide ids for `claims` (given oldest first: on a duplicate the first
/// claimant keeps the id) so that no id is shared or taken from `retained`.
///
/// # Errors
/// [`IdError::Exhausted`] when the id space is full; ids assigned before
/// running out are lost with it, which is fine at 16 million nodes.
pub fn plan(claims: &[Claim], retained: &BTreeSet<NodeId>) -> Result<Plan, IdError> {
    let mut out = Plan::default();
    let mut taken: BTreeSet<NodeId> = retained.clone();
    let mut holders: BTreeSet<NodeId> = BTreeSet::new();
    let mut need = Vec::new();
    for c in claims {
        match c.id {
            Some(id) if in_range(id) && holders.insert(id) => {
                taken.insert(id);
            }
            Some(id) => {
                out.rejected.push((c.name.clone(), id));
                need.push(c.name.clone());
            }
            None => need.push(c.name.clone()),
        }
    }
    let mut alloc = Allocator::new(taken);
    for name in need {
        out.assign.push((name, alloc.next()?));
    }
    Ok(out)
}

/// Next-fit allocation after the highest id in use, wrapping to the
/// bottom: a freed id is reused as late as possible.
#[derive(Debug)]
struct Allocator {
    taken: BTreeSet<NodeId>,
    cursor: NodeId,
}

impl Allocator {
    fn new(taken: BTreeSet<NodeId>) -> Allocator {
        let cursor = taken.last().map_or(MIN_NODE_ID, |m| m.saturating_add(1));
        Allocator { taken, cursor }
    }

    fn next(&mut self) -> Result<NodeId, IdError> {
        let found = first_free(&self.taken, self.cursor.max(MIN_NODE_ID), MAX_NODE_ID)
            .or_else(|| first_free(&self.taken, MIN_NODE_ID, MAX_NODE_ID))
            .ok_or(IdError::Exhausted)?;
        self.taken.insert(found);
        self.cursor = found.saturating_add(1);
        Ok(found)
    }
}

/// Smallest id in `lo..=hi` not in `taken`.
fn first_free(taken: &BTreeSet<NodeId>, lo: NodeId, hi: NodeId) -> Option<NodeId> {
    if lo > hi {
        return None; // BTreeSet::range panics on an inverted range
    }
    let mut candidate = lo;
    for &t in taken.range(lo..=hi) {
        if t != candidate {
            break;
        }
        candidate = candidate.checked_add(1)?;
    }
    (candidate <= hi).then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, id: Option<NodeId>) -> Claim {
        Claim {
            name: name.into(),
            id,
        }
    }

    #[test]
    fn fresh_nodes_get_distinct_ids_from_256() {
        let claims: Vec<_> = (0..5).map(|i| claim(&format!("n{i}"), None)).collect();
        let p = plan(&claims, &BTreeSet::new()).unwrap();
        let ids: Vec<_> = p.assign.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids, vec![256, 257, 258, 259, 260]);
        assert!(p.rejected.is_empty());
    }

    #[test]
    fn persisted_ids_are_kept_and_new_ones_go_after_the_highest() {
        let claims = vec![
            claim("a", Some(300)),
            claim("b", None),
            claim("c", Some(256)),
        ];
        let p = plan(&claims, &BTreeSet::new()).unwrap();
        assert_eq!(p.assign, vec![("b".to_string(), 301)]);
    }

    #[test]
    fn retained_ids_are_never_reused() {
        // Node "gone" held 256..=260 in an epoch still retained.
        let retained: BTreeSet<_> = (256..=260).collect();
        let p = plan(&[claim("new", None)], &retained).unwrap();
        assert_eq!(p.assign, vec![("new".to_string(), 261)]);
    }

    #[test]
    fn duplicate_claim_keeps_the_first_and_reassigns_the_later() {
        let claims = vec![claim("old", Some(400)), claim("restored", Some(400))];
        let p = plan(&claims, &BTreeSet::new()).unwrap();
        assert_eq!(p.rejected, vec![("restored".to_string(), 400)]);
        assert_eq!(p.assign, vec![("restored".to_string(), 401)]);
    }

    #[test]
    fn out_of_range_claims_are_reassigned() {
        for bad in [0, 255, MAX_NODE_ID + 1] {
            let p = plan(&[claim("x", Some(bad))], &BTreeSet::new()).unwrap();
            assert_eq!(p.rejected, vec![("x".to_string(), bad)]);
            assert_eq!(p.assign, vec![("x".to_string(), MIN_NODE_ID)]);
        }
    }

    #[test]
    fn wraps_around_when_the_top_is_taken() {
        let retained: BTreeSet<_> = [MAX_NODE_ID - 1, MAX_NODE_ID, 256].into_iter().collect();
        let p = plan(&[claim("a", None), claim("b", None)], &retained).unwrap();
        assert_eq!(
            p.assign,
            vec![("a".to_string(), 257), ("b".to_string(), 258)]
        );
    }

    #[test]
    fn exhaustion_is_an_error_not_a_panic() {
        let retained: BTreeSet<_> = (MIN_NODE_ID..=MAX_NODE_ID).collect();
        assert_eq!(
            plan(&[claim("a", None)], &retained),
            Err(IdError::Exhausted)
        );
    }

    #[test]
    fn every_assigned_id_is_unique_and_in_range_at_scale() {
        let claims: Vec<_> = (0..5000u32)
            .map(|i| claim(&format!("n{i}"), (i % 3 == 0).then_some(256 + i * 7 % 9000)))
            .collect();
        let retained: BTreeSet<_> = (1000..1100).collect();
        let p = plan(&claims, &retained).unwrap();
        let mut final_ids: BTreeSet<NodeId> = BTreeSet::new();
        let reassigned: BTreeSet<&str> = p.assign.iter().map(|(n, _)| n.as_str()).collect();
        for c in &claims {
            if let Some(id) = c.id.filter(|_| !reassigned.contains(c.name.as_str())) {
                assert!(final_ids.insert(id), "kept id {id} twice");
            }
        }
        for (_, id) in &p.assign {
            assert!(in_range(*id));
            assert!(!retained.contains(id), "retained id {id} reused");
            assert!(final_ids.insert(*id), "assigned id {id} twice");
        }
        assert_eq!(final_ids.len(), 5000);
    }
}
