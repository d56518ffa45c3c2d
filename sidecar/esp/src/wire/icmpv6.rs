//! ICMPv6 view (RFC 4443), enough to build "packet too big" and to
//! recognise error messages.

use core::net::Ipv6Addr;

use super::{WireError, be32, checksum, ip_proto, put16, put32};

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const MTU: usize = 4;
}

/// ICMPv6 header length (type, code, checksum, 4 bytes of message body).
pub const HEADER_LEN: usize = 8;
/// Packet too big.
pub const TYPE_PACKET_TOO_BIG: u8 = 2;

/// Whether an ICMPv6 type is an error message (types below 128).
pub const fn is_error(ty: u8) -> bool {
    ty < 128
}

/// A view of an ICMPv6 message.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer and checks [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the 8-byte header fits.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// MTU of a packet-too-big message.
    pub fn mtu(&self) -> u32 {
        be32(self.buffer.as_ref(), field::MTU)
    }

    /// Whether the checksum (with the IPv6 pseudo-header) is correct.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        let sum = checksum::pseudo_v6(src, dst, ip_proto::ICMPV6, b.len() as u32);
        !checksum::fold(checksum::accumulate(sum, b)) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes a "packet too big" header (checksum left for
    /// [`Self::fill_checksum`]).
    pub fn set_packet_too_big(&mut self, mtu: u32) {
        let b = self.buffer.as_mut();
        b[field::TYPE] = TYPE_PACKET_TOO_BIG;
        b[field::CODE] = 0;
        put32(b, field::MTU, mtu);
    }

    /// Computes the checksum over the whole buffer with the pseudo-header.
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        let b = self.buffer.as_mut();
        put16(b, field::CHECKSUM, 0);
        let sum = checksum::pseudo_v6(src, dst, ip_proto::ICMPV6, b.len() as u32);
        let c = !checksum::fold(checksum::accumulate(sum, b));
        put16(b, field::CHECKSUM, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_construct_deconstruct() {
        let (s, d) = (Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
        let mut b = [0u8; 48];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_packet_too_big(1280);
        p.fill_checksum(s, d);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.msg_type(), p.code(), p.mtu()), (2, 0, 1280));
        assert!(p.verify_checksum(s, d));
        assert!(!p.verify_checksum(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 9), d));
        assert_eq!(
            Packet::new_checked(&b[..7]).unwrap_err(),
            WireError::Truncated
        );
    }
}
