//! What the informer caches keep of an object: everything but the fields
//! no reconcile reads. `managedFields` is about half of every IPsecNode and
//! more than half of a 5,000-node IPsecTunnel (one entry per member name
//! before the lists became atomic); kubectl's last-applied annotation is a
//! second copy of the object. Dropping both before an object enters a
//! reflector store cuts the operator's resident memory without changing
//! any decision: writes are server-side applies or patches that never echo
//! these fields back.

use kube::Resource;

/// The annotation `kubectl apply` stores a copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drop the fields no reconcile reads (see the module docs).
pub fn for_cache<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use kube::ResourceExt;
    use meshsec_crds::{IPsecNode, IPsecNodeSpec};

    use super::*;

    #[test]
    fn drops_managed_fields_and_last_applied_keeps_the_rest() {
        let mut n = IPsecNode::new("n1", IPsecNodeSpec::default());
        n.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        n.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_string(), "{}".to_string()),
                ("meshsec.io/rotate".to_string(), "r1".to_string()),
            ]
            .into_iter()
            .collect(),
        );
        n.metadata.finalizers = Some(vec!["meshsec.io/node-id".into()]);
        n.metadata.resource_version = Some("42".into());
        for_cache(&mut n);
        assert_eq!(n.metadata.managed_fields, None);
        let kept: Vec<&String> = n.annotations().keys().collect();
        assert_eq!(kept, ["meshsec.io/rotate"]);
        assert_eq!(n.finalizers(), ["meshsec.io/node-id"]);
        assert_eq!(n.metadata.resource_version.as_deref(), Some("42"));
    }
}
