//! Outbound SA: seals plaintext IP packets into ESP in place.

use core::fmt;
use core::net::IpAddr;
use core::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::aead::{self, Backend};
use crate::crypto::SaCrypto;
use crate::ip::{Checksum, IpLayout, family_and_len, move_transport_header, rewrite_header};
use crate::wire::{checksum, esp, ip_proto, ipv4, ipv6, udp};
use crate::{
    Cipher, ConfigError, ESP_HEADER_LEN, Encap, Family, ICV_LEN, IV_LEN, Mode, SaKey, SealError,
};

/// Default soft limit for [`OutboundSa::needs_rekey`]: far below the hard
/// limit so the rotation has ample time.
const DEFAULT_SOFT_PACKETS: u64 = 1 << 60;
/// Hard limit: sequence numbers from here on are refused. The counter is a
/// plain `fetch_add` (one locked instruction, measured ~40% cheaper than a
/// compare-exchange loop here); after the limit it keeps counting, and it
/// would take another 2^63 refused calls (centuries at any packet rate) to
/// wrap to a used value, so a nonce is never reused.
pub const SEQ_LIMIT: u64 = 1 << 63;
/// Hop limit / TTL of tunnel-mode outer headers.
const OUTER_TTL: u8 = 64;

/// Where a seal takes its sequence number from, and where it counts the
/// protected bytes.
enum Tickets<'a> {
    /// Sequence number from the SA's shared counter (one locked
    /// instruction), bytes into the caller's tally.
    Tallied(&'a mut ByteTally),
    /// From numbers reserved for a batch.
    Reserved(Reservation),
}

/// Protected bytes sealed with [`OutboundSa::seal`] and not yet added to
/// the SA's byte counter (by [`OutboundSa::add_tally`]). A caller that
/// seals many packets (the datapath: one read's worth) keeps one and adds
/// it once, so each packet costs one locked instruction (the sequence
/// number); a caller that wants the SA's count exact after every packet
/// adds it after every seal, for a second locked instruction (+3 points of
/// overhead at 1400 B, docs/protocol.md §8). Until it is added,
/// [`OutboundSa::bytes_sent`] and the soft byte limit of
/// [`OutboundSa::needs_rekey`] lag by what it holds; the hard limit is on
/// the sequence number and does not depend on it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ByteTally {
    bytes: u64,
}

impl ByteTally {
    /// Bytes counted and not yet added to an SA.
    pub fn pending(&self) -> u64 {
        self.bytes
    }
}

/// Consecutive sequence numbers taken from the SA's counter in one step,
/// used by one caller only; bytes are counted here and added to the SA's
/// counter once.
struct Reservation {
    next: u64,
    end: u64,
    bytes: u64,
}

impl Reservation {
    fn take(&mut self, protected_len: usize) -> Result<u64, SealError> {
        if self.next >= self.end {
            // Only when the hard limit cut the reservation short.
            return Err(SealError::SequenceExhausted);
        }
        let seq = self.next;
        self.next += 1;
        self.bytes += protected_len as u64;
        Ok(seq)
    }
}

/// Sending half of an SA. Shared by worker threads (`&self`): the sequence
/// counter is atomic and never wraps.
pub struct OutboundSa {
    spi: u32,
    cipher: Cipher,
    mode: Mode,
    encap: Encap,
    tunnel: Option<(IpAddr, IpAddr)>,
    crypto: SaCrypto,
    /// Next sequence number to use; starts at 1 (RFC 4303 §3.3.3).
    next_seq: AtomicU64,
    bytes: AtomicU64,
    soft_packets: AtomicU64,
    soft_bytes: AtomicU64,
}

