//! Shared helpers for meshsec end-to-end tests.

pub mod fake_sidecars;
pub mod kube;
pub mod topology;
pub mod tunnels;
