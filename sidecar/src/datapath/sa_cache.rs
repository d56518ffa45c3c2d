//! A worker's own references to the SAs it used last, one outbound and one
//! inbound per peer. Taking the peer's lock and cloning its `Arc` for every
//! packet changed two reference counts and a lock word that all workers
//! share: atomic read-modify-writes that were a large part of the worker
//! loop's own time (profile, docs/datapath.md). A cached entry is used
//! while the peer's version still matches (one plain load); a rekey or a
//! change of the inbound list bumps it, so the next packet takes the SA
//! now installed, exactly as a lookup would have. The worker drops every
//! entry before it sleeps (or, polling always, after 1 ms without
//! packets), so an idle worker keeps no old keys alive.

use std::ops::Range;
use std::sync::Arc;

use meshsec_esp::{InboundSa, OpenError, OutboundSa};

use super::peers::{Peer, PeerTable};

struct Outbound {
    version: u32,
    sa: Arc<OutboundSa>,
}

struct Inbound {
    version: u32,
    spi: u32,
    sa: Arc<InboundSa>,
}

/// Cached SAs, indexed by [`Peer::index`].
pub struct SaCache {
    outbound: Vec<Option<Outbound>>,
    inbound: Vec<Option<Inbound>>,
}

impl SaCache {
    pub fn new(peers: usize) -> Self {
        Self {
            outbound: (0..peers).map(|_| None).collect(),
            inbound: (0..peers).map(|_| None).collect(),
        }
    }

    /// The peer's current outbound SA.
    pub fn outbound(&mut self, peer: &Peer) -> Option<&OutboundSa> {
        let slot = self.outbound.get_mut(peer.index)?;
        let version = peer.outbound_version();
        if slot.as_ref().is_none_or(|c| c.version != version) {
            let (version, sa) = peer.outbound();
            *slot = Some(Outbound { version, sa });
        }
        slot.as_ref().map(|c| &*c.sa)
    }

    /// Opens `buf[pkt]` under `spi` with the cached SA if it is still the
    /// installed one, else through [`PeerTable::open`] (lookup, or lazy
    /// derivation), caching what is installed afterwards.
    pub fn open(
        &mut self,
        table: &PeerTable,
        peer: &Peer,
        gen_bits: u8,
        spi: u32,
        buf: &mut [u8],
        pkt: Range<usize>,
    ) -> Result<Range<usize>, OpenError> {
        let Some(slot) = self.inbound.get_mut(peer.index) else {
            return table.open(peer, gen_bits, spi, buf, pkt);
        };
        let version = peer.inbound_version();
        if let Some(c) = slot
            .as_ref()
            .filter(|c| c.spi == spi && c.version == version)
        {
            return c.sa.open(buf, pkt);
        }
        if let Some((version, sa)) = peer.cached_inbound(spi) {
            let opened = sa.open(buf, pkt);
            *slot = Some(Inbound { version, spi, sa });
            return opened;
        }
        // Not installed yet: derived (and installed) by the table; the
        // next packet caches it.
        table.open(peer, gen_bits, spi, buf, pkt)
    }

    /// Drops every cached SA (the worker is about to sleep, or idle).
    pub fn clear(&mut self) {
        self.outbound.iter_mut().for_each(|c| *c = None);
        self.inbound.iter_mut().for_each(|c| *c = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::peers::test_table;

    #[test]
    fn test_outbound_follows_a_rekey_on_the_next_packet() {
        let table = test_table();
        let peer = &table.peers[0];
        let mut cache = SaCache::new(table.peers.len());
        let first = cache.outbound(peer).map(OutboundSa::spi);
        assert_eq!(cache.outbound(peer).map(OutboundSa::spi), first);
        table.rekey_outbound(1).unwrap();
        let second = cache.outbound(peer).map(OutboundSa::spi).unwrap();
        assert_ne!(Some(second), first, "a cached SA outlived its rekey");
        assert!(table.is_current_outbound(second));
    }
}
