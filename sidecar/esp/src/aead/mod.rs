//! The AEAD behind a small trait, so the ESP code does not care which
//! library does AES-GCM. GMAC (RFC 4543) is GCM with everything in the AAD
//! and an empty plaintext, so one trait covers all three transforms.

#[cfg(feature = "aws-lc")]
mod awslc;
mod rustcrypto;

use thiserror::Error;

use crate::{Cipher, ICV_LEN};

/// GCM nonce length: 4-byte salt || 8-byte IV.
pub const NONCE_LEN: usize = 12;

/// The backend failed; for `open` this means the tag did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("AEAD operation failed")]
pub struct CryptoError;

/// In-place AES-GCM with a detached 16-byte tag.
pub trait Aead: Send + Sync {
    /// Encrypts `data` in place and writes the tag.
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        data: &mut [u8],
        tag: &mut [u8; ICV_LEN],
    ) -> Result<(), CryptoError>;

    /// Verifies the last 16 bytes of `data_and_tag` as the tag and decrypts
    /// the rest in place. On failure the contents are unspecified.
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        data_and_tag: &mut [u8],
    ) -> Result<(), CryptoError>;
}

/// Which library implements the AEAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// RustCrypto `aes-gcm`: pure Rust, portable, always built.
    RustCrypto,
    /// `aws-lc-rs`: fastest here, FIPS-capable (cargo feature `aws-lc`).
    #[cfg(feature = "aws-lc")]
    AwsLc,
}

impl Default for Backend {
    /// aws-lc-rs when built in, else RustCrypto.
    fn default() -> Self {
        #[cfg(feature = "aws-lc")]
        {
            Backend::AwsLc
        }
        #[cfg(not(feature = "aws-lc"))]
        {
            Backend::RustCrypto
        }
    }
}

impl Backend {
    /// Every backend compiled into this build.
    pub const ALL: &'static [Backend] = &[
        Backend::RustCrypto,
        #[cfg(feature = "aws-lc")]
        Backend::AwsLc,
    ];

    /// Stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Backend::RustCrypto => "aes-gcm",
            #[cfg(feature = "aws-lc")]
            Backend::AwsLc => "aws-lc-rs",
        }
    }
}

/// Builds the AEAD for `cipher` from the AES key (without salt). The key
/// length has been checked by the caller via [`crate::SaKey::check_for`].
pub fn new_aead(
    backend: Backend,
    cipher: Cipher,
    aes_key: &[u8],
) -> Result<Box<dyn Aead>, CryptoError> {
    match backend {
        Backend::RustCrypto => rustcrypto::new(cipher, aes_key),
        #[cfg(feature = "aws-lc")]
        Backend::AwsLc => awslc::new(cipher, aes_key),
    }
}
