//! Typed reasons for every rejected packet and bad configuration.

use thiserror::Error;

use crate::wire::WireError;

/// Why [`crate::InboundSa::open`] or [`crate::classify`] rejected a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum OpenError {
    /// Shorter than its headers or length fields say.
    #[error("packet truncated")]
    Truncated,
    /// A header field is impossible (version, header length, ...).
    #[error("malformed packet")]
    Malformed,
    /// Not an ESP or ESP-in-UDP packet.
    #[error("not an ESP packet")]
    NotEsp,
    /// RFC 3948 NAT-keepalive (a single 0xFF byte): drop quietly.
    #[error("NAT keepalive")]
    NatKeepalive,
    /// The SPI does not belong to this SA.
    #[error("unknown SPI")]
    UnknownSpi,
    /// Raw ESP where UDP encapsulation was expected, or the reverse.
    #[error("unexpected encapsulation")]
    UnexpectedEncapsulation,
    /// Already received (bit set in the anti-replay window).
    #[error("replayed sequence number")]
    Replayed,
    /// Left of the anti-replay window.
    #[error("sequence number too old for the replay window")]
    TooOld,
    /// ICV check failed: wrong key, tampered packet or wrong ESN guess.
    #[error("authentication failed")]
    AuthFailed,
    /// Pad length exceeds the payload or the padding bytes are not 1, 2, 3, ...
    #[error("bad padding")]
    BadPadding,
    /// The decrypted next header is not acceptable for this mode.
    #[error("unsupported next header")]
    UnsupportedNextHeader,
    /// Dummy packet (next header 59, RFC 4303 §2.6): drop quietly.
    #[error("dummy packet")]
    DummyPacket,
}

impl OpenError {
    /// Stable label for metric counters; never changes for a variant.
    pub const fn as_label(&self) -> &'static str {
        match self {
            OpenError::Truncated => "truncated",
            OpenError::Malformed => "malformed",
            OpenError::NotEsp => "not_esp",
            OpenError::NatKeepalive => "nat_keepalive",
            OpenError::UnknownSpi => "unknown_spi",
            OpenError::UnexpectedEncapsulation => "unexpected_encapsulation",
            OpenError::Replayed => "replayed",
            OpenError::TooOld => "too_old",
            OpenError::AuthFailed => "auth_failed",
            OpenError::BadPadding => "bad_padding",
            OpenError::UnsupportedNextHeader => "unsupported_next_header",
            OpenError::DummyPacket => "dummy_packet",
        }
    }
}

impl From<WireError> for OpenError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated => OpenError::Truncated,
            WireError::Malformed => OpenError::Malformed,
        }
    }
}

/// Why [`crate::OutboundSa::seal`] refused a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum SealError {
    /// Shorter than its headers or length fields say.
    #[error("packet truncated")]
    Truncated,
    /// A header field is impossible (version, header length, ...).
    #[error("malformed packet")]
    Malformed,
    /// The range does not leave [`crate::HEADROOM`] bytes before the packet.
    #[error("not enough headroom before the packet")]
    NoHeadroom,
    /// The range does not leave [`crate::TAILROOM`] bytes after the packet.
    #[error("not enough tailroom after the packet")]
    NoTailroom,
    /// The sealed packet would exceed 65535 bytes.
    #[error("packet too large")]
    TooLarge,
    /// The sequence counter reached its hard limit (2^63); replace the SA.
    #[error("sequence numbers exhausted")]
    SequenceExhausted,
    /// The AEAD backend failed (should not happen with valid lengths).
    #[error("crypto backend error")]
    Crypto,
}

impl SealError {
    /// Stable label for metric counters; never changes for a variant.
    pub const fn as_label(&self) -> &'static str {
        match self {
            SealError::Truncated => "truncated",
            SealError::Malformed => "malformed",
            SealError::NoHeadroom => "no_headroom",
            SealError::NoTailroom => "no_tailroom",
            SealError::TooLarge => "too_large",
            SealError::SequenceExhausted => "sequence_exhausted",
            SealError::Crypto => "crypto",
        }
    }
}

impl From<WireError> for SealError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated => SealError::Truncated,
            WireError::Malformed => SealError::Malformed,
        }
    }
}

/// A configuration mistake detected when building an SA or parsing a setting.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// Key material length does not match the cipher (key + 4-byte salt).
    #[error("key material must be {expected} bytes (key || 4-byte salt), got {got}")]
    KeyLength {
        /// Required length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// Tunnel mode needs outer addresses of one family; transport mode none.
    #[error(
        "tunnel mode needs --tunnel-src/--tunnel-dst of the same family (and transport mode none)"
    )]
    TunnelEndpoints,
    /// Replay window outside 64..=8192.
    #[error("replay window must be within {min}..={max}, got {got}")]
    ReplayWindow {
        /// Smallest allowed window.
        min: u32,
        /// Largest allowed window.
        max: u32,
        /// Given window.
        got: u32,
    },
    /// SPI values 0..=255 are reserved (RFC 4303 §2.1).
    #[error("SPI {0} is reserved (must be >= 256)")]
    ReservedSpi(u32),
    /// Cipher name not recognised.
    #[error("unknown cipher (expected aes128gcm, aes256gcm or aes128gmac)")]
    UnknownCipher,
    /// Sequence number 0 is never sent (RFC 4303 §3.3.3), nor anything from
    /// the hard limit 2^63 on.
    #[error("sequence number must be within 1..2^63")]
    ZeroSequence,
}
