//! Extended sequence number inference (RFC 4303 Appendix A2.2).
//!
//! Only the low 32 bits travel on the wire; the receiver guesses the high
//! 32 bits from the highest authenticated sequence number `top` and the
//! window size. A wrong guess makes the ICV check fail (the high bits are in
//! the AAD), so a guess is never trusted without authentication.

/// Returns the 64-bit sequence number for a received low half, or `None`
/// when it would fall below sequence 0 (before the SA's first packet).
#[inline(always)]
pub(crate) fn infer(top: u64, window: u32, seq_low: u32) -> Option<u64> {
    let tl = top as u32;
    let th = (top >> 32) as u32;
    let w = window;
    let seq_high = if tl >= w - 1 {
        // Case A: the window lies within one 2^32 subspace.
        if seq_low >= tl - (w - 1) {
            th
        } else {
            th.checked_add(1)?
        }
    } else {
        // Case B: the window spans two subspaces.
        if seq_low >= tl.wrapping_sub(w - 1) {
            th.checked_sub(1)?
        } else {
            th
        }
    };
    Some((u64::from(seq_high) << 32) | u64::from(seq_low))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn across_the_boundary() {
        let top = (1u64 << 32) - 5;
        assert_eq!(infer(top, 64, 3), Some((1u64 << 32) + 3));
        assert_eq!(
            infer(top, 64, u32::MAX - 10),
            Some(u64::from(u32::MAX - 10))
        );
        let top = (1u64 << 32) + 2;
        assert_eq!(
            infer(top, 64, u32::MAX - 10),
            Some(u64::from(u32::MAX - 10))
        );
        assert_eq!(infer(top, 64, 7), Some((1u64 << 32) + 7));
    }

    #[test]
    fn never_below_zero() {
        // Early in the SA a low value "behind" the window has no subspace -1.
        assert_eq!(infer(3, 64, u32::MAX), None);
        assert_eq!(infer(3, 64, 2), Some(2));
    }

    proptest! {
        /// Any sequence inside the window or up to 2^31 ahead is recovered.
        #[test]
        fn recovers_nearby(top in 64u64..u64::MAX / 2, back in 0u64..8192, ahead in 1u64..(1 << 31), w in 64u32..=8192, fwd in any::<bool>()) {
            let seq = if fwd { top + ahead } else { top - (back % u64::from(w)) };
            prop_assume!(seq > 0);
            prop_assert_eq!(infer(top, w, seq as u32), Some(seq));
        }
    }
}
