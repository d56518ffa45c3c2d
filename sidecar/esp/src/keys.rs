//! SA key material: the AES key followed by the 4-byte salt (RFC 4106 §8.1).

use core::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{Cipher, ConfigError};

/// Salt length at the end of the key material.
pub const SALT_LEN: usize = 4;
/// Longest material: AES-256 key + salt.
const MAX_MATERIAL: usize = 32 + SALT_LEN;

/// Key material for one SA: `key || salt`. Zeroized on drop; its `Debug`
/// never shows the bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SaKey {
    bytes: [u8; MAX_MATERIAL],
    len: usize,
}

impl SaKey {
    /// Takes `key || salt`: 20 bytes for AES-128 (GCM or GMAC), 36 for AES-256.
    pub fn from_bytes(material: &[u8]) -> Result<Self, ConfigError> {
        if material.len() != 20 && material.len() != MAX_MATERIAL {
            return Err(ConfigError::KeyLength {
                expected: 20,
                got: material.len(),
            });
        }
        let mut bytes = [0u8; MAX_MATERIAL];
        bytes[..material.len()].copy_from_slice(material);
        Ok(SaKey {
            bytes,
            len: material.len(),
        })
    }

    /// Checks the length against a cipher.
    pub fn check_for(&self, cipher: Cipher) -> Result<(), ConfigError> {
        if self.len != cipher.material_len() {
            return Err(ConfigError::KeyLength {
                expected: cipher.material_len(),
                got: self.len,
            });
        }
        Ok(())
    }

    /// Length of key || salt.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The AES key bytes.
    pub fn aes_key(&self) -> &[u8] {
        &self.bytes[..self.len - SALT_LEN]
    }

    /// The 4-byte salt (nonce prefix).
    pub fn salt(&self) -> [u8; SALT_LEN] {
        let mut s = [0u8; SALT_LEN];
        s.copy_from_slice(&self.bytes[self.len - SALT_LEN..self.len]);
        s
    }

    /// The whole material, e.g. for the debug CLI's hex or for Wireshark's
    /// ESP SA table. Handle with care.
    pub fn expose_material(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Debug for SaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaKey")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_checked_per_cipher() {
        let k = SaKey::from_bytes(&[7u8; 20]).unwrap();
        assert!(k.check_for(Cipher::Aes128Gcm).is_ok());
        assert!(k.check_for(Cipher::Aes128Gmac).is_ok());
        assert!(k.check_for(Cipher::Aes256Gcm).is_err());
        assert!(SaKey::from_bytes(&[0u8; 16]).is_err());
        assert_eq!(k.aes_key().len(), 16);
    }

    #[test]
    fn debug_hides_secret() {
        let k = SaKey::from_bytes(&[0xabu8; 36]).unwrap();
        let s = format!("{k:?}");
        assert!(
            !s.contains("171") && !s.to_lowercase().contains("ab,"),
            "{s}"
        );
    }
}
