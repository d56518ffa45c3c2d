//! Shared helpers for meshsec end-to-end tests.

pub mod topology;
