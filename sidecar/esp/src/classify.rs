//! First look at a received packet: is it ESP, and for which SPI? Lets the
//! datapath pick the inbound SA before opening.

use crate::ip::IpLayout;
use crate::wire::{esp, ip_proto, udp};
use crate::{Family, NAT_T_PORT, OpenError};

/// What a received packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Raw ESP (IP protocol 50).
    Esp {
        /// Outer IP family.
        family: Family,
        /// Security parameter index.
        spi: u32,
        /// Low 32 bits of the sequence number.
        seq_low: u32,
    },
    /// ESP in UDP (RFC 3948).
    UdpEsp {
        /// Outer IP family.
        family: Family,
        /// Security parameter index.
        spi: u32,
        /// Low 32 bits of the sequence number.
        seq_low: u32,
        /// UDP source port (the peer's, possibly NAT-mapped).
        sport: u16,
        /// UDP destination port.
        dport: u16,
    },
    /// RFC 3948 NAT-keepalive (single 0xFF byte): drop quietly.
    NatKeepalive,
    /// Anything else, including IKE (non-ESP marker) on the NAT-T port.
    NotEsp,
}

impl Inbound {
    /// The SPI, for ESP packets.
    pub fn spi(&self) -> Option<u32> {
        match self {
            Inbound::Esp { spi, .. } | Inbound::UdpEsp { spi, .. } => Some(*spi),
            Inbound::NatKeepalive | Inbound::NotEsp => None,
        }
    }
}

/// Classifies with UDP encapsulation on the default port 4500.
pub fn classify(packet: &[u8]) -> Result<Inbound, OpenError> {
    classify_with_port(packet, NAT_T_PORT)
}

/// Classifies a received IP packet; UDP to `port` is treated as RFC 3948.
pub fn classify_with_port(packet: &[u8], port: u16) -> Result<Inbound, OpenError> {
    let ip = IpLayout::parse(packet)?;
    let l4 = &packet[ip.upper_offset..ip.total_len];
    match ip.protocol {
        ip_proto::ESP => {
            let e = esp::Packet::new_checked(l4)?;
            Ok(Inbound::Esp {
                family: ip.family,
                spi: e.spi(),
                seq_low: e.seq_low(),
            })
        }
        ip_proto::UDP => {
            let u = udp::Packet::new_checked(l4)?;
            if u.dst_port() != port {
                return Ok(Inbound::NotEsp);
            }
            match u.payload() {
                [0xff] => Ok(Inbound::NatKeepalive),
                // Non-ESP marker: IKE shares the port (RFC 3948 §2.2).
                [0, 0, 0, 0, ..] => Ok(Inbound::NotEsp),
                payload => {
                    let e = esp::Packet::new_checked(payload)?;
                    Ok(Inbound::UdpEsp {
                        family: ip.family,
                        spi: e.spi(),
                        seq_low: e.seq_low(),
                        sport: u.src_port(),
                        dport: u.dst_port(),
                    })
                }
            }
        }
        _ => Ok(Inbound::NotEsp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_udp(payload: &[u8], dport: u16) -> Vec<u8> {
        let total = 28 + payload.len();
        let mut p = vec![
            0x45,
            0,
            0,
            total as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
            10,
            0,
            0,
            1,
            10,
            0,
            0,
            2,
        ];
        p.extend_from_slice(&4500u16.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn keepalive_marker_and_esp() {
        assert_eq!(classify(&v4_udp(&[0xff], 4500)), Ok(Inbound::NatKeepalive));
        assert_eq!(classify(&v4_udp(&[0; 40], 4500)), Ok(Inbound::NotEsp));
        assert_eq!(classify(&v4_udp(&[1; 40], 53)), Ok(Inbound::NotEsp));
        let mut esp = vec![0, 0, 1, 0, 0, 0, 0, 7];
        esp.extend_from_slice(&[0; 32]);
        let got = classify(&v4_udp(&esp, 4500)).unwrap();
        assert_eq!(got.spi(), Some(256));
        assert!(matches!(got, Inbound::UdpEsp { seq_low: 7, .. }));
        assert_eq!(
            classify(&v4_udp(&esp[..20], 4500)),
            Err(OpenError::Truncated)
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(classify(&[]), Err(OpenError::Truncated));
        assert_eq!(classify(&[0x15; 30]), Err(OpenError::Malformed));
    }
}
