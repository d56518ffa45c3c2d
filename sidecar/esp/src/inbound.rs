//! Inbound SA: verifies and opens ESP packets in place.

use core::fmt;
use core::ops::Range;

use crate::aead::{self, Backend};
use crate::crypto::SaCrypto;
use crate::ip::{IpLayout, family_and_len, move_transport_header};
use crate::replay::{ReplayError, ReplayWindow};
use crate::wire::{esp, ip_proto, udp};
use crate::{
    Cipher, ConfigError, ESP_HEADER_LEN, Encap, Family, ICV_LEN, IV_LEN, Mode, OpenError, SaKey,
};

/// Packets of an [`InboundSa::open_batch`] accepted under one lock.
const ACCEPT_CHUNK: usize = 64;

/// Receiving half of an SA. Shared by worker threads (`&self`).
pub struct InboundSa {
    spi: u32,
    cipher: Cipher,
    mode: Mode,
    encap: Encap,
    crypto: SaCrypto,
    replay: ReplayWindow,
}

impl fmt::Debug for InboundSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundSa")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("cipher", &self.cipher)
            .field("mode", &self.mode)
            .field("encap", &self.encap)
            .field("replay", &self.replay)
            .finish_non_exhaustive()
    }
}

/// Where the parts of a received ESP packet are.
struct Located {
    ip: IpLayout,
    /// Offset of the ESP header in the packet.
    esp_at: usize,
    /// End of the IP packet (per its length field).
    end: usize,
}

impl InboundSa {
    /// Builds an SA with the default backend. `encap_expected` says whether
    /// packets arrive as raw ESP or ESP-in-UDP (ports are not checked: a NAT
    /// may rewrite the source port).
    pub fn new(
        spi: u32,
        cipher: Cipher,
        key: SaKey,
        mode: Mode,
        encap_expected: Encap,
        replay_window: u32,
    ) -> Result<Self, ConfigError> {
        Self::with_backend(
            Backend::default(),
            spi,
            cipher,
            key,
            mode,
            encap_expected,
            replay_window,
        )
    }

    /// Like [`Self::new`] with an explicit AEAD backend.
    pub fn with_backend(
        backend: Backend,
        spi: u32,
        cipher: Cipher,
        key: SaKey,
        mode: Mode,
        encap_expected: Encap,
        replay_window: u32,
    ) -> Result<Self, ConfigError> {
        if spi < 256 {
            return Err(ConfigError::ReservedSpi(spi));
        }
        key.check_for(cipher)?;
        let replay = ReplayWindow::new(replay_window)?;
        let aead =
            aead::new_aead(backend, cipher, key.aes_key()).map_err(|_| ConfigError::KeyLength {
                expected: cipher.material_len(),
                got: key.len(),
            })?;
        Ok(InboundSa {
            spi,
            cipher,
            mode,
            encap: encap_expected,
            crypto: SaCrypto::new(spi, cipher, key.salt(), aead),
            replay,
        })
    }

    /// Makes `seq` the next expected sequence number (debug CLI: test ESN
    /// high bits without sending 2^32 packets first).
    pub fn expect_next(self, seq: u64) -> Result<Self, ConfigError> {
        if seq == 0 {
            return Err(ConfigError::ZeroSequence);
        }
        self.replay.expect_next(seq);
        Ok(self)
    }

    /// SPI.
    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// Highest authenticated sequence number so far.
    pub fn highest_seq(&self) -> u64 {
        self.replay.top()
    }

    /// Opens the ESP packet at `buf[pkt]` in place and returns the range of
    /// the restored plaintext IP packet. The replay window is updated only
    /// after the ICV verified.
    pub fn open(&self, buf: &mut [u8], pkt: Range<usize>) -> Result<Range<usize>, OpenError> {
        let (plain, seq) = self.open_unaccepted(buf, pkt)?;
        self.replay.accept(seq).map_err(replay_error)?;
        Ok(plain)
    }

