//! RustCrypto `aes-gcm` backend.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit, Nonce, Tag};

use super::{Aead, CryptoError, NONCE_LEN};
use crate::{Cipher, ICV_LEN};

pub(super) fn new(cipher: Cipher, key: &[u8]) -> Result<Box<dyn Aead>, CryptoError> {
    Ok(match cipher {
        Cipher::Aes128Gcm | Cipher::Aes128Gmac => {
            Box::new(Gcm(Aes128Gcm::new_from_slice(key).map_err(|_| CryptoError)?))
        }
        Cipher::Aes256Gcm => {
            Box::new(Gcm(Aes256Gcm::new_from_slice(key).map_err(|_| CryptoError)?))
        }
    })
}

/// Wrapper so one impl serves both key sizes. The inner type zeroizes its
/// round keys on drop (`zeroize` feature).
struct Gcm<C>(C);

impl<C: AeadInPlace + Send + Sync> Aead for Gcm<C>
where
    C: aes_gcm::aead::AeadCore<
            NonceSize = aes_gcm::aead::consts::U12,
            TagSize = aes_gcm::aead::consts::U16,
        >,
{
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        data: &mut [u8],
        tag: &mut [u8; ICV_LEN],
    ) -> Result<(), CryptoError> {
        let t = self
            .0
            .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, data)
            .map_err(|_| CryptoError)?;
        tag.copy_from_slice(&t);
        Ok(())
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        data_and_tag: &mut [u8],
    ) -> Result<(), CryptoError> {
        let split = data_and_tag.len().checked_sub(ICV_LEN).ok_or(CryptoError)?;
        let (data, tag) = data_and_tag.split_at_mut(split);
        self.0
            .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, data, Tag::from_slice(tag))
            .map_err(|_| CryptoError)
    }
}
