//! X25519 public keys as published in `IPsecNode.spec.tunnels[].publicKeys`:
//! standard base64 (with padding) of exactly 32 bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Pattern the API server enforces (CEL `matches`): 43 base64 characters
/// then '='. The last data character carries only 4 bits of key, so its 2
/// low bits must be zero: that rules out non-canonical encodings.
pub const PUBLIC_KEY_PATTERN: &str = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$";

/// Length of an X25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Why a published public key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublicKeyError {
    /// Not 44 characters of canonical standard base64.
    #[error("public key is not canonical base64 of 32 bytes (44 characters ending in '=')")]
    Encoding,
    /// All zeros: a low-order point's result; never a real key.
    #[error("public key is all zeros")]
    AllZero,
}

/// Encode a public key the way the API stores it.
pub fn encode_public_key(key: &[u8; PUBLIC_KEY_LEN]) -> String {
    STANDARD.encode(key)
}

/// Decode a published public key, accepting exactly what the API server
/// accepts (and rejecting the all-zero key on top).
pub fn decode_public_key(text: &str) -> Result<[u8; PUBLIC_KEY_LEN], PublicKeyError> {
    if text.len() != 44 {
        return Err(PublicKeyError::Encoding);
    }
    let bytes = STANDARD
        .decode(text)
        .map_err(|_| PublicKeyError::Encoding)?;
    let key: [u8; PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| PublicKeyError::Encoding)?;
    if key == [0; PUBLIC_KEY_LEN] {
        return Err(PublicKeyError::AllZero);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(1));
        let text = encode_public_key(&key);
        assert_eq!(text.len(), 44);
        assert!(text.ends_with('='));
        assert_eq!(decode_public_key(&text), Ok(key));
    }

    #[test]
    fn rfc7748_test_vector_public_key() {
        // Alice's public key from RFC 7748 section 6.1.
        let hex = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
        let key: [u8; 32] =
            std::array::from_fn(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap());
        let text = encode_public_key(&key);
        assert_eq!(text, "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=");
        assert_eq!(decode_public_key(&text), Ok(key));
    }

    #[test]
    fn rejects_bad_encodings() {
        let good = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";
        let cases = [
            "",
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo", // no padding
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo==", // too long
            "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo=", // url-safe alphabet
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmp=", // non-canonical last char
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066Spjqq=Tmo=", // padding inside
        ];
        for bad in cases {
            assert_eq!(
                decode_public_key(bad),
                Err(PublicKeyError::Encoding),
                "{bad:?}"
            );
        }
        assert!(decode_public_key(good).is_ok());
    }

    #[test]
    fn rejects_all_zero_key() {
        let zero = encode_public_key(&[0; 32]);
        assert_eq!(decode_public_key(&zero), Err(PublicKeyError::AllZero));
    }
}
