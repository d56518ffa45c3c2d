//! aws-lc-rs backend (cargo feature `aws-lc`).

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use super::{Aead, CryptoError, NONCE_LEN};
use crate::{Cipher, ICV_LEN};

pub(super) fn new(cipher: Cipher, key: &[u8]) -> Result<Box<dyn Aead>, CryptoError> {
    let alg = match cipher {
        Cipher::Aes128Gcm | Cipher::Aes128Gmac => &AES_128_GCM,
        Cipher::Aes256Gcm => &AES_256_GCM,
    };
    let key = UnboundKey::new(alg, key).map_err(|_| CryptoError)?;
    Ok(Box::new(AwsLc(LessSafeKey::new(key))))
}

/// `LessSafeKey` because the nonce is built by the SA from its never-reused
/// sequence counter (DESIGN.md invariant 1), not by a `NonceSequence`.
struct AwsLc(LessSafeKey);

impl Aead for AwsLc {
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        data: &mut [u8],
        tag: &mut [u8; ICV_LEN],
    ) -> Result<(), CryptoError> {
        // The scatter form writes the tag straight into `tag` (usually the
        // packet buffer). `seal_in_place_separate_tag` returns it by value
        // and the copy's wide load waits for the whole ciphertext to leave
        // the store buffer first (store-forwarding failure): ~5 ns a packet
        // at 1400 B (docs/protocol.md §8).
        self.0
            .seal_in_place_scatter(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                data,
                &[],
                tag,
            )
            .map_err(|_| CryptoError)
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        data_and_tag: &mut [u8],
    ) -> Result<(), CryptoError> {
        self.0
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                data_and_tag,
            )
            .map(|_| ())
            .map_err(|_| CryptoError)
    }
}
