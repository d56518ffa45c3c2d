//! SPI layout (DESIGN.md, docs/protocol.md §SPI):
//!
//! ```text
//!  31 30 29        24 23                                   0
//! +-----+------------+--------------------------------------+
//! |epoch| generation |          sender node id              |
//! |mod 4|   mod 64   |             (24 bits)                |
//! +-----+------------+--------------------------------------+
//! ```
//!
//! The receiver demultiplexes SPI -> (epoch slot, sender, generation) -> SA.
//! Values below 256 are reserved (RFC 4303 §2.1) and never produced.

use thiserror::Error;

/// Largest node id that fits the 24-bit field.
pub const MAX_NODE_ID: u32 = (1 << 24) - 1;

/// An SPI that cannot be composed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SpiError {
    /// Node id does not fit in 24 bits.
    #[error("node id {0} does not fit in 24 bits")]
    NodeIdTooLarge(u32),
    /// The result would be a reserved SPI (< 256): epoch slot 0, generation
    /// slot 0 and a node id below 256. Allocate node ids from 256 upwards.
    #[error("SPI {0} would be reserved (< 256); node ids must start at 256")]
    Reserved(u32),
}

/// The fields packed into an SPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpiParts {
    /// Epoch modulo 4.
    pub epoch_slot: u8,
    /// Sender key generation modulo 64.
    pub generation_slot: u8,
    /// Sender node id.
    pub node_id: u32,
}

/// Packs epoch, sender generation and sender node id into an SPI.
pub fn compose(epoch: u64, generation: u64, node_id: u32) -> Result<u32, SpiError> {
    if node_id > MAX_NODE_ID {
        return Err(SpiError::NodeIdTooLarge(node_id));
    }
    let spi = ((epoch % 4) as u32) << 30 | ((generation % 64) as u32) << 24 | node_id;
    if spi < 256 {
        return Err(SpiError::Reserved(spi));
    }
    Ok(spi)
}

/// Unpacks an SPI.
pub fn decompose(spi: u32) -> SpiParts {
    SpiParts {
        epoch_slot: (spi >> 30) as u8,
        generation_slot: ((spi >> 24) & 0x3f) as u8,
        node_id: spi & MAX_NODE_ID,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout() {
        assert_eq!(compose(1, 2, 0x0001_0203), Ok(0x4201_0203));
        assert_eq!(compose(7, 65, 300), Ok(0xc100_012c));
        assert_eq!(compose(0, 0, 255), Err(SpiError::Reserved(255)));
        assert_eq!(compose(4, 64, 5), Err(SpiError::Reserved(5)));
        assert_eq!(
            compose(0, 0, 1 << 24),
            Err(SpiError::NodeIdTooLarge(1 << 24))
        );
    }

    proptest! {
        #[test]
        fn round_trip(e in any::<u64>(), g in any::<u64>(), id in 256u32..=MAX_NODE_ID) {
            let spi = compose(e, g, id).unwrap();
            prop_assert!(spi >= 256);
            let p = decompose(spi);
            prop_assert_eq!(p, SpiParts { epoch_slot: (e % 4) as u8, generation_slot: (g % 64) as u8, node_id: id });
        }
    }
}
