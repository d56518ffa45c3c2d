//! ESP header view (RFC 4303 §2) with the GCM/GMAC explicit IV.

use super::{WireError, be32, put32};
use crate::{ESP_HEADER_LEN, ICV_LEN, IV_LEN};

mod field {
    pub const SPI: usize = 0;
    pub const SEQ: usize = 4;
    pub const IV: core::ops::Range<usize> = 8..16;
}

/// Smallest valid ESP packet with an 8-byte IV and 16-byte ICV: header, IV,
/// a ciphertext holding at least pad length and next header, and the ICV.
pub const MIN_LEN: usize = ESP_HEADER_LEN + IV_LEN + 2 + ICV_LEN;

/// A view of an ESP packet (header through ICV).
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

    /// Checks room for header, IV, trailer and ICV.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < MIN_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Security parameter index.
    pub fn spi(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SPI)
    }

    /// Low 32 bits of the sequence number.
    pub fn seq_low(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ)
    }

    /// Explicit IV.
    pub fn iv(&self) -> [u8; IV_LEN] {
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&self.buffer.as_ref()[field::IV]);
        iv
    }

    /// Ciphertext (or GMAC plaintext): payload, padding, pad length, next header.
    pub fn ciphertext(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[ESP_HEADER_LEN + IV_LEN..b.len() - ICV_LEN]
    }

    /// Integrity check value.
    pub fn icv(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[b.len() - ICV_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes SPI, low sequence bits and the IV (= the full 64-bit sequence
    /// number, RFC 4106 §3.1 / DESIGN.md invariant 1).
    pub fn set_header(&mut self, spi: u32, seq: u64) {
        let b = self.buffer.as_mut();
        put32(b, field::SPI, spi);
        put32(b, field::SEQ, seq as u32);
        b[field::IV].copy_from_slice(&seq.to_be_bytes());
    }
}

/// Padding needed so that payload + pad length + next header is a multiple
/// of 4 (RFC 4303 §2.4, RFC 4106 §3.2).
pub const fn pad_len(payload_len: usize) -> usize {
    (4 - (payload_len + 2) % 4) % 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_construct_deconstruct() {
        let mut b = [0u8; MIN_LEN + 2];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_header(0x1234_5678, 0x0000_0001_0000_0002);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.spi(), 0x1234_5678);
        assert_eq!(p.seq_low(), 2);
        assert_eq!(p.iv(), [0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(p.ciphertext().len(), 4);
        assert_eq!(p.icv().len(), ICV_LEN);
        assert_eq!(
            Packet::new_checked(&b[..MIN_LEN - 1]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn test_pad_len() {
        for n in 0..64 {
            let p = pad_len(n);
            assert!(p < 4);
            assert_eq!((n + p + 2) % 4, 0);
        }
    }
}
