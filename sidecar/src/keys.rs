//! Key files: X25519 private keys and pre-shared keys, 32 bytes as 64 hex
//! characters. Secrets are zeroized when dropped and never printed.

use std::io::Write;
use std::path::Path;

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("key must be 64 hex characters (32 bytes)")]
    Format,
    #[error("key file {0} is readable by group or others; chmod 600 it")]
    Permissions(String),
}

/// A 32-byte pre-shared key for one epoch.
pub struct Psk(pub Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Psk(<redacted>)")
    }
}

fn parse_hex32(text: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), &mut out[..]).map_err(|_| KeyError::Format)?;
    Ok(out)
}

fn read_secret(path: &Path) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let p = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Read {
        path: p.clone(),
        source,
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(KeyError::Permissions(p));
    }
    let mut text =
        std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: p, source })?;
    let key = parse_hex32(&text);
    text.zeroize();
    key
}

pub fn read_private_key(path: &Path) -> Result<meshsec_esp::key_schedule::KeyPair, KeyError> {
    let bytes = read_secret(path)?;
    Ok(meshsec_esp::key_schedule::KeyPair::from_secret_bytes(
        *bytes,
    ))
}

pub fn read_psk(path: &Path) -> Result<Psk, KeyError> {
    read_secret(path).map(Psk)
}

pub fn parse_public_key(text: &str) -> Result<PublicKey, KeyError> {
    let bytes = parse_hex32(text)?;
    Ok(PublicKey::from(*bytes))
}

/// Writes 32 random bytes as hex to `path` (mode 0600, must not exist) and
/// returns the X25519 public key for a private key, or `None` for a PSK.
pub fn generate(path: &Path, psk: bool) -> Result<Option<String>, KeyError> {
    use rand::RngCore;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(&mut bytes[..]);
    let p = path.display().to_string();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| KeyError::Write {
            path: p.clone(),
            source,
        })?;
    let mut text = Zeroizing::new(hex::encode(&bytes[..]));
    text.push('\n');
    f.write_all(text.as_bytes())
        .map_err(|source| KeyError::Write { path: p, source })?;
    if psk {
        return Ok(None);
    }
    let secret = StaticSecret::from(*bytes);
    Ok(Some(hex::encode(PublicKey::from(&secret).as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_generate_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let public = generate(&path, false).unwrap().unwrap();
        let pair = read_private_key(&path).unwrap();
        assert_eq!(hex::encode(pair.public()), public);
        assert!(generate(&path, false).is_err(), "must not overwrite a key");
    }

    #[test]
    fn test_rejects_world_readable_and_malformed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psk");
        std::fs::write(&path, "zz").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(read_psk(&path), Err(KeyError::Format)));
        std::fs::write(&path, "00".repeat(32)).unwrap();
        assert!(read_psk(&path).is_ok());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(read_psk(&path), Err(KeyError::Permissions(_))));
    }
}
