//! Internet checksum (RFC 1071) pieces for the split paths: a copy that
//! sums what it copies, so a TCP segment's payload is read once instead of
//! once to copy and once to checksum, and header sums computed from field
//! values instead of re-reading bytes just stored (those loads stalled on
//! store forwarding: profile, docs/datapath.md).
//!
//! Sums are one's-complement sums of 16-bit words; they are independent of
//! byte order up to a final byte swap (RFC 1071 §2(B)), so the payload is
//! summed in native order, which the compiler vectorizes, and converted
//! once at the end ([`ne_to_be`]).

/// Copies `src` into the front of `dst` and returns the one's-complement
/// sum of `src` in native-endian 16-bit words (unfolded; an odd last byte
/// is padded with a zero byte, as RFC 1071 pads). `dst` must be at least
/// as long as `src`.
pub fn copy_and_sum(dst: &mut [u8], src: &[u8]) -> u64 {
    let dst = &mut dst[..src.len()];
    // 32 lanes of 32 bits: each gets one 16-bit word per 64-byte chunk, so
    // they cannot overflow below 64 KiB * 65536 / 64 of input.
    let mut lanes = [0u32; 32];
    let (chunks, rest) = src.as_chunks::<64>();
    let (dst_chunks, dst_rest) = dst.as_chunks_mut::<64>();
    for (s, d) in chunks.iter().zip(dst_chunks.iter_mut()) {
        *d = *s;
        for (j, lane) in lanes.iter_mut().enumerate() {
            *lane += u32::from(u16::from_ne_bytes([s[2 * j], s[2 * j + 1]]));
        }
    }
    dst_rest.copy_from_slice(rest);
    let mut sum: u64 = lanes.iter().map(|&l| u64::from(l)).sum();
    let (words, tail) = rest.as_chunks::<2>();
    for w in words {
        sum += u64::from(u16::from_ne_bytes(*w));
    }
    if let Some(&b) = tail.first() {
        sum += u64::from(u16::from_ne_bytes([b, 0]));
    }
    sum
}

/// A folded sum of native-endian words as the sum of the same bytes read
/// as big-endian words.
pub fn ne_to_be(sum: u16) -> u16 {
    u16::from_be_bytes(sum.to_ne_bytes())
}

/// Sum of the big-endian 16-bit words of `bytes` (even length) whose word
/// index is not in `skip`.
pub fn sum_be_words_except(bytes: &[u8], skip: &[usize]) -> u64 {
    let (words, _) = bytes.as_chunks::<2>();
    words
        .iter()
        .enumerate()
        .filter(|(i, _)| !skip.contains(i))
        .map(|(_, w)| u64::from(u16::from_be_bytes(*w)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshsec_esp::wire::checksum::fold;

    /// RFC 1071 by the book: big-endian words, odd byte padded.
    fn reference(b: &[u8]) -> u16 {
        let mut sum = 0u64;
        for w in b.chunks(2) {
            sum += u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
        }
        fold(sum)
    }

    #[test]
    fn test_copy_and_sum_matches_rfc1071_and_copies() {
        for len in [0, 1, 2, 63, 64, 65, 127, 1448, 1449, 65535] {
            let src: Vec<u8> = (0..len).map(|i| (i * 131 + 7) as u8).collect();
            let mut dst = vec![0u8; len + 3];
            let sum = copy_and_sum(&mut dst, &src);
            assert_eq!(&dst[..len], &src[..], "copied, len {len}");
            assert_eq!(ne_to_be(fold(sum)), reference(&src), "sum, len {len}");
        }
        // All ones: the lanes' worst case does not overflow at 64 KiB.
        let src = vec![0xffu8; 65535];
        let mut dst = vec![0u8; 65535];
        assert_eq!(
            ne_to_be(fold(copy_and_sum(&mut dst, &src))),
            reference(&src)
        );
    }

    #[test]
    fn test_sum_be_words_except_skips_words() {
        let b = [0x12, 0x34, 0xff, 0xff, 0x00, 0x01];
        assert_eq!(sum_be_words_except(&b, &[1]), 0x1235);
        assert_eq!(sum_be_words_except(&b, &[]), 0x1234 + 0xffff + 1);
    }
}
