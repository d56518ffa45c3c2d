//! meshsec operator: reconciles `IPsecTunnel` policy into PSK Secrets, node
//! ids and coordinated key rotations.
//!
//! Pure logic (no I/O, unit tested): [`rotation`], [`ids`], [`conflict`],
//! [`status`] (state <-> API status), [`observe`] (cache -> inputs),
//! [`psk`] (Secret content), [`trim`] (what the caches keep). I/O: [`controller`], [`lease`], [`ops`].

pub mod conflict;
pub mod context;
pub mod controller;
pub mod error;
pub mod ids;
pub mod lease;
pub mod metrics;
pub mod observe;
pub mod ops;
pub mod psk;
pub mod rotation;
pub mod status;
pub mod trim;
