//! Exact per-packet overhead of each ESP configuration.

use crate::wire::esp;
use crate::{Cipher, ESP_HEADER_LEN, Encap, Family, ICV_LEN, IV_LEN, Mode};

/// Largest padding to 4-byte alignment.
const MAX_PAD: usize = 3;
/// Pad length + next header bytes.
const TRAILER: usize = 2;

/// Bytes seal adds to a packet at most (maximum padding included).
/// `family` is the outer family in tunnel mode and is ignored in transport
/// mode (the original header is kept). All supported ciphers use an 8-byte
/// IV and a 16-byte ICV, so `cipher` does not change the result today; it
/// is a parameter so a future transform cannot be forgotten here.
///
/// | mode      | encap | family | bytes |
/// |-----------|-------|--------|-------|
/// | transport | none  | any    | 37    |
/// | transport | UDP   | any    | 45    |
/// | tunnel    | none  | IPv4   | 57    |
/// | tunnel    | UDP   | IPv4   | 65    |
/// | tunnel    | none  | IPv6   | 77    |
/// | tunnel    | UDP   | IPv6   | 85    |
pub fn overhead(mode: Mode, encap: Encap, family: Family, cipher: Cipher) -> usize {
    let outer = match mode {
        Mode::Transport => 0,
        Mode::Tunnel => family.header_len(),
    };
    let (iv, icv) = match cipher {
        Cipher::Aes128Gcm | Cipher::Aes256Gcm | Cipher::Aes128Gmac => (IV_LEN, ICV_LEN),
    };
    outer + encap.header_len() + ESP_HEADER_LEN + iv + MAX_PAD + TRAILER + icv
}

/// The largest plaintext packet that seals to at most `link_mtu` bytes:
/// exact, since only inputs whose padding would cross the limit are cut.
pub fn inner_mtu(
    link_mtu: usize,
    mode: Mode,
    encap: Encap,
    family: Family,
    cipher: Cipher,
) -> usize {
    let fixed = overhead(mode, encap, family, cipher) - MAX_PAD;
    let mut l = link_mtu.saturating_sub(fixed);
    // Sealed length is l + fixed + pad(l - header); the header length
    // (20, 40, or with options) is a multiple of 4, so pad depends on l only.
    while l > 0 && l + fixed + esp::pad_len(l) > link_mtu {
        l -= 1;
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let c = Cipher::Aes128Gcm;
        let u = Encap::udp_default();
        assert_eq!(overhead(Mode::Transport, Encap::None, Family::V4, c), 37);
        assert_eq!(overhead(Mode::Transport, u, Family::V6, c), 45);
        assert_eq!(overhead(Mode::Tunnel, Encap::None, Family::V4, c), 57);
        assert_eq!(
            overhead(Mode::Tunnel, u, Family::V6, Cipher::Aes128Gmac),
            85
        );
    }

    #[test]
    fn inner_mtu_fits() {
        for mtu in 1000..1100 {
            let l = inner_mtu(
                mtu,
                Mode::Transport,
                Encap::None,
                Family::V4,
                Cipher::Aes256Gcm,
            );
            assert!(l + 34 + esp::pad_len(l) <= mtu);
            assert!((l + 1) + 34 + esp::pad_len(l + 1) > mtu);
        }
    }
}
