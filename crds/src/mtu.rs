//! `spec.mtu`: the string "auto" or an integer, stored as int-or-string.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Smallest fixed MTU: the IPv6 minimum link MTU.
pub const MTU_MIN: u16 = 1280;
/// Largest fixed MTU: jumbo frames.
pub const MTU_MAX: u16 = 9000;

/// Pod interface MTU policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum Mtu {
    /// Underlay MTU minus the exact ESP overhead of the tunnel's settings.
    #[default]
    Auto,
    /// This MTU, as given.
    Fixed(u16),
}

impl Serialize for Mtu {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Mtu::Auto => serializer.serialize_str("auto"),
            Mtu::Fixed(n) => serializer.serialize_u16(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Mtu {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MtuVisitor)
    }
}

struct MtuVisitor;

impl Visitor<'_> for MtuVisitor {
    type Value = Mtu;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "\"auto\" or an integer MTU between {MTU_MIN} and {MTU_MAX}"
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Mtu, E> {
        if v == "auto" {
            Ok(Mtu::Auto)
        } else {
            Err(E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Mtu, E> {
        u16::try_from(v)
            .ok()
            .filter(|n| (MTU_MIN..=MTU_MAX).contains(n))
            .map(Mtu::Fixed)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Mtu, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
        }
    }
}

impl schemars::JsonSchema for Mtu {
    fn schema_name() -> Cow<'static, str> {
        "Mtu".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // Structural int-or-string; the allowed values are enforced by a CEL
        // rule on the field, whose message can say "auto" or 1280..9000.
        // `nullable: false` stops kube's schema rewriter from marking the
        // (defaulted, never null) field nullable.
        schemars::json_schema!({ "x-kubernetes-int-or-string": true, "nullable": false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse() {
        assert_eq!(serde_json::from_str::<Mtu>("\"auto\"").unwrap(), Mtu::Auto);
        assert_eq!(
            serde_json::from_str::<Mtu>("1400").unwrap(),
            Mtu::Fixed(1400)
        );
        assert_eq!(
            serde_json::from_str::<Mtu>("1280").unwrap(),
            Mtu::Fixed(1280)
        );
        assert_eq!(
            serde_json::from_str::<Mtu>("9000").unwrap(),
            Mtu::Fixed(9000)
        );
    }

    #[test]
    fn test_parse_rejects_out_of_range_and_other_strings() {
        for bad in [
            "1279", "9001", "-1", "70000", "\"Auto\"", "\"1400\"", "1400.5", "null",
        ] {
            let err = serde_json::from_str::<Mtu>(bad).unwrap_err().to_string();
            assert!(err.contains("\"auto\" or an integer MTU"), "{bad}: {err}");
        }
    }

    #[test]
    fn test_emit() {
        assert_eq!(serde_json::to_string(&Mtu::Auto).unwrap(), "\"auto\"");
        assert_eq!(serde_json::to_string(&Mtu::Fixed(1500)).unwrap(), "1500");
    }
}
