//! IP prefixes (`10.244.1.0/24`, `fd00:1::/64`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A network prefix; the address is stored with host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

/// Why a prefix string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("`{0}` is not of the form <address>/<length>")]
    Syntax(String),
    #[error("`{0}`: prefix length {1} is too long for this address family")]
    Length(String, u8),
    #[error("`{0}` has host bits set (did you mean {1}?)")]
    HostBits(String, String),
}

impl Cidr {
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, CidrError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(CidrError::Length(format!("{addr}/{len}"), len));
        }
        Ok(Self {
            addr: mask(addr, len),
            len,
        })
    }

    /// The single-address prefix (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            len: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }

    /// True when the two prefixes share at least one address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4(u32::from(a).masked(len).into()),
        IpAddr::V6(a) => IpAddr::V6(u128::from(a).masked(len).into()),
    }
}

/// An address as an integer, with its host bits beyond a prefix length
/// clearable.
pub trait Masked: Copy + Ord {
    /// The first `len` bits kept, the rest cleared (`len` at most the
    /// width; longer keeps all).
    fn masked(self, len: u8) -> Self;
}

impl Masked for u32 {
    fn masked(self, len: u8) -> Self {
        self & u32::MAX
            .checked_shl(32 - u32::from(len.min(32)))
            .unwrap_or(0)
    }
}

impl Masked for u128 {
    fn masked(self, len: u8) -> Self {
        self & u128::MAX
            .checked_shl(128 - u32::from(len.min(128)))
            .unwrap_or(0)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| CidrError::Syntax(s.into()))?;
        let addr: IpAddr = a.parse().map_err(|_| CidrError::Syntax(s.into()))?;
        let len: u8 = l.parse().map_err(|_| CidrError::Syntax(s.into()))?;
        let c = Cidr::new(addr, len)?;
        if c.addr != addr {
            return Err(CidrError::HostBits(s.into(), c.to_string()));
        }
        Ok(c)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse() {
        let c: Cidr = "10.244.1.0/24".parse().unwrap();
        assert_eq!(c.prefix_len(), 24);
        assert!(c.contains("10.244.1.7".parse().unwrap()));
        assert!(!c.contains("10.244.2.7".parse().unwrap()));
        assert!(!c.contains("fd00::1".parse().unwrap()));
        let c6: Cidr = "fd00:1::/64".parse().unwrap();
        assert!(c6.contains("fd00:1::42".parse().unwrap()));
    }

    #[test]
    fn test_parse_errors() {
        assert!(matches!(
            "10.0.0.0".parse::<Cidr>(),
            Err(CidrError::Syntax(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Length(..))
        ));
        assert!(matches!(
            "10.0.0.1/24".parse::<Cidr>(),
            Err(CidrError::HostBits(..))
        ));
        assert!(matches!("x/8".parse::<Cidr>(), Err(CidrError::Syntax(_))));
    }

    #[test]
    fn test_zero_length() {
        let c: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(c.contains("1.2.3.4".parse().unwrap()));
        let c6: Cidr = "::/0".parse().unwrap();
        assert!(c6.contains("fd00::1".parse().unwrap()));
    }

    #[test]
    fn test_overlaps() {
        let a: Cidr = "10.0.0.0/8".parse().unwrap();
        let b: Cidr = "10.1.0.0/16".parse().unwrap();
        let c: Cidr = "11.0.0.0/8".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
    }
}
