//! The CRD manifests as YAML text, exactly as `crdgen` writes them.

use kube::CustomResourceExt;

use crate::node::IPsecNode;
use crate::tunnel::IPsecTunnel;

/// Folders (relative to the repository root) that hold identical copies.
pub const OUTPUT_DIRS: [&str; 2] = ["crds", "charts/meshsec/crds"];

const HEADER: &str = "# Generated from crates meshsec-crds by `cargo run -p meshsec-crds --bin crdgen`.\n# Do not edit: change the Rust types and regenerate.\n";

/// One generated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// File name inside each of [`OUTPUT_DIRS`].
    pub file_name: &'static str,
    /// Full file content.
    pub yaml: String,
}

/// Both CRDs, rendered.
pub fn manifests() -> Result<Vec<Manifest>, serde_yaml::Error> {
    Ok(vec![
        Manifest {
            file_name: "meshsec.io_ipsectunnels.yaml",
            yaml: render(&IPsecTunnel::crd())?,
        },
        Manifest {
            file_name: "meshsec.io_ipsecnodes.yaml",
            yaml: render(&IPsecNode::crd())?,
        },
    ])
}

fn render<T: serde::Serialize>(crd: &T) -> Result<String, serde_yaml::Error> {
    Ok(format!("{HEADER}{}", serde_yaml::to_string(crd)?))
}
