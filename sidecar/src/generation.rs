//! This node's key generation: bumped and persisted on every start (and on
//! every rekey) so a sender never derives a key it used before and restarts
//! its sequence numbers at 1 (DESIGN.md invariant 3).

use std::io::Write;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("cannot read generation state {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("generation state {0} is corrupt (expected one decimal number)")]
    Corrupt(String),
    #[error("cannot persist generation state {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("generation counter exhausted")]
    Exhausted,
}

/// Returns the next generation (at least `base`) and durably records it
/// before anything is sealed with it.
pub fn next(path: &Path, base: u32) -> Result<u32, GenerationError> {
    let p = path.display().to_string();
    let last = match std::fs::read_to_string(path) {
        Ok(text) => Some(
            text.trim()
                .parse::<u32>()
                .map_err(|_| GenerationError::Corrupt(p.clone()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(GenerationError::Read { path: p, source }),
    };
    let next = match last {
        Some(l) => l
            .checked_add(1)
            .ok_or(GenerationError::Exhausted)?
            .max(base),
        None => base,
    };
    persist(path, next).map_err(|source| GenerationError::Write { path: p, source })?;
    Ok(next)
}

fn persist(path: &Path, value: u32) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{value}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The full generation of a peer from the 6 bits its SPI carries: the
/// smallest value not below `known` with those low bits. Generations only
/// grow, by one per restart or rekey, so this is exact unless a peer went
/// through 64 of them unseen.
pub fn infer(known: u32, low_bits: u8) -> Option<u32> {
    let low = u32::from(low_bits & 0x3f);
    let candidate = (known & !0x3f) | low;
    if candidate >= known {
        Some(candidate)
    } else {
        candidate.checked_add(64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_next_bumps_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/generation");
        assert_eq!(next(&path, 5).unwrap(), 5);
        assert_eq!(next(&path, 5).unwrap(), 6);
        assert_eq!(next(&path, 5).unwrap(), 7);
        assert_eq!(next(&path, 100).unwrap(), 100, "a raised base wins");
        std::fs::write(&path, "junk").unwrap();
        assert!(matches!(next(&path, 0), Err(GenerationError::Corrupt(_))));
    }

    #[test]
    fn test_infer() {
        assert_eq!(infer(0, 0), Some(0));
        assert_eq!(infer(0, 5), Some(5));
        assert_eq!(infer(63, 0), Some(64));
        assert_eq!(infer(70, 6), Some(70));
        assert_eq!(infer(70, 5), Some(133));
        assert_eq!(infer(u32::MAX, 0), None);
    }
}
