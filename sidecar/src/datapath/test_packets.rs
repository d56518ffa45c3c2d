//! Packets the offload tests (`vnet_read`, `esp_split`) cut up.

use super::offload::IPPROTO_UDP;

/// IPv4 UDP super-packet to `port` (both ports): header + `n` payload
/// bytes 0, 1, 2, ..., with a stale partial checksum the split must clear.
pub fn udp4_super_packet(n: usize, port: u16) -> Vec<u8> {
    let mut p = vec![0u8; 28 + n];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((28 + n) as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0xfffeu16.to_be_bytes());
    p[8] = 64;
    p[9] = IPPROTO_UDP;
    p[12..16].copy_from_slice(&[192, 168, 77, 1]);
    p[16..20].copy_from_slice(&[192, 168, 77, 2]);
    p[20..22].copy_from_slice(&port.to_be_bytes());
    p[22..24].copy_from_slice(&port.to_be_bytes());
    p[26..28].copy_from_slice(&[0xab, 0xcd]); // partial sum, must go
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}
