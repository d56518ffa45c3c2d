//! From configuration and key material to SAs: the X25519 shared secret per
//! peer (computed once), and the per-direction SA keys from the key schedule
//! in meshsec-esp (DESIGN.md, docs/protocol.md).
//!
//! Generations: the sender's is its current one (bumped every start and
//! rekey, so its keys are always fresh); the receiver's is the `generation`
//! both sides' configurations agree on for it (static mode has no channel
//! to announce a new one; the agent will feed the published value).

use std::net::IpAddr;

use meshsec_esp::key_schedule::{KeyPair, NodeRef, PeerSecret, SaContext};
use meshsec_esp::{Cipher, Encap, InboundSa, Mode, OutboundSa, SaKey};

use crate::config::{self, Config};
use crate::keys::Psk;

#[derive(Debug, thiserror::Error)]
pub enum KeyingError {
    #[error("peer {0}: bad public key: {1}")]
    PublicKey(u32, String),
    #[error("key schedule: {0}")]
    Schedule(String),
    #[error("SA setup: {0}")]
    Sa(String),
}

/// Per-peer key inputs.
#[derive(Debug)]
pub struct PeerKeys {
    pub node_id: u32,
    pub endpoint: IpAddr,
    /// Receiver generation used for SAs towards this peer.
    pub base_generation: u32,
    /// X25519 with the peer's public key, done once: every SA key is then
    /// HKDF alone (5,000 peers took two scalar multiplications each at
    /// start; rekeys and lazily derived inbound SAs one more each).
    shared: PeerSecret,
}

/// Everything SA derivation needs besides the peer.
pub struct Keying {
    keypair: KeyPair,
    psk: Psk,
    tunnel_uid: String,
    epoch: u64,
    node_id: u32,
    base_generation: u32,
    endpoint: IpAddr,
    pub cipher: Cipher,
    pub mode: Mode,
    pub encap: Encap,
    replay_window: u32,
    rekey_packets: u64,
    rekey_bytes: u64,
}

impl std::fmt::Debug for Keying {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keying")
            .field("node_id", &self.node_id)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Keying {
    pub fn new(cfg: &Config, keypair: KeyPair, psk: Psk) -> Self {
        let t = &cfg.tunnel;
        Self {
            keypair,
            psk,
            tunnel_uid: cfg.tunnel_uid.clone(),
            epoch: cfg.epoch,
            node_id: cfg.node_id,
            base_generation: cfg.generation,
            endpoint: cfg.endpoint,
            cipher: match t.cipher {
                config::Cipher::Aes128gcm => Cipher::Aes128Gcm,
                config::Cipher::Aes256gcm => Cipher::Aes256Gcm,
                config::Cipher::Aes128gmac => Cipher::Aes128Gmac,
            },
            mode: match t.mode {
                config::Mode::Transport => Mode::Transport,
                config::Mode::Tunnel => Mode::Tunnel,
            },
            encap: match t.encap {
                config::Encap::Udp => Encap::Udp {
                    sport: t.udp_port,
                    dport: t.udp_port,
                },
                config::Encap::None => Encap::None,
            },
            replay_window: t.replay_window,
            rekey_packets: t.rekey_after_packets,
            rekey_bytes: t.rekey_after_bytes,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn endpoint(&self) -> IpAddr {
        self.endpoint
    }

    pub fn udp_port(&self) -> Option<u16> {
        match self.encap {
            Encap::Udp { dport, .. } => Some(dport),
            Encap::None => None,
        }
    }

    /// Agrees the X25519 secret with the peer (a low-order public key is
    /// refused) and keeps what SA derivation needs.
    pub fn peer(&self, peer: &config::Peer) -> Result<PeerKeys, KeyingError> {
        let pk = crate::keys::parse_public_key(&peer.public_key)
            .map_err(|e| KeyingError::PublicKey(peer.node_id, e.to_string()))?;
        let shared = self
            .keypair
            .agree(pk.as_bytes())
            .map_err(|e| KeyingError::PublicKey(peer.node_id, e.to_string()))?;
        Ok(PeerKeys {
            node_id: peer.node_id,
            endpoint: peer.endpoint,
            base_generation: peer.generation,
            shared,
        })
    }

    fn key(
        &self,
        peer: &PeerKeys,
        sender: (u32, u32),
        receiver: (u32, u32),
    ) -> Result<SaKey, KeyingError> {
        let ctx = SaContext {
            tunnel_uid: &self.tunnel_uid,
            epoch: self.epoch,
            sender: NodeRef {
                id: sender.0,
                generation: u64::from(sender.1),
            },
            receiver: NodeRef {
                id: receiver.0,
                generation: u64::from(receiver.1),
            },
            cipher: self.cipher,
        };
        meshsec_esp::key_schedule::derive_from(&self.psk.0, &peer.shared, &ctx)
            .map_err(|e| KeyingError::Schedule(e.to_string()))
    }

    /// SA from this node (at `generation`) to `peer`.
    pub fn outbound(&self, peer: &PeerKeys, generation: u32) -> Result<OutboundSa, KeyingError> {
        let key = self.key(
            peer,
            (self.node_id, generation),
            (peer.node_id, peer.base_generation),
        )?;
        let spi = meshsec_esp::spi::compose(self.epoch, u64::from(generation), self.node_id)
            .map_err(|e| KeyingError::Sa(e.to_string()))?;
        let tunnel = (self.mode == Mode::Tunnel).then_some((self.endpoint, peer.endpoint));
        let sa = OutboundSa::new(spi, self.cipher, key, self.mode, self.encap, tunnel)
            .map_err(|e| KeyingError::Sa(e.to_string()))?;
        sa.set_soft_limits(self.rekey_packets, self.rekey_bytes);
        Ok(sa)
    }

    /// SA from `peer` (at `generation`) to this node.
    pub fn inbound(&self, peer: &PeerKeys, generation: u32) -> Result<InboundSa, KeyingError> {
        let key = self.key(
            peer,
            (peer.node_id, generation),
            (self.node_id, self.base_generation),
        )?;
        let spi = meshsec_esp::spi::compose(self.epoch, u64::from(generation), peer.node_id)
            .map_err(|e| KeyingError::Sa(e.to_string()))?;
        InboundSa::new(
            spi,
            self.cipher,
            key,
            self.mode,
            self.encap,
            self.replay_window,
        )
        .map_err(|e| KeyingError::Sa(e.to_string()))
    }
}
