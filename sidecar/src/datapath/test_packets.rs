//! Packets the offload tests (`vnet_read`, `esp_split`, `tcp_split`,
//! `udp_gso`) cut up.

use tun_rs::VirtioNetHdr;

use super::offload::{F_NEEDS_CSUM, IPPROTO_TCP, IPPROTO_UDP};

const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;

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

/// A TCP super-packet with `payload` bytes, `opts` bytes of TCP
/// options and `flags`.
pub fn tcp_super_packet(v6: bool, payload: usize, opts: usize, flags: u8) -> Vec<u8> {
    let iph = if v6 { 40 } else { 20 };
    let tcph = 20 + opts;
    let mut p = vec![0u8; iph + tcph + payload];
    let len = p.len();
    if v6 {
        p[0] = 0x60;
        p[1] = 0x12;
        p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        p[6] = IPPROTO_TCP;
        p[7] = 64;
        p[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    } else {
        p[0] = 0x45;
        p[1] = 0x02;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0xfff0u16.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = IPPROTO_TCP;
        p[12..16].copy_from_slice(&[10, 77, 1, 10]);
        p[16..20].copy_from_slice(&[10, 77, 2, 10]);
    }
    let t = iph;
    p[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
    p[t + 2..t + 4].copy_from_slice(&5201u16.to_be_bytes());
    p[t + 4..t + 8].copy_from_slice(&0xffff_fc00u32.to_be_bytes());
    p[t + 8..t + 12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    p[t + 12] = ((tcph / 4) as u8) << 4;
    p[t + 13] = flags;
    p[t + 14..t + 16].copy_from_slice(&502u16.to_be_bytes());
    p[t + 16..t + 18].copy_from_slice(&[0x5a, 0xa5]); // partial sum: replaced
    for (i, b) in p[t + 20..t + tcph].iter_mut().enumerate() {
        *b = 1 + i as u8;
    }
    for (i, b) in p[t + tcph..].iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    p
}

pub fn tcp_vnet_hdr(v6: bool, gso_size: u16, hdr_len: usize) -> VirtioNetHdr {
    VirtioNetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
        hdr_len: hdr_len as u16,
        gso_size,
        csum_start: if v6 { 40 } else { 20 },
        csum_offset: 16,
    }
}
