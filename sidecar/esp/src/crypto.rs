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

/// `hi32 || lo64` as 12 big-endian bytes, written as 8 + 4 bytes.
///
/// Why not `copy_from_slice` of the 4- and 8-byte parts: the backends read
/// a 12-byte nonce as an 8-byte and a 4-byte load, and an 8-byte load that
/// spans two earlier stores cannot be forwarded from them, so it waits for
/// every older store (the whole freshly written packet) to reach the cache,
/// ~7 ns a packet here (docs/protocol.md §8). Stores that match the loads
/// forward at once.
fn be96(hi32: u32, lo64: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&((u64::from(hi32) << 32) | (lo64 >> 32)).to_be_bytes());
    n[8..].copy_from_slice(&(lo64 as u32).to_be_bytes());
    n
}

/// `a || b || c` as 12 bytes, written as 8 + 4 bytes like [`be96`], from
/// bytes already in wire order: no byte swaps.
#[inline(always)]
fn cat96(a: [u8; 4], b: [u8; 4], c: [u8; 4]) -> [u8; 12] {
    let head = u64::from(u32::from_le_bytes(a)) | (u64::from(u32::from_le_bytes(b)) << 32);
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&head.to_le_bytes());
    n[8..].copy_from_slice(&c);
    n
}

/// Nonce = salt || IV (RFC 4106 §4). We send IV = the 64-bit sequence
/// number, which never repeats within an SA.
fn nonce(salt: &[u8; SALT_LEN], iv: u64) -> [u8; NONCE_LEN] {
    be96(u32::from_be_bytes(*salt), iv)
}

/// GCM AAD with ESN: SPI || seq high || seq low (RFC 4106 §5).
fn gcm_aad(spi: u32, seq: u64) -> [u8; 12] {
    be96(spi, seq)
}

/// Splits `buf` at `at` into the part before and the `ICV_LEN` bytes after.
#[inline(always)]
fn split_icv(buf: &mut [u8], at: usize) -> Result<(&mut [u8], &mut [u8; ICV_LEN]), CryptoError> {
    let (head, rest) = buf.split_at_mut_checked(at).ok_or(CryptoError)?;
    let icv = rest
        .get_mut(..ICV_LEN)
        .and_then(|t| <&mut [u8; ICV_LEN]>::try_from(t).ok())
        .ok_or(CryptoError)?;
    Ok((head, icv))
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
    #[inline(always)]
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
    #[inline(always)]
    pub fn open(
        &self,
        buf: &mut [u8],
        esp: usize,
        ct_end: usize,
        seq: u64,
        iv: [u8; IV_LEN],
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
            iv,
        )
    }
}

/// Protects `buf[esp + 16 .. ct_end]` and writes the ICV at `ct_end`. The
/// ESP header and IV are already in place.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
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
    let n = nonce(salt, seq);
    // The tag goes straight to its place after the ciphertext: nothing is
    // read back after the AEAD wrote the packet.
    if cipher.encrypts() {
        let aad = gcm_aad(spi, seq);
        let (head, icv) = split_icv(buf, ct_end)?;
        let data = head
            .get_mut(esp + ESP_HEADER_LEN + IV_LEN..)
            .ok_or(CryptoError)?;
        aead.seal_in_place(&n, &aad, data, icv)
    } else {
        let aad_len = ct_end - esp + GMAC_SCRATCH;
        with_gmac_aad(buf, esp, ct_end, spi, seq, |region| {
            let (aad, icv) = split_icv(region, aad_len)?;
            aead.seal_in_place(&n, aad, &mut [], icv)
        })?
    }
}

/// Verifies the ICV at `ct_end` and decrypts `buf[esp + 16 .. ct_end]` in
/// place, for the 64-bit sequence number `seq` inferred by the caller. The
/// nonce uses `iv`, the packet's IV (read by the caller from its checked
/// view), as RFC 4106 §3.1 prescribes (other senders may use a counter or
/// random IV unrelated to the sequence number).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn open(
    aead: &dyn Aead,
    cipher: Cipher,
    salt: &[u8; SALT_LEN],
    buf: &mut [u8],
    esp: usize,
    ct_end: usize,
    spi: u32,
    seq: u64,
    iv: [u8; IV_LEN],
) -> Result<(), CryptoError> {
    let [a, b, c, d, e, f, g, h] = iv;
    let n = cat96(*salt, [a, b, c, d], [e, f, g, h]);
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
