//! A TCP super-packet read from the TUN, sealed straight into the UDP GSO
//! super-packet: each segment is cut from the read buffer (copy and
//! checksum in one pass, `tcp_split`) directly to where its sealed
//! datagram's payload belongs in the GSO buffer (`udp_gso` slots) and
//! sealed there, instead of into a segment buffer whose sealed datagram
//! was then copied into the GSO buffer: one copy of every byte less. Every
//! segment still goes through the per-packet path (`Worker::handle`), so
//! routing, MTU, MSS clamp and counters are as for any packet; only where
//! it lies differs. What does not join (a flow break, an ICMP error, a
//! drop) is handled as before and the GSO buffer's bytes it overwrote are
//! put back.

use std::ops::Range;

use meshsec_esp::{ESP_HEADER_LEN, Encap, Family, IV_LEN, Mode};
use tun_rs::VIRTIO_NET_HDR_LEN;

use super::{SEG_OFFSET, Shared, Verdict, Worker};
use crate::datapath::tcp_split::TcpSplit;
use crate::datapath::udp_gso::{Commit, Slot, UdpGso};
use crate::metrics::DropReason;

/// ESP header + IV: the seal puts them right in front of the protected
/// payload, which stays where it is.
const ESP_AND_IV: isize = (ESP_HEADER_LEN + IV_LEN) as isize;

/// Where sealing in place puts things: the ESP header relative to the
/// plaintext's start, and the sealed IP + UDP header length.
#[derive(Clone, Copy)]
struct Layout {
    esp_delta: isize,
    hdrs: usize,
}

impl Worker {
    /// Handles the segments of the TCP super-packet `split` left in the
    /// read buffer: sealed in place in the GSO buffer where that can work
    /// (ESP-in-UDP with USO), else cut into segment buffers as any read.
    pub(super) fn handle_tcp(&mut self, split: &TcpSplit) {
        let Some(layout) = self.in_place_layout(split) else {
            let pkt = &self.raw[VIRTIO_NET_HDR_LEN..];
            match split.split_all(pkt, &mut self.segs, &mut self.sizes, SEG_OFFSET) {
                Ok(n) => self.handle_segments(n),
                Err(e) => {
                    tracing::debug!(error = %e, "unusable TCP super-packet");
                    let shared = self.shared.clone();
                    super::drop_as(&shared.unattributed, &shared, DropReason::Malformed);
                }
            }
            return;
        };
        let shared = self.shared.clone();
        let Some(mut gso) = self.uso.take() else {
            // `in_place_layout` saw the buffer: cannot happen, but never
            // lose a packet silently.
            super::drop_as(&shared.unattributed, &shared, DropReason::Other);
            return;
        };
        let raw = std::mem::take(&mut self.raw);
        let pkt = &raw[VIRTIO_NET_HDR_LEN..];
        for i in 0..split.count() {
            self.seal_segment_in_place(&shared, &mut gso, split, pkt, i, layout);
        }
        self.raw = raw;
        if split.count() == 1 {
            // As for any lone packet: not held for later reads.
            self.write_gso(&mut gso);
        }
        self.uso = Some(gso);
        self.flush_tallies(&shared);
    }

    /// Sealing in place needs ESP-in-UDP (raw ESP cannot be segmented by
    /// the kernel) and, in transport mode, an IP header the coalescer
    /// takes (no IPv4 options or IPv6 extension headers).
    fn in_place_layout(&self, split: &TcpSplit) -> Option<Layout> {
        let k = &self.shared.peers.keying;
        if self.uso.is_none() || matches!(k.encap, Encap::None) {
            return None;
        }
        let iph = split.ip_header_len();
        match k.mode {
            Mode::Transport if iph == 20 || iph == 40 => Some(Layout {
                esp_delta: iph as isize - ESP_AND_IV,
                hdrs: iph + k.encap.header_len(),
            }),
            Mode::Transport => None,
            Mode::Tunnel => {
                let outer = Family::of(&k.endpoint()).header_len();
                Some(Layout {
                    esp_delta: -ESP_AND_IV,
                    hdrs: outer + k.encap.header_len(),
                })
            }
        }
    }

    fn seal_segment_in_place(
        &mut self,
        shared: &Shared,
        gso: &mut UdpGso,
        split: &TcpSplit,
        pkt: &[u8],
        i: usize,
        layout: Layout,
    ) {
        let plain_len = split.segment_len(i);
        let slot = match gso.slot(plain_len, layout.esp_delta, layout.hdrs) {
            Some(slot) => slot,
            None => {
                self.write_gso(gso);
                match gso.slot(plain_len, layout.esp_delta, layout.hdrs) {
                    Some(slot) => slot,
                    None => return self.handle_segment_copied(shared, gso, split, pkt, i),
                }
            }
        };
        if split
            .segment(pkt, i, &mut gso.buf_mut()[slot.plain.clone()])
            .is_none()
        {
            gso.restore(&slot);
            super::drop_as(&shared.unattributed, shared, DropReason::Malformed);
            return;
        }
        match self.handle(shared, gso.buf_mut(), slot.plain.clone()) {
            Verdict::Sealed(r) => {
                if gso.commit(&slot, r.clone(), plain_len) == Commit::Refused {
                    self.send_refused(gso, &slot, r);
                }
            }
            verdict => {
                self.dispatch(gso.buf_mut(), verdict);
                gso.restore(&slot);
            }
        }
    }

    /// A datagram sealed in a slot that does not continue the super-packet:
    /// moved to a segment buffer, the GSO buffer repaired, then written as
    /// any sealed packet (starting the next super-packet).
    fn send_refused(&mut self, gso: &mut UdpGso, slot: &Slot, sealed: Range<usize>) {
        let mut segs = std::mem::take(&mut self.segs);
        let out = SEG_OFFSET..SEG_OFFSET + sealed.len();
        if let Some(seg) = segs.first_mut()
            && let Some(dst) = seg.get_mut(out.clone())
        {
            dst.copy_from_slice(&gso.buf_mut()[sealed]);
            gso.restore(slot);
            self.send_sealed_via(gso, seg, out);
        } else {
            gso.restore(slot);
            let shared = self.shared.clone();
            super::drop_as(&shared.unattributed, &shared, DropReason::Other);
        }
        self.segs = segs;
    }

    /// Segment `i` through a segment buffer, the general way (when even an
    /// empty GSO buffer has no slot for it).
    fn handle_segment_copied(
        &mut self,
        shared: &Shared,
        gso: &mut UdpGso,
        split: &TcpSplit,
        pkt: &[u8],
        i: usize,
    ) {
        let mut segs = std::mem::take(&mut self.segs);
        if let Some(seg) = segs.first_mut()
            && let Some(len) = split.segment(pkt, i, &mut seg[SEG_OFFSET..])
        {
            match self.handle(shared, seg, SEG_OFFSET..SEG_OFFSET + len) {
                Verdict::Sealed(r) => self.send_sealed_via(gso, seg, r),
                verdict => self.dispatch(seg, verdict),
            }
        } else {
            super::drop_as(&shared.unattributed, shared, DropReason::Malformed);
        }
        self.segs = segs;
    }
}
