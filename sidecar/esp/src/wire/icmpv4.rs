//! ICMP for IPv4 view (RFC 792), enough to build "fragmentation needed"
//! (RFC 1191) and to recognise error messages.

use super::{WireError, be16, checksum, put16};

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const NEXT_HOP_MTU: usize = 6;
}

/// ICMP header length (type, code, checksum, 4 bytes of rest-of-header).
pub const HEADER_LEN: usize = 8;
/// Destination unreachable.
pub const TYPE_DEST_UNREACHABLE: u8 = 3;
/// Code: fragmentation needed and DF set.
pub const CODE_FRAG_NEEDED: u8 = 4;

/// Whether an ICMP type is an error message (errors never trigger errors).
pub const fn is_error(ty: u8) -> bool {
    matches!(ty, 3 | 4 | 5 | 11 | 12)
}

/// A view of an ICMP message.
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

    /// Next-hop MTU (destination unreachable / fragmentation needed).
    pub fn next_hop_mtu(&self) -> u16 {
        be16(self.buffer.as_ref(), field::NEXT_HOP_MTU)
    }

    /// Whether the checksum over the whole message is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes a "fragmentation needed" header (checksum left for
    /// [`Self::fill_checksum`]).
    pub fn set_frag_needed(&mut self, mtu: u16) {
        let b = self.buffer.as_mut();
        b[field::TYPE] = TYPE_DEST_UNREACHABLE;
        b[field::CODE] = CODE_FRAG_NEEDED;
        b[4..6].fill(0);
        put16(b, field::NEXT_HOP_MTU, mtu);
    }

    /// Computes the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        let b = self.buffer.as_mut();
        put16(b, field::CHECKSUM, 0);
        let c = checksum::checksum(b);
        put16(b, field::CHECKSUM, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_construct_deconstruct() {
        let mut b = [0u8; 36];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_frag_needed(1400);
        p.fill_checksum();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.msg_type(), p.code(), p.next_hop_mtu()), (3, 4, 1400));
        assert!(p.verify_checksum());
        assert_eq!(
            Packet::new_checked(&b[..7]).unwrap_err(),
            WireError::Truncated
        );
    }
}
