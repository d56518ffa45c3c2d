//! TCP header view (RFC 9293), enough for MSS clamping.

use super::{WireError, be16, put16};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const CHECKSUM: usize = 16;
}

/// Minimum TCP header length.
pub const HEADER_LEN: usize = 20;
/// SYN flag.
pub const FLAG_SYN: u8 = 0x02;
/// ACK flag.
pub const FLAG_ACK: u8 = 0x10;
/// Option kinds.
pub mod option {
    /// End of option list.
    pub const END: u8 = 0;
    /// No-operation.
    pub const NOP: u8 = 1;
    /// Maximum segment size.
    pub const MSS: u8 = 2;
}

/// A view of a TCP segment.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer and checks [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the header, including options, fits the buffer.
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let hl = self.header_len();
        if hl < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if b.len() < hl {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Header length including options.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// Flag byte (CWR ECE URG ACK PSH RST SYN FIN).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Whether SYN is set.
    pub fn syn(&self) -> bool {
        self.flags() & FLAG_SYN != 0
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Option bytes.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// Offset (from the segment start) of the MSS option's value, if present
    /// and well-formed. A malformed option list ends the search.
    pub fn mss_value_offset(&self) -> Option<usize> {
        let opts = self.options();
        let mut i = 0;
        while i < opts.len() {
            match opts[i] {
                option::END => return None,
                option::NOP => i += 1,
                kind => {
                    let len = usize::from(*opts.get(i + 1)?);
                    if len < 2 || i + len > opts.len() {
                        return None;
                    }
                    if kind == option::MSS && len == 4 {
                        return Some(HEADER_LEN + i + 2);
                    }
                    i += len;
                }
            }
        }
        None
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn_with_options(opts: &[u8]) -> Vec<u8> {
        let mut s = vec![0u8; HEADER_LEN];
        s[12] = (((HEADER_LEN + opts.len()) / 4) as u8) << 4;
        s[13] = FLAG_SYN;
        s.extend_from_slice(opts);
        s
    }

    #[test]
    fn test_mss_found_after_nops() {
        let s = syn_with_options(&[1, 1, 4, 2, 2, 4, 0x05, 0xb4]);
        let p = Packet::new_checked(&s[..]).unwrap();
        assert!(p.syn());
        assert_eq!(p.mss_value_offset(), Some(HEADER_LEN + 6));
    }

    #[test]
    fn test_malformed_options_stop() {
        let s = syn_with_options(&[3, 0, 2, 4]);
        assert_eq!(
            Packet::new_checked(&s[..]).unwrap().mss_value_offset(),
            None
        );
        let s = syn_with_options(&[3, 9, 2, 4]);
        assert_eq!(
            Packet::new_checked(&s[..]).unwrap().mss_value_offset(),
            None
        );
    }

    #[test]
    fn test_check_len() {
        let mut s = syn_with_options(&[1, 1, 1, 1]);
        assert_eq!(
            Packet::new_checked(&s[..23]).unwrap_err(),
            WireError::Truncated
        );
        s[12] = 0x40;
        assert_eq!(
            Packet::new_checked(&s[..]).unwrap_err(),
            WireError::Malformed
        );
    }
}
