//! IPsec ESP packet processing for meshsec: no I/O, no allocation per packet.
//!
//! The crate follows the RFCs it implements and is organised so that each
//! file holds one concept:
//!
//! - [`wire`]: zero-copy typed views of IPv4, IPv6 (with extension-header
//!   walk), UDP, TCP, ICMP, ICMPv6 and ESP (smoltcp `wire` style).
//! - [`OutboundSa`] / [`InboundSa`]: in-place seal and open of transport- and
//!   tunnel-mode ESP (RFC 4303), raw or UDP-encapsulated (RFC 3948), with
//!   AES-GCM (RFC 4106) or AES-GMAC (RFC 4543) and 64-bit extended sequence
//!   numbers.
//! - [`replay`]: the RFC 4303 §3.4.3 anti-replay window as an RFC 6479
//!   bitmap, with RFC 4303 Appendix A high-bit inference.
//! - [`key_schedule`] and [`spi`]: X25519 + HKDF-SHA256 key derivation and
//!   the SPI layout from DESIGN.md (spec in docs/protocol.md).
//! - [`path`]: MTU overhead table, TCP MSS clamping, ICMP "fragmentation
//!   needed" and ICMPv6 "packet too big" generation.
//!
//! Everything that parses bytes from the wire returns a typed error instead
//! of panicking; [`OpenError::as_label`] gives a stable metric label.

pub mod aead;
mod classify;
mod crypto;
mod error;
mod esn;
mod inbound;
mod ip;
pub mod key_schedule;
mod keys;
mod outbound;
pub mod path;
pub mod replay;
pub mod spi;
mod types;
pub mod wire;

pub use aead::Backend;
pub use classify::{Inbound, classify, classify_with_port};
pub use error::{ConfigError, OpenError, SealError};
pub use inbound::InboundSa;
pub use keys::SaKey;
pub use outbound::{ByteTally, OutboundSa, SEQ_LIMIT};
pub use path::overhead::overhead;
pub use types::{Cipher, Encap, Family, Mode};

/// Default UDP port for ESP-in-UDP (RFC 3948).
pub const NAT_T_PORT: u16 = 4500;

/// ESP header: SPI (4) + low 32 bits of the sequence number (4).
pub const ESP_HEADER_LEN: usize = 8;
/// Explicit IV carried on the wire (RFC 4106 §3.1, RFC 4543 §3.1).
pub const IV_LEN: usize = 8;
/// Integrity check value (GCM / GMAC tag) length.
pub const ICV_LEN: usize = 16;
/// Largest outer IP header seal writes (IPv6, tunnel mode).
const MAX_OUTER_IP_LEN: usize = 40;
/// UDP header for ESP-in-UDP.
const UDP_LEN: usize = 8;

/// Bytes the caller must leave free before the plaintext packet given to
/// [`OutboundSa::seal`]: enough for an outer IPv6 header, a UDP header, the
/// ESP header and the IV (the worst case, tunnel mode over IPv6 with UDP).
pub const HEADROOM: usize = MAX_OUTER_IP_LEN + UDP_LEN + ESP_HEADER_LEN + IV_LEN;

/// Bytes the caller must leave free after the plaintext packet: up to 3
/// padding bytes, pad length, next header and the ICV (21), rounded up to a
/// multiple of 8 so buffers stay aligned.
pub const TAILROOM: usize = 24;
