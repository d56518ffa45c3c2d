//! meshsec operator: reconciles `IPsecTunnel` policy into PSK Secrets, node
//! ids and coordinated key rotations.
//!
//! Pure logic (no I/O, unit tested): [`rotation`], [`ids`],
//! [`conflict`].

pub mod conflict;
pub mod ids;
pub mod rotation;
