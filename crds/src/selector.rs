//! `spec.nodeSelector`: a bounded label selector over Node labels.
//!
//! Shaped like `metav1.LabelSelector`, but with an operator enum and size
//! bounds so the API server can validate it (and cost its CEL rules).

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Selects nodes by labels. matchLabels and matchExpressions are ANDed; an empty selector selects every node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector {
    /// Node labels that must all be present with exactly these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,

    /// Requirements on node labels, all of which must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub match_expressions: Option<Vec<NodeSelectorRequirement>>,
}

/// One requirement on a node label.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)").message("nodeSelector.matchExpressions: operator In and NotIn need at least one value; Exists and DoesNotExist take no values"))]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorRequirement {
    /// The label key.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,

    /// How the label relates to values: In, NotIn, Exists or DoesNotExist.
    pub operator: SelectorOperator,

    /// Label values for In and NotIn; must be empty for Exists and DoesNotExist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub values: Option<Vec<String>>,
}

/// Label selector operator.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SelectorOperator {
    // The label's value is one of values.
    In,
    // The label is absent or its value is none of values.
    NotIn,
    // The label is present.
    Exists,
    // The label is absent.
    DoesNotExist,
}

impl NodeSelector {
    /// Whether a node with these labels is selected. Same semantics as a Kubernetes label selector (NotIn and DoesNotExist match absent labels).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let labels_ok = self
            .match_labels
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v));
        labels_ok
            && self
                .match_expressions
                .iter()
                .flatten()
                .all(|r| r.matches(labels))
    }

    /// Whether this selector selects every node.
    pub fn is_empty(&self) -> bool {
        self.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && self.match_expressions.as_ref().is_none_or(Vec::is_empty)
    }

    /// The selector in the string syntax of list/watch `labelSelector` (`a=b,c in (x,y),!d`); empty for "everything".
    pub fn to_query(&self) -> String {
        let labels = self
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"));
        let exprs = self
            .match_expressions
            .iter()
            .flatten()
            .map(NodeSelectorRequirement::to_query);
        labels.chain(exprs).collect::<Vec<_>>().join(",")
    }
}

impl NodeSelectorRequirement {
    fn values(&self) -> &[String] {
        self.values.as_deref().unwrap_or_default()
    }

    /// Whether this requirement holds for these labels.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values().contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values().contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }

    fn to_query(&self) -> String {
        let values = || self.values().join(",");
        match self.operator {
            SelectorOperator::In => format!("{} in ({})", self.key, values()),
            SelectorOperator::NotIn => format!("{} notin ({})", self.key, values()),
            SelectorOperator::Exists => self.key.clone(),
            SelectorOperator::DoesNotExist => format!("!{}", self.key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, operator: SelectorOperator, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator,
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn empty_selector_selects_everything() {
        let s = NodeSelector::default();
        assert!(s.is_empty());
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("zone", "a")])));
        assert_eq!(s.to_query(), "");
        let explicit_empty = NodeSelector {
            match_labels: Some(BTreeMap::new()),
            match_expressions: Some(vec![]),
        };
        assert!(explicit_empty.is_empty());
        assert!(explicit_empty.matches(&labels(&[])));
    }

    #[test]
    fn match_labels_need_every_pair() {
        let s = NodeSelector {
            match_labels: Some(labels(&[("zone", "a"), ("secure", "true")])),
            match_expressions: None,
        };
        assert!(s.matches(&labels(&[("zone", "a"), ("secure", "true"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("zone", "a")])));
        assert!(!s.matches(&labels(&[("zone", "b"), ("secure", "true")])));
        assert_eq!(s.to_query(), "secure=true,zone=a");
    }

    #[test]
    fn operators_follow_kubernetes_semantics() {
        use SelectorOperator::*;
        let node = labels(&[("zone", "a")]);
        let bare = labels(&[]);
        let cases = [
            (req("zone", In, &["a", "b"]), true, false),
            (req("zone", In, &["b"]), false, false),
            (req("zone", NotIn, &["b"]), true, true),
            (req("zone", NotIn, &["a"]), false, true),
            (req("zone", Exists, &[]), true, false),
            (req("zone", DoesNotExist, &[]), false, true),
        ];
        for (r, on_node, on_bare) in cases {
            assert_eq!(r.matches(&node), on_node, "{r:?} on {node:?}");
            assert_eq!(r.matches(&bare), on_bare, "{r:?} on bare node");
        }
    }

    #[test]
    fn labels_and_expressions_are_anded() {
        let s = NodeSelector {
            match_labels: Some(labels(&[("pool", "secure")])),
            match_expressions: Some(vec![
                req("zone", SelectorOperator::In, &["a", "b"]),
                req("gpu", SelectorOperator::DoesNotExist, &[]),
            ]),
        };
        assert!(s.matches(&labels(&[("pool", "secure"), ("zone", "b")])));
        assert!(!s.matches(&labels(&[("pool", "secure"), ("zone", "b"), ("gpu", "1")])));
        assert!(!s.matches(&labels(&[("zone", "b")])));
        assert_eq!(s.to_query(), "pool=secure,zone in (a,b),!gpu");
    }
}
