//! Extended sequence number inference (RFC 4303 Appendix A2.2).
//!
//! Only the low 32 bits travel on the wire; the receiver guesses the high
//! 32 bits from the highest authenticated sequence number `top` and the
//! window size. A wrong guess makes the ICV check fail (the high bits are in
//! the AAD), so a guess is never trusted without authentication.

/// Returns the 64-bit sequence number for a received low half, or `None`
/// when it would fall below sequence 0 (before the SA's first packet) or
/// is a late packet.
///
/// Late: RFC 4303 A2.2 puts a low half left of the window into the next
/// 2^32 subspace, where a packet late by more than the window then fails
/// its ICV and counts as forged. We take that guess only when it lands at
/// most 2^31 ahead (a wrap); farther, the nearer reading is that the
/// packet is late (a sender that far ahead would mean 2^31 packets lost in
/// a row), and it is refused before the AEAD runs. Likewise just after a
/// wrap (Case B), for a low half more than 2^31 ahead within the new
/// subspace, unless nothing was authenticated yet (`top` 0: a fresh or
/// restarted receiver takes any first number). Both branches are off the
/// in-order path; a low half far ahead within the same subspace in Case A
/// is still taken as ahead (late by over 2^31 packets is not a case).
#[inline(always)]
pub(crate) fn infer(top: u64, window: u32, seq_low: u32) -> Option<u64> {
    const HALF: u32 = 1 << 31;
    let tl = top as u32;
    let th = (top >> 32) as u32;
    let w = window;
    let seq_high = if tl >= w - 1 {
        // Case A: the window lies within one 2^32 subspace.
        if seq_low >= tl - (w - 1) {
            th
        } else if tl - seq_low < HALF {
            return None;
        } else {
            th.checked_add(1)?
        }
    } else {
        // Case B: the window spans two subspaces.
        if seq_low >= tl.wrapping_sub(w - 1) {
            th.checked_sub(1)?
        } else if top != 0 && seq_low > tl && seq_low - tl > HALF {
            return None;
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
    fn late_is_not_a_wrap() {
        // 1e6 behind reads as late, not as 2^32 - 1e6 ahead.
        assert_eq!(infer(1_000_000, 64, 5), None);
        // Exactly 2^31 ahead across the boundary is still a wrap.
        let top = (1u64 << 32) + (1 << 31);
        assert_eq!(infer(top, 64, 0), Some(2u64 << 32));
        assert_eq!(infer(top, 64, 1), None);
        // Case B: just after a wrap, 3e9 ahead in the subspace is late...
        let top = (1u64 << 32) + 100;
        assert_eq!(infer(top, 8192, 3_000_000_000), None);
        // ...but a fresh window takes it.
        assert_eq!(infer(0, 8192, 3_000_000_000), Some(3_000_000_000));
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
