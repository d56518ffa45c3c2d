//! SA key derivation (DESIGN.md "Key schedule", exact bytes in
//! docs/protocol.md):
//!
//! ```text
//! shared   = X25519(sk_local, pk_peer)          (all-zero result rejected)
//! PRK      = HKDF-Extract(salt = PSK_e, IKM = shared)
//! key||salt = HKDF-Expand(PRK, info, key_len + 4)
//! info     = "meshsec/v1 esp" || u16 len(uid) || uid || u64 epoch
//!            || u32 id_sender || u32 id_receiver
//!            || u64 g_sender || u64 g_receiver || u8 cipher
//! ```
//!
//! Both ends compute the same shared secret; binding sender and receiver
//! in that order gives each direction its own key (invariant 2). A fresh
//! keypair and a bumped generation at every start give a fresh key
//! (invariant 3).

use hkdf::Hkdf;
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use thiserror::Error;
use x25519_dalek::{PublicKey, SharedSecret, StaticSecret};
use zeroize::Zeroizing;

use crate::{Cipher, SaKey};

/// Label at the start of every HKDF info.
pub const LABEL: &[u8] = b"meshsec/v1 esp";
/// Longest tunnel uid accepted (Kubernetes UIDs are 36 characters).
pub const MAX_UID_LEN: usize = 253;

/// Key derivation failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum KeyError {
    /// X25519 gave the all-zero value (peer sent a low-order point).
    #[error("X25519 shared secret is all zero (low-order peer public key)")]
    AllZeroSharedSecret,
    /// Tunnel uid longer than [`MAX_UID_LEN`].
    #[error("tunnel uid too long")]
    UidTooLong,
    /// The operating system's random source failed.
    #[error("random source failed")]
    Random,
}

/// A node's X25519 keypair for one tunnel and epoch. The secret is zeroized
/// on drop (x25519-dalek `zeroize` feature) and never printed.
pub struct KeyPair {
    secret: StaticSecret,
    public: PublicKey,
}

impl core::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public.as_bytes())
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh keypair from the OS random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        OsRng
            .try_fill_bytes(bytes.as_mut())
            .map_err(|_| KeyError::Random)?;
        Ok(Self::from_secret_bytes(*bytes))
    }

    /// A keypair from known secret bytes (test vectors only).
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        KeyPair { secret, public }
    }

    /// The public key to publish.
    pub fn public(&self) -> [u8; 32] {
        *self.public.as_bytes()
    }

    /// X25519 with a peer's public key: the `shared` of every SA key
    /// between the two; a low-order point (all-zero result) is refused.
    pub fn agree(&self, peer_public: &[u8; 32]) -> Result<PeerSecret, KeyError> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*peer_public));
        if !shared.was_contributory() {
            return Err(KeyError::AllZeroSharedSecret);
        }
        Ok(PeerSecret(shared))
    }
}

/// The X25519 result between this node and one peer, computed once and
/// reused for every SA between them (both directions, every generation), as
/// WireGuard precomputes its static-static DH. It stands for both private
/// keys towards that peer: zeroized on drop (x25519-dalek `zeroize`
/// feature) and never printed.
pub struct PeerSecret(SharedSecret);

impl core::fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PeerSecret(..)")
    }
}

/// One end of an SA: node id (24 bits used in the SPI) and key generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeRef {
    /// Operator-allocated node id.
    pub id: u32,
    /// Key generation, bumped at every sidecar start.
    pub generation: u64,
}

/// Everything an SA key is bound to besides the DH and PSK inputs.
#[derive(Debug, Clone, Copy)]
pub struct SaContext<'a> {
    /// The IPsecTunnel's metadata.uid.
    pub tunnel_uid: &'a str,
    /// Key epoch.
    pub epoch: u64,
    /// The node that seals with this key.
    pub sender: NodeRef,
    /// The node that opens with this key.
    pub receiver: NodeRef,
    /// Cipher (fixes the output length and is bound into the key).
    pub cipher: Cipher,
}

impl SaContext<'_> {
    /// The HKDF info string.
    pub fn info(&self) -> Result<Vec<u8>, KeyError> {
        let uid = self.tunnel_uid.as_bytes();
        if uid.len() > MAX_UID_LEN {
            return Err(KeyError::UidTooLong);
        }
        let mut v = Vec::with_capacity(LABEL.len() + 2 + uid.len() + 8 + 8 + 16 + 1);
        v.extend_from_slice(LABEL);
        v.extend_from_slice(&(uid.len() as u16).to_be_bytes());
        v.extend_from_slice(uid);
        v.extend_from_slice(&self.epoch.to_be_bytes());
        v.extend_from_slice(&self.sender.id.to_be_bytes());
        v.extend_from_slice(&self.receiver.id.to_be_bytes());
        v.extend_from_slice(&self.sender.generation.to_be_bytes());
        v.extend_from_slice(&self.receiver.generation.to_be_bytes());
        v.push(self.cipher.code());
        Ok(v)
    }
}

/// Derives the key for one direction. `local` is this node's keypair,
/// `peer_public` the other end's; which of the two sends is in `ctx`.
pub fn derive(
    psk: &[u8; 32],
    local: &KeyPair,
    peer_public: &[u8; 32],
    ctx: &SaContext<'_>,
) -> Result<SaKey, KeyError> {
    derive_from(psk, &local.agree(peer_public)?, ctx)
}

/// [`derive`] from the X25519 result already computed ([`KeyPair::agree`]):
/// HKDF only, no scalar multiplication.
pub fn derive_from(
    psk: &[u8; 32],
    shared: &PeerSecret,
    ctx: &SaContext<'_>,
) -> Result<SaKey, KeyError> {
    let info = ctx.info()?;
    let hk = Hkdf::<Sha256>::new(Some(psk), shared.0.as_bytes());
    let mut okm = Zeroizing::new([0u8; 36]);
    let out = &mut okm[..ctx.cipher.material_len()];
    // Cannot fail: at most 36 bytes, far below 255 * 32.
    hk.expand(&info, out).map_err(|_| KeyError::UidTooLong)?;
    SaKey::from_bytes(out).map_err(|_| KeyError::UidTooLong)
}

/// Keys for both directions between this node and a peer.
#[derive(Debug)]
pub struct DirectionalKeys {
    /// local -> peer (seal with it).
    pub outbound: SaKey,
    /// peer -> local (open with it).
    pub inbound: SaKey,
}

/// Derives both directions' keys between `local` and `peer`.
#[allow(clippy::too_many_arguments)]
pub fn derive_pair(
    psk: &[u8; 32],
    keypair: &KeyPair,
    peer_public: &[u8; 32],
    tunnel_uid: &str,
    epoch: u64,
    local: NodeRef,
    peer: NodeRef,
    cipher: Cipher,
) -> Result<DirectionalKeys, KeyError> {
    let ctx = |sender, receiver| SaContext {
        tunnel_uid,
        epoch,
        sender,
        receiver,
        cipher,
    };
    Ok(DirectionalKeys {
        outbound: derive(psk, keypair, peer_public, &ctx(local, peer))?,
        inbound: derive(psk, keypair, peer_public, &ctx(peer, local))?,
    })
}