    /// Opens every packet `pkts[i]` in `bufs[i]` in place, like
    /// [`Self::open`], and puts each result in `results[i]`. The replay
    /// window is updated once for the batch, under one lock, after every
    /// packet of it authenticated (or failed): the lock's locked
    /// instruction waits for all pending stores, and after an in-place
    /// decryption that is the whole plaintext, once per packet in
    /// [`Self::open`] (docs/protocol.md §8). A duplicate within the batch
    /// is accepted once, as are numbers another thread accepted meanwhile.
    /// The slices must have equal lengths; extra entries of the longer
    /// ones are ignored.
    pub fn open_batch<B: AsMut<[u8]>>(
        &self,
        bufs: &mut [B],
        pkts: &[Range<usize>],
        results: &mut [Result<Range<usize>, OpenError>],
    ) {
        let n = bufs.len().min(pkts.len()).min(results.len());
        let mut seqs = [0u64; ACCEPT_CHUNK];
        let mut start = 0;
        while start < n {
            let end = (start + ACCEPT_CHUNK).min(n);
            for i in start..end {
                results[i] = match self.open_unaccepted(bufs[i].as_mut(), pkts[i].clone()) {
                    Ok((plain, seq)) => {
                        seqs[i - start] = seq;
                        Ok(plain)
                    }
                    Err(e) => {
                        // 0 is never accepted (RFC 4303 §3.3.3): a placeholder.
                        seqs[i - start] = 0;
                        Err(e)
                    }
                };
            }
            let chunk = &mut results[start..end];
            self.replay.accept_each(&seqs[..end - start], |i, e| {
                if chunk[i].is_ok() {
                    chunk[i] = Err(replay_error(e));
                }
            });
            start = end;
        }
    }

    /// Everything of [`Self::open`] but the replay window update: returns
    /// the plaintext range and the sequence number to accept before the
    /// packet may be used.
    ///
    /// Inlined, as are the helpers it calls after the AEAD: a result
    /// returned through memory is stored in 8-byte halves and reloaded as
    /// one 16-byte load, which cannot be forwarded from those stores and
    /// waits for every older one, the whole freshly decrypted payload, to
    /// reach the cache (docs/protocol.md §8).
    ///
    /// An IPv4 header without options (nearly every packet) gets its own
    /// copy of the path, compiled for that constant layout.
    #[inline(always)]
    fn open_unaccepted(
        &self,
        buf: &mut [u8],
        pkt: Range<usize>,
    ) -> Result<(Range<usize>, u64), OpenError> {
        let packet = buf.get_mut(pkt.clone()).ok_or(OpenError::Truncated)?;
        let (plain, seq) = match IpLayout::plain_ipv4(packet) {
            Some(ip) => self.open_parsed(packet, ip),
            None => {
                let ip = IpLayout::parse(packet)?;
                self.open_parsed(packet, ip)
            }
        }?;
        Ok((pkt.start + plain.start..pkt.start + plain.end, seq))
    }

    /// [`Self::open_unaccepted`] once the IP header is parsed, on the
    /// packet alone: its offsets are then constants for a constant layout,
    /// and so are most bounds checks.
    #[inline(always)]
    fn open_parsed(&self, buf: &mut [u8], ip: IpLayout) -> Result<(Range<usize>, u64), OpenError> {
        let loc = self.locate(buf, ip)?;
        let esp = esp::Packet::new_checked(&buf[loc.esp_at..loc.end])?;
        if esp.spi() != self.spi {
            return Err(OpenError::UnknownSpi);
        }
        let seq = self.replay.check(esp.seq_low()).map_err(replay_error)?;
        let iv = esp.iv();
        let ct_end = loc.end - ICV_LEN;
        self.crypto
            .open(buf, loc.esp_at, ct_end, seq, iv)
            .map_err(|_| OpenError::AuthFailed)?;
        let payload_at = loc.esp_at + ESP_HEADER_LEN + IV_LEN;
        let (payload_end, next_header) = strip_trailer(buf, payload_at, ct_end)?;
        let plain = match self.mode {
            Mode::Transport => {
                restore_transport(buf, &loc.ip, payload_at, payload_end, next_header)
            }
            Mode::Tunnel => inner_packet(buf, payload_at, payload_end, next_header),
        }?;
        Ok((plain, seq))
    }

