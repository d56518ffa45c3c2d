//! ESP payload protection with the AAD and nonce layouts of RFC 4106 (GCM)
//! and RFC 4543 (GMAC), always with 64-bit extended sequence numbers.
//!
//! Both functions work on a buffer where the ESP header starts at `esp`:
//! `SPI | seq low | IV | payload, padding, pad length, next header | ICV`.

use crate::aead::{Aead, CryptoError, NONCE_LEN};
use crate::keys::SALT_LEN;
use crate::{Cipher, ESP_HEADER_LEN, ICV_LEN, IV_LEN};

/// Where the RFC 4543 AAD starts relative to the ESP header: 4 bytes before
/// it, so `SPI | seq high | seq low | IV | payload` can be laid out
/// contiguously in place (see [`with_gmac_aad`]).
const GMAC_SCRATCH: usize = 4;

/// Nonce = salt || IV (RFC 4106 §4). We send IV = the 64-bit sequence
/// number, which never repeats within an SA.
fn nonce(salt: &[u8; SALT_LEN], iv: [u8; IV_LEN]) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..SALT_LEN].copy_from_slice(salt);
    n[SALT_LEN..].copy_from_slice(&iv);
    n
}

/// GCM AAD with ESN: SPI || seq high || seq low (RFC 4106 §5).
fn gcm_aad(spi: u32, seq: u64) -> [u8; 12] {
    let mut a = [0u8; 12];
    a[..4].copy_from_slice(&spi.to_be_bytes());
    a[4..].copy_from_slice(&seq.to_be_bytes());
    a
}

/// Runs `f` on the RFC 4543 ESN AAD `SPI | seq high | seq low | IV |
/// payload..trailer`, built in place: the 4 bytes before the ESP header
/// (the end of the IP or UDP header) and the SPI slot are borrowed and
/// restored afterwards. `esp >= 4` is guaranteed by the callers because an
/// IP header always precedes ESP.
fn with_gmac_aad<R>(
    buf: &mut [u8],
    esp: usize,
    ct_end: usize,
    spi: u32,
    seq: u64,
    f: impl FnOnce(&mut [u8]) -> R,
) -> Result<R, CryptoError> {
    let start = esp.checked_sub(GMAC_SCRATCH).ok_or(CryptoError)?;
    let mut saved = [0u8; 8];
    saved.copy_from_slice(&buf[start..esp + 4]);
    buf[start..esp].copy_from_slice(&spi.to_be_bytes());
    buf[esp..esp + 4].copy_from_slice(&((seq >> 32) as u32).to_be_bytes());
    let r = f(&mut buf[start..ct_end + ICV_LEN]);
    buf[start..esp + 4].copy_from_slice(&saved);
    Ok(r)
}

/// The per-SA crypto state shared by both directions' code.
pub(crate) struct SaCrypto {
    pub spi: u32,
    pub cipher: Cipher,
    salt: [u8; SALT_LEN],
    aead: Box<dyn Aead>,
}

impl Drop for SaCrypto {
    /// The salt is key material (the AEAD zeroizes its own round keys).
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.salt);
    }
}

impl SaCrypto {
    pub fn new(spi: u32, cipher: Cipher, salt: [u8; SALT_LEN], aead: Box<dyn Aead>) -> Self {
        SaCrypto {
            spi,
            cipher,
            salt,
            aead,
        }
    }

    /// See [`seal`].
    pub fn seal(
        &self,
        buf: &mut [u8],
        esp: usize,
        ct_end: usize,
        seq: u64,
    ) -> Result<(), CryptoError> {
        seal(
            self.aead.as_ref(),
            self.cipher,
            &self.salt,
            buf,
            esp,
            ct_end,
            self.spi,
            seq,
        )
    }

    /// See [`open`].
    pub fn open(
        &self,
        buf: &mut [u8],
        esp: usize,
        ct_end: usize,
        seq: u64,
    ) -> Result<(), CryptoError> {
        open(
            self.aead.as_ref(),
            self.cipher,
            &self.salt,
            buf,
            esp,
            ct_end,
            self.spi,
            seq,
        )
    }
}

/// Protects `buf[esp + 16 .. ct_end]` and writes the ICV at `ct_end`. The
/// ESP header and IV are already in place.
#[allow(clippy::too_many_arguments)]
fn seal(
    aead: &dyn Aead,
    cipher: Cipher,
    salt: &[u8; SALT_LEN],
    buf: &mut [u8],
    esp: usize,
    ct_end: usize,
    spi: u32,
    seq: u64,
) -> Result<(), CryptoError> {
    let n = nonce(salt, seq.to_be_bytes());
    let mut tag = [0u8; ICV_LEN];
    if cipher.encrypts() {
        let aad = gcm_aad(spi, seq);
        aead.seal_in_place(
            &n,
            &aad,
            &mut buf[esp + ESP_HEADER_LEN + IV_LEN..ct_end],
            &mut tag,
        )?;
    } else {
        let aad_len = ct_end - esp + GMAC_SCRATCH;
        with_gmac_aad(buf, esp, ct_end, spi, seq, |region| {
            aead.seal_in_place(&n, &region[..aad_len], &mut [], &mut tag)
        })??;
    }
    buf[ct_end..ct_end + ICV_LEN].copy_from_slice(&tag);
    Ok(())
}

/// Verifies the ICV at `ct_end` and decrypts `buf[esp + 16 .. ct_end]` in
/// place, for the 64-bit sequence number `seq` inferred by the caller. The
/// nonce uses the IV from the packet, as RFC 4106 §3.1 prescribes (other
/// senders may use a counter or random IV unrelated to the sequence number).
#[allow(clippy::too_many_arguments)]
fn open(
    aead: &dyn Aead,
    cipher: Cipher,
    salt: &[u8; SALT_LEN],
    buf: &mut [u8],
    esp: usize,
    ct_end: usize,
    spi: u32,
    seq: u64,
) -> Result<(), CryptoError> {
    let mut iv = [0u8; IV_LEN];
    iv.copy_from_slice(&buf[esp + ESP_HEADER_LEN..esp + ESP_HEADER_LEN + IV_LEN]);
    let n = nonce(salt, iv);
    if cipher.encrypts() {
        let aad = gcm_aad(spi, seq);
        aead.open_in_place(
            &n,
            &aad,
            &mut buf[esp + ESP_HEADER_LEN + IV_LEN..ct_end + ICV_LEN],
        )
    } else {
        let aad_len = ct_end - esp + GMAC_SCRATCH;
        with_gmac_aad(buf, esp, ct_end, spi, seq, |region| {
            let (aad, tag) = region.split_at_mut(aad_len);
            aead.open_in_place(&n, aad, tag)
        })?
    }
}
