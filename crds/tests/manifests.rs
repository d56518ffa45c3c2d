//! The committed CRD YAML must be exactly what the Rust types generate, in
//! both `crds/` and the Helm chart's copy.

use std::path::Path;

use meshsec_crds::manifests::{OUTPUT_DIRS, manifests};

#[test]
fn committed_yaml_matches_the_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut stale = vec![];
    for manifest in manifests().unwrap() {
        for dir in OUTPUT_DIRS {
            let path = root.join(dir).join(manifest.file_name);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            if committed != manifest.yaml {
                stale.push(format!("{dir}/{}", manifest.file_name));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "stale CRD manifests {stale:?}: run `cargo run -p meshsec-crds --bin crdgen`"
    );
}

#[test]
fn manifests_parse_back_as_crds() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    for manifest in manifests().unwrap() {
        let crd: CustomResourceDefinition = serde_norway::from_str(&manifest.yaml).unwrap();
        assert_eq!(crd.spec.group, "meshsec.io");
        assert_eq!(crd.spec.scope, "Cluster");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        assert!(
            crd.spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty())
        );
    }
}
