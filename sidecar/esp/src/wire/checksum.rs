//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

use core::net::{Ipv4Addr, Ipv6Addr};

/// Adds `data` as big-endian 16-bit words (odd tail padded with zero) to a
/// running 32-bit sum. Combine sums with `wrapping_add` before [`fold`].
pub fn accumulate(mut sum: u64, data: &[u8]) -> u64 {
    // Eight bytes at a time: the carries land in the upper half of the u64
    // and are folded at the end, which is equivalent to 16-bit ones'
    // complement addition.
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        sum = sum.wrapping_add(w >> 32).wrapping_add(w & 0xffff_ffff);
    }
    let mut words = chunks.remainder().chunks_exact(2);
    for w in &mut words {
        sum = sum.wrapping_add(u64::from(u16::from_be_bytes([w[0], w[1]])));
    }
    if let [last] = words.remainder() {
        sum = sum.wrapping_add(u64::from(*last) << 8);
    }
    sum
}

/// Folds a running sum to 16 bits (not complemented).
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum field value for `data` (complement of the folded sum).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(accumulate(0, data))
}

/// Pseudo-header sum for IPv4 (RFC 768 / RFC 793).
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u64 {
    let s = accumulate(0, &src.octets());
    let s = accumulate(s, &dst.octets());
    s + u64::from(proto) + u64::from(len)
}

/// Pseudo-header sum for IPv6 (RFC 8200 §8.1).
pub fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: u32) -> u64 {
    let s = accumulate(0, &src.octets());
    let s = accumulate(s, &dst.octets());
    s + u64::from(proto) + u64::from(len)
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word changed from
/// `old` to `new`, without touching the rest of the data.
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    update(check, &[(old, new)])
}

/// RFC 1624 eqn. 3 for several changed 16-bit words `(old, new)` at once:
/// one fold instead of one per word.
pub fn update(check: u16, changes: &[(u16, u16)]) -> u16 {
    let sum = changes.iter().fold(u64::from(!check), |s, &(old, new)| {
        s + u64::from(!old) + u64::from(new)
    });
    !fold(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example bytes; their sum folds to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(accumulate(0, &data)), 0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(accumulate(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }

    #[test]
    fn incremental_matches_recompute() {
        let mut data = [
            0x45u8, 0, 0, 40, 1, 2, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let c = checksum(&data);
        let old = u16::from_be_bytes([data[2], data[3]]);
        data[2..4].copy_from_slice(&1400u16.to_be_bytes());
        assert_eq!(update16(c, old, 1400), checksum(&data));
    }

    #[test]
    fn several_words_at_once_match_recompute() {
        let mut data = [
            0x45u8, 0, 0, 40, 1, 2, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let c = checksum(&data);
        let word = |d: &[u8], i: usize| u16::from_be_bytes([d[i], d[i + 1]]);
        let (old_len, old_ttl) = (word(&data, 2), word(&data, 8));
        data[2..4].copy_from_slice(&0xfff0u16.to_be_bytes());
        data[9] = 17;
        let changes = [(old_len, 0xfff0), (old_ttl, word(&data, 8))];
        assert_eq!(update(c, &changes), checksum(&data));
    }
}
