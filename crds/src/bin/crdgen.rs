//! Writes the CRD manifests into `crds/` and `charts/meshsec/crds/`.
//!
//! Usage: `crdgen [--check] [REPO_ROOT]`. With `--check`, writes nothing and
//! exits non-zero when a committed file differs from what the types generate.

use std::path::PathBuf;

use anyhow::{Context, bail};
use meshsec_crds::manifests::{OUTPUT_DIRS, manifests};

fn main() -> anyhow::Result<()> {
    let mut check = false;
    let mut root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: crdgen [--check] [REPO_ROOT]");
                return Ok(());
            }
            other if other.starts_with('-') => {
                bail!("unknown option {other}; usage: crdgen [--check] [REPO_ROOT]")
            }
            other => root = PathBuf::from(other),
        }
    }
    let mut stale = vec![];
    for manifest in manifests().context("rendering CRDs")? {
        for dir in OUTPUT_DIRS {
            let path = root.join(dir).join(manifest.file_name);
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current == manifest.yaml {
                continue;
            }
            if check {
                stale.push(path.display().to_string());
            } else {
                std::fs::create_dir_all(root.join(dir))
                    .with_context(|| format!("creating {dir}"))?;
                std::fs::write(&path, &manifest.yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    if !stale.is_empty() {
        bail!(
            "out of date (run `cargo run -p meshsec-crds --bin crdgen`): {}",
            stale.join(", ")
        );
    }
    Ok(())
}
