//! Helpers the datapath needs to keep packets within the path MTU.

pub mod icmp;
pub mod icmpv6;
pub mod mss;
pub mod overhead;

pub use mss::{clamp_mss, mss_for_mtu};
pub use overhead::{inner_mtu, overhead};

use thiserror::Error;

use crate::wire::WireError;

/// Why no ICMP error was generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum IcmpError {
    /// The offending packet could not be parsed.
    #[error("offending packet: {0}")]
    Wire(#[from] WireError),
    /// RFC 1122 / RFC 4443 §2.4 forbid an error here (ICMP error, non-first
    /// fragment, multicast/unspecified source, IPv4 without DF).
    #[error("no ICMP error may be sent for this packet")]
    NotApplicable,
    /// The output buffer cannot hold even the minimal message.
    #[error("output buffer too small")]
    BufferTooSmall,
}
