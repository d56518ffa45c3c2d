//! The small configuration vocabulary shared by every module.

use core::fmt;
use core::str::FromStr;

/// ESP transform. All three use a 16-byte ICV and an 8-byte explicit IV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// AES-128-GCM, RFC 4106.
    Aes128Gcm,
    /// AES-256-GCM, RFC 4106.
    Aes256Gcm,
    /// AES-128-GMAC, RFC 4543: integrity only, payload travels in clear.
    Aes128Gmac,
}

impl Cipher {
    /// AES key length in bytes (without the 4-byte salt).
    pub const fn key_len(self) -> usize {
        match self {
            Cipher::Aes128Gcm | Cipher::Aes128Gmac => 16,
            Cipher::Aes256Gcm => 32,
        }
    }

    /// Key material length: AES key followed by the 4-byte salt (RFC 4106 §8.1).
    pub const fn material_len(self) -> usize {
        self.key_len() + crate::keys::SALT_LEN
    }

    /// One-byte code bound into the key schedule (docs/protocol.md).
    pub const fn code(self) -> u8 {
        match self {
            Cipher::Aes128Gcm => 1,
            Cipher::Aes256Gcm => 2,
            Cipher::Aes128Gmac => 3,
        }
    }

    /// Whether the payload is encrypted (false for GMAC).
    pub const fn encrypts(self) -> bool {
        !matches!(self, Cipher::Aes128Gmac)
    }

    /// Stable lower-case name, as used by the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            Cipher::Aes128Gcm => "aes128gcm",
            Cipher::Aes256Gcm => "aes256gcm",
            Cipher::Aes128Gmac => "aes128gmac",
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Cipher {
    type Err = crate::ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "aes128gcm" => Ok(Cipher::Aes128Gcm),
            "aes256gcm" => Ok(Cipher::Aes256Gcm),
            "aes128gmac" => Ok(Cipher::Aes128Gmac),
            _ => Err(crate::ConfigError::UnknownCipher),
        }
    }
}

/// ESP mode (RFC 4303 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Keep the original IP header; protect the upper-layer payload.
    #[default]
    Transport,
    /// Wrap the whole packet in a new outer IP header.
    Tunnel,
}

/// Encapsulation of the ESP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encap {
    /// Raw ESP, IP protocol 50.
    #[default]
    None,
    /// ESP in UDP (RFC 3948). `dport` is normally [`crate::NAT_T_PORT`].
    Udp {
        /// Source port written on seal.
        sport: u16,
        /// Destination port written on seal.
        dport: u16,
    },
}

impl Encap {
    /// UDP encapsulation on port 4500 both ways.
    pub const fn udp_default() -> Self {
        Encap::Udp {
            sport: crate::NAT_T_PORT,
            dport: crate::NAT_T_PORT,
        }
    }

    /// Bytes this encapsulation adds in front of the ESP header.
    pub const fn header_len(self) -> usize {
        match self {
            Encap::None => 0,
            Encap::Udp { .. } => crate::UDP_LEN,
        }
    }
}

/// IP version of a packet or header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Fixed header length (IPv4 without options).
    pub const fn header_len(self) -> usize {
        match self {
            Family::V4 => 20,
            Family::V6 => 40,
        }
    }

    /// The family of an address (a tunnel endpoint's: the outer header's).
    pub const fn of(addr: &core::net::IpAddr) -> Self {
        match addr {
            core::net::IpAddr::V4(_) => Family::V4,
            core::net::IpAddr::V6(_) => Family::V6,
        }
    }

    /// ESP next-header value for a tunnelled packet of this family.
    pub const fn ip_protocol(self) -> u8 {
        match self {
            Family::V4 => crate::wire::ip_proto::IPV4,
            Family::V6 => crate::wire::ip_proto::IPV6,
        }
    }
}
