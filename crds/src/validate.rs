//! Rust mirrors of the server-side validation, for values the operator or
//! sidecar builds or reads (a CRD installed from an older release may not
//! have enforced every rule). Each error names the field like the API server
//! message does.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::node::{IPsecNodeSpec, KEYS_PER_TUNNEL_MAX, NODE_ID_MAX, NODE_ID_MIN};
use crate::pubkey::decode_public_key;
use crate::selector::SelectorOperator;
use crate::tunnel::{
    Cipher, IPsecTunnelSpec, REPLAY_WINDOW_MAX, REPLAY_WINDOW_MIN, TUNNEL_NAME_MAX, TunnelMode,
};

/// Go duration syntax as the schema's CEL rules accept it (no sign, no "µs").
pub const DURATION_PATTERN: &str = "^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$";

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.replayWindow`.
    pub field: String,
    /// What is allowed.
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// Parse a Go-syntax duration ("90s", "1h30m"); negative durations are refused.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let parsed = kube::core::Duration::from_str(text).ok()?;
    if parsed.is_negative() || text.starts_with('+') {
        return None;
    }
    Some(parsed.into())
}

fn check_duration(
    field: &str,
    text: &str,
    min: Duration,
    max: Duration,
    out: &mut Vec<FieldError>,
) {
    match parse_duration(text) {
        Some(d) if (min..=max).contains(&d) => {}
        _ => out.push(err(
            field,
            format!("must be a duration between {min:?} and {max:?}, got {text:?}"),
        )),
    }
}

fn check_range(field: &str, value: i64, min: i64, max: i64, out: &mut Vec<FieldError>) {
    if !(min..=max).contains(&value) {
        out.push(err(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
}

/// Whether `window` is an accepted replay window size.
pub fn replay_window_ok(window: i32) -> bool {
    (REPLAY_WINDOW_MIN..=REPLAY_WINDOW_MAX).contains(&window) && window.count_ones() == 1
}

/// Every rule of the IPsecTunnel spec schema, collected.
pub fn validate_tunnel_spec(spec: &IPsecTunnelSpec) -> Result<(), Vec<FieldError>> {
    let mut out = vec![];
    if !replay_window_ok(spec.replay_window) {
        out.push(err(
            "spec.replayWindow",
            "must be a power of two between 64 and 8192",
        ));
    }
    let r = &spec.rotation;
    let secs = Duration::from_secs;
    check_duration(
        "spec.rotation.interval",
        &r.interval,
        secs(10),
        secs(720 * 3600),
        &mut out,
    );
    check_duration(
        "spec.rotation.gracePeriod",
        &r.grace_period,
        secs(1),
        secs(600),
        &mut out,
    );
    check_duration(
        "spec.rotation.ackTimeout",
        &r.ack_timeout,
        secs(5),
        secs(3600),
        &mut out,
    );
    check_range(
        "spec.rotation.maxBytes",
        r.max_bytes,
        1 << 20,
        1 << 50,
        &mut out,
    );
    check_range(
        "spec.rotation.maxPackets",
        r.max_packets,
        1 << 10,
        1 << 40,
        &mut out,
    );
    check_range(
        "spec.encapsulation.port",
        spec.encapsulation.port.into(),
        1,
        65535,
        &mut out,
    );
    if spec.mode == TunnelMode::Tunnel && spec.cipher == Cipher::Aes128Gmac {
        out.push(err(
            "spec",
            "mode Tunnel needs an encrypting cipher, not AES128GMAC",
        ));
    }
    for (i, req) in spec
        .node_selector
        .match_expressions
        .iter()
        .flatten()
        .enumerate()
    {
        let needs_values = matches!(req.operator, SelectorOperator::In | SelectorOperator::NotIn);
        let has_values = req.values.as_ref().is_some_and(|v| !v.is_empty());
        if needs_values != has_values {
            out.push(err(
                format!("spec.nodeSelector.matchExpressions[{i}]"),
                "In and NotIn need values; Exists and DoesNotExist take none",
            ));
        }
    }
    if out.is_empty() { Ok(()) } else { Err(out) }
}

/// Transition rules: fields that may not change in place.
pub fn validate_tunnel_update(
    old: &IPsecTunnelSpec,
    new: &IPsecTunnelSpec,
) -> Result<(), Vec<FieldError>> {
    let mut out = vec![];
    if old.mode != new.mode {
        out.push(err("spec.mode", "is immutable"));
    }
    if old.cipher != new.cipher {
        out.push(err("spec.cipher", "is immutable"));
    }
    if old.encapsulation.kind != new.encapsulation.kind {
        out.push(err("spec.encapsulation.type", "is immutable"));
    }
    if out.is_empty() { Ok(()) } else { Err(out) }
}

/// Parse a network CIDR ("10.244.1.0/24"), refusing set host bits like the
/// schema's `cidr(c).masked() == cidr(c)` rule.
pub fn parse_network_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = text.split_once('/')?;
    let addr = IpAddr::from_str(addr).ok()?;
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    let host_bits_zero = match addr {
        IpAddr::V4(a) => {
            prefix <= 32 && u32::from(a).checked_shl(u32::from(prefix)).unwrap_or(0) == 0
        }
        IpAddr::V6(a) => {
            prefix <= 128 && u128::from(a).checked_shl(u32::from(prefix)).unwrap_or(0) == 0
        }
    };
    host_bits_zero.then_some((addr, prefix))
}

/// The rule on IPsecTunnel metadata.name (it ends up in label values).
pub fn tunnel_name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= TUNNEL_NAME_MAX
}

/// Every rule of the IPsecNode spec schema, collected.
pub fn validate_node_spec(spec: &IPsecNodeSpec) -> Result<(), Vec<FieldError>> {
    let mut out = vec![];
    if IpAddr::from_str(&spec.endpoint).is_err() {
        out.push(err("spec.endpoint", "must be an IPv4 or IPv6 address"));
    }
    if spec.key_generation < 0 {
        out.push(err("spec.keyGeneration", "must be 0 or more"));
    }
    if spec.pod_cidrs.len() > 4 {
        out.push(err("spec.podCIDRs", "must have at most 4 items"));
    }
    if spec.tunnels.len() > 8 {
        out.push(err("spec.tunnels", "must have at most 8 items"));
    }
    // List types set/map: the API server refuses duplicate entries and keys.
    if has_duplicates(spec.pod_cidrs.iter()) {
        out.push(err("spec.podCIDRs", "must not repeat a CIDR"));
    }
    if has_duplicates(spec.tunnels.iter().map(|t| &t.tunnel)) {
        out.push(err("spec.tunnels", "must not repeat a tunnel"));
    }
    for (i, cidr) in spec.pod_cidrs.iter().enumerate() {
        if parse_network_cidr(cidr).is_none() {
            out.push(err(
                format!("spec.podCIDRs[{i}]"),
                "must be a network CIDR with host bits zero",
            ));
        }
    }
    for (t, tunnel) in spec.tunnels.iter().enumerate() {
        if !tunnel_name_ok(&tunnel.tunnel) {
            out.push(err(
                format!("spec.tunnels[{t}].tunnel"),
                "must be 1 to 63 characters",
            ));
        }
        if tunnel.public_keys.len() > KEYS_PER_TUNNEL_MAX {
            out.push(err(
                format!("spec.tunnels[{t}].publicKeys"),
                "must have at most 4 items",
            ));
        }
        if has_duplicates(tunnel.public_keys.iter().map(|k| k.epoch)) {
            out.push(err(
                format!("spec.tunnels[{t}].publicKeys"),
                "must not repeat an epoch",
            ));
        }
        let epochs = [tunnel.installed_epoch, tunnel.active_epoch];
        if epochs
            .iter()
            .flatten()
            .chain(tunnel.public_keys.iter().map(|k| &k.epoch))
            .any(|e| *e < 0)
        {
            out.push(err(
                format!("spec.tunnels[{t}]"),
                "epochs must be 0 or more",
            ));
        }
        for (k, key) in tunnel.public_keys.iter().enumerate() {
            if let Err(e) = decode_public_key(&key.key) {
                out.push(err(
                    format!("spec.tunnels[{t}].publicKeys[{k}].key"),
                    e.to_string(),
                ));
            }
        }
        if let Some(active) = tunnel.active_epoch
            && tunnel
                .installed_epoch
                .is_none_or(|installed| active > installed)
        {
            out.push(err(
                format!("spec.tunnels[{t}].activeEpoch"),
                "must not exceed installedEpoch",
            ));
        }
    }
    if out.is_empty() { Ok(()) } else { Err(out) }
}

fn has_duplicates<T: Ord>(items: impl Iterator<Item = T>) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    !items.into_iter().all(|i| seen.insert(i))
}

/// Whether `id` may be allocated to a node.
pub fn node_id_ok(id: i32) -> bool {
    (NODE_ID_MIN..=NODE_ID_MAX).contains(&id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{EpochPublicKey, NodeTunnelState};
    use crate::selector::NodeSelectorRequirement;

    fn fields(r: Result<(), Vec<FieldError>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(validate_tunnel_spec(&IPsecTunnelSpec::default()), Ok(()));
    }

    #[test]
    fn replay_window_powers_of_two_only() {
        let ok: Vec<i32> = (0..16)
            .map(|s| 1 << s)
            .filter(|w| replay_window_ok(*w))
            .collect();
        assert_eq!(ok, [64, 128, 256, 512, 1024, 2048, 4096, 8192]);
        assert!(!replay_window_ok(96));
        assert!(!replay_window_ok(0));
        assert!(!replay_window_ok(-64));
    }

    #[test]
    fn durations_parse_like_go_and_refuse_sign() {
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("-5m"), None);
        assert_eq!(parse_duration("+5m"), None);
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("soon"), None);
    }

    #[test]
    fn every_tunnel_rule_names_its_field() {
        let mut s = IPsecTunnelSpec {
            replay_window: 100,
            ..Default::default()
        };
        s.rotation.interval = "5s".into();
        s.rotation.grace_period = "20m".into();
        s.rotation.ack_timeout = "often".into();
        s.rotation.max_bytes = 10;
        s.rotation.max_packets = 1 << 41;
        s.encapsulation.port = 0;
        s.mode = TunnelMode::Tunnel;
        s.cipher = Cipher::Aes128Gmac;
        s.node_selector.match_expressions = Some(vec![NodeSelectorRequirement {
            key: "zone".into(),
            operator: SelectorOperator::In,
            values: None,
        }]);
        assert_eq!(
            fields(validate_tunnel_spec(&s)),
            [
                "spec.replayWindow",
                "spec.rotation.interval",
                "spec.rotation.gracePeriod",
                "spec.rotation.ackTimeout",
                "spec.rotation.maxBytes",
                "spec.rotation.maxPackets",
                "spec.encapsulation.port",
                "spec",
                "spec.nodeSelector.matchExpressions[0]",
            ]
        );
    }

    #[test]
    fn immutable_fields() {
        let old = IPsecTunnelSpec::default();
        let mut new = old.clone();
        new.strict = true;
        new.replay_window = 2048;
        assert_eq!(validate_tunnel_update(&old, &new), Ok(()));
        new.cipher = Cipher::Aes256Gcm;
        new.mode = TunnelMode::Tunnel;
        new.encapsulation.kind = crate::tunnel::EncapsulationType::None;
        assert_eq!(
            fields(validate_tunnel_update(&old, &new)),
            ["spec.mode", "spec.cipher", "spec.encapsulation.type"]
        );
    }

    #[test]
    fn cidrs_need_zero_host_bits() {
        assert!(parse_network_cidr("10.244.1.0/24").is_some());
        assert!(parse_network_cidr("0.0.0.0/0").is_some());
        assert!(parse_network_cidr("fd00:10:244:1::/64").is_some());
        assert!(parse_network_cidr("10.244.1.1/32").is_some());
        for bad in [
            "10.244.1.1/24",
            "10.244.1.0/33",
            "10.244.1.0",
            "10.244.1.0/",
            "10.244.1.0/+8",
            "fd00::1/64",
            "fd00::/129",
            "x/8",
        ] {
            assert!(parse_network_cidr(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn node_spec_rules() {
        let good_key = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=".to_string();
        let mut spec = IPsecNodeSpec {
            endpoint: "192.0.2.10".into(),
            pod_cidrs: vec!["10.244.1.0/24".into()],
            key_generation: 1,
            tunnels: vec![NodeTunnelState {
                tunnel: "default".into(),
                public_keys: vec![EpochPublicKey {
                    epoch: 1,
                    key: good_key,
                }],
                installed_epoch: Some(1),
                active_epoch: Some(1),
                usage: None,
            }],
            datapath: None,
        };
        assert_eq!(validate_node_spec(&spec), Ok(()));
        spec.endpoint = "node-1".into();
        spec.pod_cidrs.push("10.244.2.7/24".into());
        spec.tunnels[0].public_keys[0].key = "short=".into();
        spec.tunnels[0].active_epoch = Some(2);
        assert_eq!(
            fields(validate_node_spec(&spec)),
            [
                "spec.endpoint",
                "spec.podCIDRs[1]",
                "spec.tunnels[0].publicKeys[0].key",
                "spec.tunnels[0].activeEpoch",
            ]
        );
    }

    #[test]
    fn node_spec_bounds() {
        let spec = IPsecNodeSpec {
            endpoint: "2001:db8::1".into(),
            key_generation: -1,
            tunnels: vec![NodeTunnelState {
                tunnel: String::new(),
                installed_epoch: Some(-1),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            fields(validate_node_spec(&spec)),
            [
                "spec.keyGeneration",
                "spec.tunnels[0].tunnel",
                "spec.tunnels[0]"
            ]
        );
        let twice = NodeTunnelState {
            tunnel: "t".into(),
            public_keys: vec![
                EpochPublicKey {
                    epoch: 1,
                    key: "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=".into(),
                },
                EpochPublicKey {
                    epoch: 1,
                    key: "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=".into(),
                },
            ],
            ..Default::default()
        };
        let dup = IPsecNodeSpec {
            endpoint: "192.0.2.1".into(),
            pod_cidrs: vec!["10.0.0.0/8".into(), "10.0.0.0/8".into()],
            tunnels: vec![twice.clone(), twice],
            ..Default::default()
        };
        assert_eq!(
            fields(validate_node_spec(&dup)),
            [
                "spec.podCIDRs",
                "spec.tunnels",
                "spec.tunnels[0].publicKeys",
                "spec.tunnels[1].publicKeys"
            ]
        );
        assert!(tunnel_name_ok(&"a".repeat(63)));
        assert!(!tunnel_name_ok(&"a".repeat(64)));
        assert!(!tunnel_name_ok(""));
    }

    #[test]
    fn node_id_range() {
        assert!(!node_id_ok(255));
        assert!(node_id_ok(256));
        assert!(node_id_ok(0xFF_FFFF));
        assert!(!node_id_ok(0x100_0000));
    }
}
