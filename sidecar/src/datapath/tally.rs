//! Packet and byte counts a worker collects over one read and adds to the
//! shared Prometheus counters once at its end: one atomic add per counter
//! and read instead of per packet. The counters are shared by all workers
//! (cache lines bouncing between CPUs), and a `lock add` right after the
//! AEAD waits for its ciphertext stores to drain (profile,
//! docs/datapath.md).

use meshsec_esp::ByteTally;

use crate::metrics::Counters;

/// Counts for one set of counters (the totals, or one peer's).
#[derive(Default, Clone, Copy)]
pub struct Tally {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
}

impl Tally {
    pub fn add_in(&mut self, bytes: usize) {
        self.packets_in += 1;
        self.bytes_in += bytes as u64;
    }

    pub fn add_out(&mut self, bytes: usize) {
        self.packets_out += 1;
        self.bytes_out += bytes as u64;
    }

    /// Adds the counts to `counters` and resets them.
    pub fn flush(&mut self, counters: &Counters) {
        let t = std::mem::take(self);
        for (counter, n) in [
            (&counters.packets_in, t.packets_in),
            (&counters.packets_out, t.packets_out),
            (&counters.bytes_in, t.bytes_in),
            (&counters.bytes_out, t.bytes_out),
        ] {
            if n > 0 {
                counter.inc_by(n);
            }
        }
    }
}

/// One [`Tally`] per peer (by [`Peer::index`](super::peers::Peer)) plus
/// the list of peers counted since the last flush, so a flush touches
/// only those.
pub struct PeerTallies {
    tallies: Vec<Tally>,
    touched: Vec<usize>,
}

impl PeerTallies {
    pub fn new(peers: usize) -> Self {
        Self {
            tallies: vec![Tally::default(); peers],
            touched: Vec::with_capacity(peers),
        }
    }

    /// The tally of peer `index`; `None` for an index out of range.
    pub fn get(&mut self, index: usize) -> Option<&mut Tally> {
        let t = self.tallies.get_mut(index)?;
        if t.packets_in == 0 && t.packets_out == 0 {
            self.touched.push(index);
        }
        Some(t)
    }

    /// Adds every touched peer's counts to `counters(index)`.
    pub fn flush<'a>(&mut self, counters: impl Fn(usize) -> Option<&'a Counters>) {
        for i in self.touched.drain(..) {
            if let (Some(t), Some(c)) = (self.tallies.get_mut(i), counters(i)) {
                t.flush(c);
            }
        }
    }
}

/// Protected bytes sealed under one peer's outbound SA
/// (`OutboundSa::seal`) and not yet added to that SA's byte
/// counter: its soft byte limit then costs no second locked instruction
/// per packet (docs/protocol.md §8). The worker adds them once per read,
/// and before sealing to another peer.
#[derive(Default)]
pub struct SealBytes {
    /// Index of the peer whose outbound SA the bytes belong to.
    peer: Option<usize>,
    tally: ByteTally,
}

impl SealBytes {
    /// Whether bytes of a peer other than `index` are pending (add them to
    /// that peer's SA before sealing for `index`).
    pub fn held_for_other(&self, index: usize) -> bool {
        self.peer.is_some_and(|p| p != index)
    }

    /// The tally to seal into for peer `index`.
    pub fn for_peer(&mut self, index: usize) -> &mut ByteTally {
        self.peer = Some(index);
        &mut self.tally
    }

    /// The pending peer and its bytes, leaving this empty.
    pub fn take(&mut self) -> Option<(usize, ByteTally)> {
        let peer = self.peer.take()?;
        Some((peer, std::mem::take(&mut self.tally)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn test_peer_tallies_flush_each_touched_peer_once() {
        let m = Metrics::new();
        let peers = [m.peer("1"), m.peer("2"), m.peer("3")];
        let mut t = PeerTallies::new(3);
        for _ in 0..3 {
            t.get(0).unwrap().add_out(100);
        }
        t.get(2).unwrap().add_in(40);
        t.get(2).unwrap().add_out(60);
        assert!(t.get(3).is_none());
        t.flush(|i| peers.get(i));
        assert_eq!(peers[0].packets_out.get(), 3);
        assert_eq!(peers[0].bytes_out.get(), 300);
        assert_eq!(peers[1].packets_out.get() + peers[1].packets_in.get(), 0);
        assert_eq!(
            (peers[2].packets_in.get(), peers[2].bytes_in.get()),
            (1, 40)
        );
        assert_eq!(
            (peers[2].packets_out.get(), peers[2].bytes_out.get()),
            (1, 60)
        );
        // Flushed tallies are empty: a second flush adds nothing.
        t.flush(|i| peers.get(i));
        assert_eq!(peers[0].packets_out.get(), 3);
    }

    #[test]
    fn test_seal_bytes_belong_to_one_peer_until_taken() {
        let mut s = SealBytes::default();
        assert!(!s.held_for_other(0));
        assert!(s.take().is_none());
        s.for_peer(1);
        assert!(!s.held_for_other(1));
        assert!(s.held_for_other(2));
        let (peer, t) = s.take().unwrap();
        assert_eq!((peer, t.pending()), (1, 0));
        assert!(!s.held_for_other(2), "taken: nothing pending");
    }
}