    /// Finds the ESP header behind the IP (and UDP) header.
    #[inline(always)]
    fn locate(&self, buf: &[u8], ip: IpLayout) -> Result<Located, OpenError> {
        let upper = ip.upper_offset;
        let end = ip.total_len;
        let esp_at = match (ip.protocol, self.encap) {
            (ip_proto::ESP, Encap::None) => upper,
            (ip_proto::UDP, Encap::Udp { .. }) => {
                let u = udp::Packet::new_checked(&buf[upper..end])?;
                if usize::from(u.len()) != end - upper {
                    return Err(OpenError::Malformed);
                }
                // The payload ends at `end`, as just checked.
                let payload_at = upper + udp::HEADER_LEN;
                match &buf[payload_at..end] {
                    [0xff] => return Err(OpenError::NatKeepalive),
                    [0, 0, 0, 0, ..] => return Err(OpenError::NotEsp),
                    _ => {}
                }
                payload_at
            }
            (ip_proto::ESP, Encap::Udp { .. }) | (ip_proto::UDP, Encap::None) => {
                return Err(OpenError::UnexpectedEncapsulation);
            }
            _ => return Err(OpenError::NotEsp),
        };
        Ok(Located { ip, esp_at, end })
    }
}

fn replay_error(e: ReplayError) -> OpenError {
    match e {
        ReplayError::Replayed => OpenError::Replayed,
        ReplayError::TooOld => OpenError::TooOld,
    }
}

/// Reads pad length and next header, checks the padding is 1, 2, 3, ...
/// (RFC 4303 §2.4) and returns the payload end and next header.
#[inline(always)]
fn strip_trailer(buf: &[u8], payload_at: usize, ct_end: usize) -> Result<(usize, u8), OpenError> {
    let next_header = buf[ct_end - 1];
    let pad = usize::from(buf[ct_end - 2]);
    let payload_end = (ct_end - 2)
        .checked_sub(pad)
        .filter(|e| *e >= payload_at)
        .ok_or(OpenError::BadPadding)?;
    if !padding_ok(buf, payload_end, ct_end - 2, pad) {
        return Err(OpenError::BadPadding);
    }
    if next_header == ip_proto::NO_NEXT_HEADER {
        return Err(OpenError::DummyPacket);
    }
    Ok((payload_end, next_header))
}

/// Whether `buf[start..end]` (`pad` bytes) is 1, 2, 3, ... A sender that
/// pads to 4-byte alignment, as we do, sends 0 to 3 bytes: those are
/// checked in one masked compare of the 4 bytes before `end` (at least the
/// ESP header lies in front of the padding, so they exist).
#[inline(always)]
fn padding_ok(buf: &[u8], start: usize, end: usize, pad: usize) -> bool {
    const MASK: [u32; 4] = [0, 0xff, 0xffff, 0xff_ffff];
    const EXPECT: [u32; 4] = [0, 0x01, 0x0102, 0x01_0203];
    match (pad, end.checked_sub(4).and_then(|s| buf.get(s..end))) {
        (0..=3, Some(&[a, b, c, d])) => u32::from_be_bytes([a, b, c, d]) & MASK[pad] == EXPECT[pad],
        _ => buf[start..end]
            .iter()
            .enumerate()
            .all(|(i, b)| usize::from(*b) == i + 1),
    }
}

/// Transport mode: moves the IP header right to meet the payload and puts
/// the original protocol back.
#[inline(always)]
fn restore_transport(
    packet: &mut [u8],
    ip: &IpLayout,
    payload_at: usize,
    payload_end: usize,
    next_header: u8,
) -> Result<Range<usize>, OpenError> {
    let new_start = payload_at - ip.upper_offset;
    move_transport_header(
        packet,
        0,
        new_start,
        ip,
        next_header,
        payload_end - new_start,
    );
    Ok(new_start..payload_end)
}

/// Tunnel mode: the payload is a whole IP packet named by next header 4 or
/// 41; TFC padding beyond its length field is dropped.
#[inline(always)]
fn inner_packet(
    buf: &[u8],
    payload_at: usize,
    payload_end: usize,
    next_header: u8,
) -> Result<Range<usize>, OpenError> {
    let family = match next_header {
        ip_proto::IPV4 => Family::V4,
        ip_proto::IPV6 => Family::V6,
        _ => return Err(OpenError::UnsupportedNextHeader),
    };
    let (inner, len) = family_and_len(&buf[payload_at..payload_end])?;
    if inner != family {
        return Err(OpenError::Malformed);
    }
    Ok(payload_at..payload_at + len)
}
