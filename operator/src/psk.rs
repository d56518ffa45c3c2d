//! The per-tunnel PSK Secret `meshsec-psk-<tunnel>`: one 32-byte key per
//! retained epoch (the current one, plus the next during a rotation), from
//! the operating system's random source. Key bytes are zeroized when the
//! operator drops them and never reach a log (no Debug of the data).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use rand::TryRngCore;
use rand::rngs::OsRng;
use zeroize::Zeroize;

use crate::error::{Error, Result};
use crate::rotation::Epoch;

/// PSK length in bytes.
pub const PSK_LEN: usize = 32;

/// Data key holding the PSK of `epoch`.
#[must_use]
pub fn data_key(epoch: Epoch) -> String {
    format!("epoch-{epoch}")
}

/// What to change in the Secret's data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Epochs that need a fresh key.
    pub add: Vec<Epoch>,
    /// Data keys to delete (retired epochs, foreign or malformed entries).
    pub remove: Vec<String>,
}

impl Plan {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// Compare the Secret's data with the epochs that must be retained. An
/// existing key of the right length is never replaced: sidecars may
/// already have derived SAs from it.
#[must_use]
pub fn plan(existing: &BTreeMap<String, ByteString>, retained: &[Epoch]) -> Plan {
    let wanted: BTreeMap<String, Epoch> = retained.iter().map(|e| (data_key(*e), *e)).collect();
    let ok = |k: &String| existing.get(k).is_some_and(|v| v.0.len() == PSK_LEN);
    Plan {
        add: wanted
            .iter()
            .filter(|(k, _)| !ok(k))
            .map(|(_, e)| *e)
            .collect(),
        remove: existing
            .iter()
            .filter(|(k, v)| !wanted.contains_key(*k) || v.0.len() != PSK_LEN)
            .map(|(k, _)| k.clone())
            .collect(),
    }
}

/// Apply `plan` to `data`, drawing new keys from the OS.
///
/// # Errors
/// [`Error::Random`] if the OS random source fails (nothing is written then).
pub fn apply(data: &mut BTreeMap<String, ByteString>, plan: &Plan) -> Result<()> {
    for k in &plan.remove {
        if let Some(mut v) = data.remove(k) {
            v.0.zeroize();
        }
    }
    for e in &plan.add {
        let mut key = vec![0u8; PSK_LEN];
        OsRng
            .try_fill_bytes(&mut key)
            .map_err(|err| Error::Random(err.to_string()))?;
        if let Some(mut old) = data.insert(data_key(*e), ByteString(key)) {
            old.0.zeroize();
        }
    }
    Ok(())
}

/// Wipe key material held in memory.
pub fn wipe(data: &mut BTreeMap<String, ByteString>) {
    for v in data.values_mut() {
        v.0.zeroize();
    }
    data.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(entries: &[(&str, usize)]) -> BTreeMap<String, ByteString> {
        entries
            .iter()
            .map(|(k, n)| ((*k).to_string(), ByteString(vec![7; *n])))
            .collect()
    }

    #[test]
    fn stable_epoch_with_its_key_needs_nothing() {
        assert!(plan(&data(&[("epoch-3", 32)]), &[3]).is_empty());
    }

    #[test]
    fn rotation_adds_the_next_epoch_and_retire_drops_the_old() {
        let p = plan(&data(&[("epoch-3", 32)]), &[3, 4]);
        assert_eq!(
            p,
            Plan {
                add: vec![4],
                remove: vec![]
            }
        );
        let p = plan(&data(&[("epoch-3", 32), ("epoch-4", 32)]), &[4]);
        assert_eq!(
            p,
            Plan {
                add: vec![],
                remove: vec!["epoch-3".into()]
            }
        );
    }

    #[test]
    fn malformed_or_foreign_entries_are_replaced_or_removed() {
        let p = plan(&data(&[("epoch-3", 5), ("junk", 32)]), &[3]);
        assert_eq!(
            p,
            Plan {
                add: vec![3],
                remove: vec!["epoch-3".into(), "junk".into()]
            }
        );
    }

    #[test]
    fn applied_keys_are_random_distinct_and_never_replace_good_ones() {
        let mut d = data(&[("epoch-1", 32)]);
        let before = d["epoch-1"].clone();
        let p = plan(&d, &[1, 2, 3]);
        apply(&mut d, &p).unwrap();
        assert_eq!(d["epoch-1"], before, "an existing key is kept");
        assert_eq!(d["epoch-2"].0.len(), PSK_LEN);
        assert_ne!(d["epoch-2"], d["epoch-3"]);
        assert_ne!(d["epoch-2"].0, vec![0u8; PSK_LEN]);
        assert!(plan(&d, &[1, 2, 3]).is_empty());
        wipe(&mut d);
        assert!(d.is_empty());
    }
}
