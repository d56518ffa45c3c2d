//! Shared helpers for meshsec end-to-end tests.

pub mod kube;
pub mod topology;