impl fmt::Debug for OutboundSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundSa")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("cipher", &self.cipher)
            .field("mode", &self.mode)
            .field("encap", &self.encap)
            .field("tunnel", &self.tunnel)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl OutboundSa {
    /// Builds an SA with the default backend. Tunnel mode needs outer
    /// addresses of one family; transport mode must have none.
    pub fn new(
        spi: u32,
        cipher: Cipher,
        key: SaKey,
        mode: Mode,
        encap: Encap,
        tunnel: Option<(IpAddr, IpAddr)>,
    ) -> Result<Self, ConfigError> {
        Self::with_backend(Backend::default(), spi, cipher, key, mode, encap, tunnel)
    }

    /// Like [`Self::new`] with an explicit AEAD backend.
    pub fn with_backend(
        backend: Backend,
        spi: u32,
        cipher: Cipher,
        key: SaKey,
        mode: Mode,
        encap: Encap,
        tunnel: Option<(IpAddr, IpAddr)>,
    ) -> Result<Self, ConfigError> {
        if spi < 256 {
            return Err(ConfigError::ReservedSpi(spi));
        }
        key.check_for(cipher)?;
        match (mode, tunnel) {
            (Mode::Transport, None) => {}
            (Mode::Tunnel, Some((IpAddr::V4(_), IpAddr::V4(_))))
            | (Mode::Tunnel, Some((IpAddr::V6(_), IpAddr::V6(_)))) => {}
            _ => return Err(ConfigError::TunnelEndpoints),
        }
        let aead =
            aead::new_aead(backend, cipher, key.aes_key()).map_err(|_| ConfigError::KeyLength {
                expected: cipher.material_len(),
                got: key.len(),
            })?;
        Ok(OutboundSa {
            spi,
            cipher,
            mode,
            encap,
            tunnel,
            crypto: SaCrypto::new(spi, cipher, key.salt(), aead),
            next_seq: AtomicU64::new(1),
            bytes: AtomicU64::new(0),
            soft_packets: AtomicU64::new(DEFAULT_SOFT_PACKETS),
            soft_bytes: AtomicU64::new(u64::MAX),
        })
    }

    /// Starts the sequence counter at `seq` instead of 1 (debug CLI, tests
    /// of ESN high bits). Only before the first packet makes sense.
    pub fn with_next_seq(self, seq: u64) -> Result<Self, ConfigError> {
        if seq == 0 || seq >= SEQ_LIMIT {
            return Err(ConfigError::ZeroSequence);
        }
        self.next_seq.store(seq, Ordering::Relaxed);
        Ok(self)
    }

    /// Sets the soft limits behind [`Self::needs_rekey`].
    pub fn set_soft_limits(&self, packets: u64, bytes: u64) {
        self.soft_packets.store(packets, Ordering::Relaxed);
        self.soft_bytes.store(bytes, Ordering::Relaxed);
    }

    /// SPI.
    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// Cipher.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Packets sealed so far.
    pub fn packets_sent(&self) -> u64 {
        self.next_seq
            .load(Ordering::Relaxed)
            .min(SEQ_LIMIT)
            .saturating_sub(1)
    }

    /// Plaintext bytes protected so far: the upper-layer payload in
    /// transport mode, the whole inner packet in tunnel mode (no padding,
    /// headers or ICV).
    pub fn bytes_sent(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether a soft packet or byte limit was reached: replace the SA soon.
    pub fn needs_rekey(&self) -> bool {
        self.packets_sent() >= self.soft_packets.load(Ordering::Relaxed)
            || self.bytes_sent() >= self.soft_bytes.load(Ordering::Relaxed)
    }

    /// Takes the next sequence number and counts `protected_len` bytes
    /// against it; refuses from [`SEQ_LIMIT`] on (DESIGN.md invariant 1: a
    /// nonce is never reused).
    ///
    /// The locked instruction sits here, before the packet is written: it
    /// first waits for every pending store to reach the cache, and after
    /// the AEAD that is the whole ciphertext (docs/protocol.md §8). With a
    /// caller's tally ([`Tickets::Tallied`]) the bytes are a plain add to
    /// it. In a batch ([`Tickets::Reserved`]) the numbers were taken in one
    /// step and the bytes are added once at the end. Either way the bytes
    /// count once the number is taken, so a packet the AEAD then refused
    /// counts too: it errs towards an earlier rekey.
    #[inline(always)]
    fn take_seq(&self, tickets: &mut Tickets<'_>, protected_len: usize) -> Result<u64, SealError> {
        match tickets {
            Tickets::Tallied(t) => {
                let seq = self.shared_seq()?;
                t.bytes += protected_len as u64;
                Ok(seq)
            }
            Tickets::Reserved(r) => r.take(protected_len),
        }
    }

    /// The next number of the shared counter, refused from [`SEQ_LIMIT`].
    #[inline(always)]
    fn shared_seq(&self) -> Result<u64, SealError> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        if seq >= SEQ_LIMIT {
            return Err(SealError::SequenceExhausted);
        }
        Ok(seq)
    }

    /// Takes `count` consecutive sequence numbers in one locked
    /// instruction (fewer if the hard limit is near).
    fn reserve(&self, count: usize) -> Result<Reservation, SealError> {
        let first = self.next_seq.fetch_add(count as u64, Ordering::Relaxed);
        if first >= SEQ_LIMIT {
            return Err(SealError::SequenceExhausted);
        }
        Ok(Reservation {
            next: first,
            end: first.saturating_add(count as u64).min(SEQ_LIMIT),
            bytes: 0,
        })
    }

    /// Seals every packet `pkts[i]` in `bufs[i]` in place, like
    /// [`Self::seal`], and puts each result in `results[i]`. The batch
    /// takes its sequence numbers with one locked instruction and adds its
    /// bytes to the SA with one more, instead of one or two per packet:
    /// those waits for the store buffer were most of the per-packet work
    /// beyond the AEAD (docs/protocol.md §8). The numbers of packets that
    /// fail to seal are skipped, never reused. The slices must have equal
    /// lengths; extra entries of the longer ones are ignored.
    pub fn seal_batch<B: AsMut<[u8]>>(
        &self,
        bufs: &mut [B],
        pkts: &[Range<usize>],
        results: &mut [Result<Range<usize>, SealError>],
    ) {
        let n = bufs.len().min(pkts.len()).min(results.len());
        if n == 0 {
            return;
        }
        let mut tickets = match self.reserve(n) {
            Ok(r) => Tickets::Reserved(r),
            Err(e) => {
                results[..n].fill(Err(e));
                return;
            }
        };
        for ((buf, pkt), result) in bufs.iter_mut().zip(pkts).zip(results.iter_mut()) {
            *result = self.seal_with(&mut tickets, buf.as_mut(), pkt.clone());
        }
        if let Tickets::Reserved(r) = tickets {
            self.bytes.fetch_add(r.bytes, Ordering::Relaxed);
        }
    }

    /// Seals the plaintext IP packet at `buf[pkt]` in place and returns the
    /// range of the resulting ESP (or ESP-in-UDP) IP packet. The caller
    /// leaves [`crate::HEADROOM`] bytes before and [`crate::TAILROOM`] after.
    /// The protected bytes are counted in `tally`; add it to this SA with
    /// [`Self::add_tally`] soon (the datapath: once per read; for an exact
    /// count at every moment, after each seal). Until then the soft byte
    /// limit lags by it.
    pub fn seal(
        &self,
        buf: &mut [u8],
        pkt: Range<usize>,
        tally: &mut ByteTally,
    ) -> Result<Range<usize>, SealError> {
        self.seal_with(&mut Tickets::Tallied(tally), buf, pkt)
    }

    /// Adds the bytes `tally` holds to this SA's byte counter (one locked
    /// instruction, none if it is empty) and empties it.
    pub fn add_tally(&self, tally: &mut ByteTally) {
        let bytes = std::mem::take(&mut tally.bytes);
        if bytes > 0 {
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    #[inline(always)]
    fn seal_with(
        &self,
        tickets: &mut Tickets<'_>,
        buf: &mut [u8],
        pkt: Range<usize>,
    ) -> Result<Range<usize>, SealError> {
        let packet = buf.get(pkt.clone()).ok_or(SealError::Truncated)?;
        match self.mode {
            Mode::Transport => {
                // Its own call for the usual layout: inlined on constants.
                if let Some(ip) = IpLayout::plain_ipv4(packet) {
                    return self.seal_transport(tickets, buf, pkt.start, &ip);
                }
                let ip = IpLayout::parse_for_seal(packet)?;
                self.seal_transport(tickets, buf, pkt.start, &ip)
            }
            Mode::Tunnel => {
                let (family, len) = family_and_len(packet)?;
                self.seal_tunnel(tickets, buf, pkt.start, family, len)
            }
        }
    }

    /// Transport mode: the IP header (with IPv6 extension headers up to the
    /// upper layer) moves left to make room for UDP + ESP header + IV; the
    /// payload stays where it is.
    ///
    /// Order matters for speed: every header is finished before the AEAD
    /// runs, so nothing after it reads memory it has just written (see
    /// [`Self::take_seq`]); only the IPv6 UDP checksum, which covers the
    /// ciphertext, has to come after.
    #[inline(always)]
    fn seal_transport(
        &self,
        tickets: &mut Tickets<'_>,
        buf: &mut [u8],
        start: usize,
        ip: &IpLayout,
    ) -> Result<Range<usize>, SealError> {
        let hdr_len = ip.upper_offset;
        let shift = self.encap.header_len() + ESP_HEADER_LEN + IV_LEN;
        let new_start = start.checked_sub(shift).ok_or(SealError::NoHeadroom)?;
        let payload = start + hdr_len..start + ip.total_len;
        let end = self.check_room(buf, new_start, &payload, ip.family)?;
        let seq = self.take_seq(tickets, payload.len())?;
        let proto = self.outer_protocol();
        move_transport_header(buf, start, new_start, ip, proto, end - new_start);
        let esp_at = new_start + hdr_len + self.encap.header_len();
        self.write_udp_header(buf, esp_at, end);
        self.protect(buf, esp_at, payload, ip.protocol, seq)?;
        self.finish_udp_v6(buf, new_start, ip.family, esp_at, end);
        Ok(new_start..end)
    }

    /// Tunnel mode: a new outer header goes in front of the whole packet.
    fn seal_tunnel(
        &self,
        tickets: &mut Tickets<'_>,
        buf: &mut [u8],
        start: usize,
        inner: Family,
        inner_len: usize,
    ) -> Result<Range<usize>, SealError> {
        let Some((src, dst)) = self.tunnel else {
            return Err(SealError::Malformed);
        };
        let outer = Family::of(&src);
        let outer_len = outer.header_len();
        let shift = outer_len + self.encap.header_len() + ESP_HEADER_LEN + IV_LEN;
        let new_start = start.checked_sub(shift).ok_or(SealError::NoHeadroom)?;
        let payload = start..start + inner_len;
        let end = self.check_room(buf, new_start, &payload, outer)?;
        let seq = self.take_seq(tickets, payload.len())?;
        let tos = traffic_class(&buf[start..], inner);
        write_outer(&mut buf[new_start..], src, dst, tos);
        let esp_at = new_start + outer_len + self.encap.header_len();
        let nh_at = match outer {
            Family::V4 => 9,
            Family::V6 => 6,
        };
        self.write_headers(buf, new_start, outer, nh_at, esp_at, end);
        self.protect(buf, esp_at, payload, inner.ip_protocol(), seq)?;
        self.finish_udp_v6(buf, new_start, outer, esp_at, end);
        Ok(new_start..end)
    }

    /// Checks tail room and the 16-bit length limit; returns the end of the
    /// sealed packet.
    #[inline(always)]
    fn check_room(
        &self,
        buf: &[u8],
        new_start: usize,
        payload: &Range<usize>,
        family: Family,
    ) -> Result<usize, SealError> {
        let trailer = esp::pad_len(payload.len()) + 2;
        let end = payload.end + trailer + ICV_LEN;
        if end > buf.len() {
            return Err(SealError::NoTailroom);
        }
        let limit = match family {
            Family::V4 => 0xffff,
            Family::V6 => 0xffff + ipv6::HEADER_LEN,
        };
        if end - new_start > limit {
            return Err(SealError::TooLarge);
        }
        Ok(end)
    }

    /// Writes ESP header, IV and trailer around `payload`, then encrypts
    /// (or authenticates) it.
    #[inline(always)]
    fn protect(
        &self,
        buf: &mut [u8],
        esp_at: usize,
        payload: Range<usize>,
        next_header: u8,
        seq: u64,
    ) -> Result<(), SealError> {
        let pad = esp::pad_len(payload.len());
        let mut at = payload.end;
        for i in 1..=pad {
            buf[at] = i as u8; // RFC 4303 §2.4 default padding 1, 2, 3, ...
            at += 1;
        }
        buf[at] = pad as u8;
        buf[at + 1] = next_header;
        let ct_end = at + 2;
        esp::Packet::new_unchecked(&mut buf[esp_at..]).set_header(self.spi, seq);
        self.crypto
            .seal(buf, esp_at, ct_end, seq)
            .map_err(|_| SealError::Crypto)?;
        Ok(())
    }

    /// Tunnel mode's freshly written outer header: protocol / next header
    /// ESP or UDP, lengths and the IPv4 header checksum; then the UDP
    /// header, whose checksum is zero (IPv4) or left to
    /// [`Self::finish_udp_v6`].
    #[inline(always)]
    fn write_headers(
        &self,
        buf: &mut [u8],
        start: usize,
        family: Family,
        next_header_at: usize,
        esp_at: usize,
        end: usize,
    ) {
        rewrite_header(
            &mut buf[start..end],
            family,
            next_header_at,
            self.outer_protocol(),
            end - start,
            Checksum::Full,
        );
        self.write_udp_header(buf, esp_at, end);
    }

    /// What the (outer) IP header names as its payload: ESP, or UDP when
    /// encapsulated.
    #[inline(always)]
    fn outer_protocol(&self) -> u8 {
        match self.encap {
            Encap::None => ip_proto::ESP,
            Encap::Udp { .. } => ip_proto::UDP,
        }
    }

    /// The RFC 3948 UDP header in front of the ESP header at `esp_at`, if
    /// encapsulated: zero checksum over IPv4 (§2.1; IPv6: filled in by
    /// [`Self::finish_udp_v6`]).
    #[inline(always)]
    fn write_udp_header(&self, buf: &mut [u8], esp_at: usize, end: usize) {
        if let Encap::Udp { sport, dport } = self.encap {
            let udp_at = esp_at - udp::HEADER_LEN;
            udp::Packet::new_unchecked(&mut buf[udp_at..end]).set_header(
                sport,
                dport,
                (end - udp_at) as u16,
                0,
            );
        }
    }

    /// IPv6 requires a UDP checksum (RFC 8200 §8.1); it covers the
    /// ciphertext, so it is computed once the AEAD is done.
    #[inline(always)]
    fn finish_udp_v6(
        &self,
        buf: &mut [u8],
        start: usize,
        family: Family,
        esp_at: usize,
        end: usize,
    ) {
        if family == Family::V6 && matches!(self.encap, Encap::Udp { .. }) {
            let udp_at = esp_at - udp::HEADER_LEN;
            let c = udp_checksum_v6(&buf[start..end], udp_at - start);
            udp::Packet::new_unchecked(&mut buf[udp_at..end]).set_checksum(c);
        }
    }
}

/// DSCP/ECN (IPv4) or traffic class (IPv6) of the inner packet, copied to
/// the outer header (RFC 4301 §5.1.2.1, ECN normal mode per RFC 6040).
fn traffic_class(packet: &[u8], family: Family) -> u8 {
    match family {
        Family::V4 => ipv4::Packet::new_unchecked(packet).dscp_ecn(),
        Family::V6 => ipv6::Packet::new_unchecked(packet).traffic_class(),
    }
}

/// Writes a tunnel-mode outer header (lengths and checksum come later).
fn write_outer(buf: &mut [u8], src: IpAddr, dst: IpAddr, tos: u8) {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = ipv4::Packet::new_unchecked(buf);
            p.set_version_and_header_len(ipv4::HEADER_LEN);
            p.set_dscp_ecn(tos);
            p.set_ident(0);
            // DF set: the datapath sizes the inner MTU so the outer packet
            // fits; RFC 6864 lets atomic datagrams carry ID 0.
            p.set_dont_frag_only(true);
            p.set_ttl(OUTER_TTL);
            p.set_src_addr(s);
            p.set_dst_addr(d);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = ipv6::Packet::new_unchecked(buf);
            p.set_version_tc(tos);
            p.set_hop_limit(OUTER_TTL);
            p.set_src_addr(s);
            p.set_dst_addr(d);
        }
        // Mixed families are refused when the SA is built.
        _ => {}
    }
}

/// UDP checksum over IPv6 for the datagram at `udp_at` within `packet`.
fn udp_checksum_v6(packet: &[u8], udp_at: usize) -> u16 {
    let ip = ipv6::Packet::new_unchecked(packet);
    let dgram = &packet[udp_at..];
    let sum = checksum::pseudo_v6(
        ip.src_addr(),
        ip.dst_addr(),
        ip_proto::UDP,
        dgram.len() as u32,
    );
    match !checksum::fold(checksum::accumulate(sum, dgram)) {
        0 => 0xffff,
        c => c,
    }
}
