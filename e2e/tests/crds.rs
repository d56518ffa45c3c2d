//! The meshsec.io API against the real control plane (`e2e/cluster up`):
//! the CRDs install the way users install them, the examples apply, the API
//! server itself rejects invalid objects with messages that name the field,
//! `kubectl get` / `kubectl explain` show what they should, and objects
//! round-trip through the Rust types without loss.
//!
//! Every object gets a unique name and is deleted by a guard, so the suite
//! can run again and again against the same cluster.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use meshsec_crds::conditions::{self, condition};
use meshsec_crds::validate::{tunnel_name_ok, validate_node_spec, validate_tunnel_spec};
use meshsec_crds::{IPsecNode, IPsecNodeSpec, IPsecTunnel, IPsecTunnelSpec, IPsecTunnelStatus};
use meshsec_e2e::kube::{
    CRD_NAMES, Cleanup, client, ensure_crds, kubectl, kubectl_raw, kubectl_stdin, repo_root,
    unique_name, wait_for,
};
use serde_json::{Value, json};

const GOOD_KEY: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";

async fn setup() -> kube::Client {
    let client = client().await.unwrap_or_else(|e| panic!("{e}"));
    ensure_crds().unwrap_or_else(|e| panic!("installing CRDs: {e}"));
    client
}

fn tunnel_api(client: &kube::Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &ApiResource::erase::<IPsecTunnel>(&()))
}

fn node_api(client: &kube::Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &ApiResource::erase::<IPsecNode>(&()))
}

fn tunnel_json(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "meshsec.io/v1alpha1", "kind": "IPsecTunnel", "metadata": {"name": name}, "spec": spec})
}

fn node_json(name: &str) -> Value {
    json!({
        "apiVersion": "meshsec.io/v1alpha1", "kind": "IPsecNode", "metadata": {"name": name},
        "spec": {
            "endpoint": "192.0.2.10",
            "podCIDRs": ["10.244.1.0/24"],
            "keyGeneration": 2,
            "tunnels": [{"tunnel": "default", "publicKeys": [{"epoch": 1, "key": GOOD_KEY}], "installedEpoch": 1, "activeEpoch": 1}]
        }
    })
}

/// Set `value` at a JSON-pointer `path`, creating objects on the way.
fn set(doc: &mut Value, path: &str, value: Value) {
    let mut cur = doc;
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for part in &parts[..parts.len() - 1] {
        cur = match cur {
            Value::Array(items) => &mut items[part.parse::<usize>().unwrap()],
            other => other
                .as_object_mut()
                .unwrap()
                .entry(part.to_string())
                .or_insert_with(|| json!({})),
        };
    }
    let last = parts[parts.len() - 1];
    match cur {
        Value::Array(items) => items[last.parse::<usize>().unwrap()] = value,
        other => {
            other
                .as_object_mut()
                .unwrap()
                .insert(last.to_string(), value);
        }
    }
}

fn api_message(err: kube::Error) -> String {
    match err {
        kube::Error::Api(status) => status.message,
        other => panic!("expected a rejection by the API server, got {other}"),
    }
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn crds_install_with_kubectl_apply_and_become_established() {
    let client = setup().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for name in CRD_NAMES {
        let crd = crds.get(name).await.unwrap();
        let conds = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        let established = conds.iter().find(|c| c.type_ == "Established").unwrap();
        assert_eq!(established.status, "True", "{name}: {established:?}");
        assert_eq!(crd.spec.scope, "Cluster");
    }
    let resources = kubectl(&["api-resources", "--api-group=meshsec.io", "--no-headers"]).unwrap();
    let rows: Vec<Vec<&str>> = resources
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    // NAME SHORTNAMES APIVERSION NAMESPACED KIND
    assert!(
        rows.contains(&vec![
            "ipsecnodes",
            "ipn",
            "meshsec.io/v1alpha1",
            "false",
            "IPsecNode"
        ]),
        "{resources}"
    );
    assert!(
        rows.contains(&vec![
            "ipsectunnels",
            "ipt",
            "meshsec.io/v1alpha1",
            "false",
            "IPsecTunnel"
        ]),
        "{resources}"
    );
}

/// Apply every example (under a unique name), read it back and check that the
/// Rust types reproduce the server's JSON exactly.
#[tokio::test]
async fn every_example_applies_and_round_trips_through_the_rust_types() {
    let _client = setup().await;
    let mut cleanup = Cleanup::new();
    let dir = repo_root().join("crds/examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "expected at least 3 examples in {}",
        dir.display()
    );
    let mut kinds = vec![];
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut doc: Value = serde_norway::from_str(&text).unwrap();
        let kind = doc["kind"].as_str().unwrap().to_owned();
        let name = unique_name("example");
        doc["metadata"]["name"] = json!(name);
        cleanup.add(&kind.to_lowercase(), &name);
        kubectl_stdin(&["apply", "-f", "-"], &doc.to_string())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let served: Value = serde_json::from_str(
            &kubectl(&["get", &kind.to_lowercase(), &name, "-o", "json"]).unwrap(),
        )
        .unwrap();
        // What the example says is what the server kept (defaults only add).
        assert_subset(&doc["spec"], &served["spec"], &file.display().to_string());
        let back = match kind.as_str() {
            "IPsecTunnel" => {
                serde_json::to_value(serde_json::from_value::<IPsecTunnel>(served.clone()).unwrap())
                    .unwrap()
            }
            "IPsecNode" => {
                serde_json::to_value(serde_json::from_value::<IPsecNode>(served.clone()).unwrap())
                    .unwrap()
            }
            other => panic!("unexpected kind {other} in {}", file.display()),
        };
        assert_eq!(back, served, "{} does not round-trip", file.display());
        assert!(
            mirror_accepts(&served),
            "{}: the Rust validation mirror refuses it",
            file.display()
        );
        kinds.push(kind);
    }
    assert!(kinds.iter().filter(|k| *k == "IPsecTunnel").count() >= 3);
}

fn assert_subset(want: &Value, have: &Value, ctx: &str) {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            for (k, v) in w {
                assert_subset(v, h.get(k).unwrap_or(&Value::Null), &format!("{ctx}.{k}"));
            }
        }
        _ => assert_eq!(want, have, "{ctx}"),
    }
}

/// What `meshsec_crds::validate` (the Rust mirror of the schema) says about
/// an object: it must agree with the API server.
fn mirror_accepts(doc: &Value) -> bool {
    match doc["kind"].as_str() {
        Some("IPsecTunnel") => {
            tunnel_name_ok(doc["metadata"]["name"].as_str().unwrap_or_default())
                && serde_json::from_value::<IPsecTunnelSpec>(doc["spec"].clone())
                    .is_ok_and(|spec| validate_tunnel_spec(&spec).is_ok())
        }
        Some("IPsecNode") => serde_json::from_value::<IPsecNodeSpec>(doc["spec"].clone())
            .is_ok_and(|spec| validate_node_spec(&spec).is_ok()),
        other => panic!("unexpected kind {other:?}"),
    }
}

/// A small deterministic generator (xorshift64*), so a failing case can be
/// reproduced from the printed index.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a>(&mut self, pool: &'a [Value]) -> &'a Value {
        &pool[(self.next() % pool.len() as u64) as usize]
    }

    /// Present half the time; when present, drawn from `valid` three times
    /// in four, so about one spec in five is valid as a whole.
    fn field(&mut self, valid: &[Value], invalid: &[Value]) -> Option<Value> {
        match self.next() % 8 {
            0..=3 => None,
            4..=6 => Some(self.pick(valid).clone()),
            _ => Some(self.pick(invalid).clone()),
        }
    }
}

/// Differential test: generated specs mixing valid and invalid field values
/// are accepted by the API server exactly when the Rust mirror accepts them.
#[tokio::test]
async fn server_and_rust_mirror_agree_on_generated_specs() {
    let client = setup().await;
    let api = tunnel_api(&client);
    let v = |items: &[Value]| items.to_vec();
    type Pools = (&'static str, Vec<Value>, Vec<Value>);
    let fields: Vec<Pools> = vec![
        (
            "/spec/replayWindow",
            v(&[json!(64), json!(1024), json!(8192)]),
            v(&[json!(32), json!(96), json!(16384), json!(0)]),
        ),
        (
            "/spec/cipher",
            v(&[json!("AES128GCM"), json!("AES256GCM"), json!("AES128GMAC")]),
            v(&[json!("AES192GCM"), json!("aes128gcm")]),
        ),
        (
            "/spec/mode",
            v(&[json!("Transport"), json!("Tunnel")]),
            v(&[json!("transport")]),
        ),
        (
            "/spec/rotation/interval",
            v(&[
                json!("10s"),
                json!("720h"),
                json!("90m"),
                json!("1h30m"),
                json!("1.5h"),
                json!("3600000ms"),
            ]),
            v(&[
                json!("9s"),
                json!("721h"),
                json!("-1h"),
                json!("daily"),
                json!("0s"),
                json!("1d"),
                json!("5"),
            ]),
        ),
        (
            "/spec/rotation/gracePeriod",
            v(&[json!("1s"), json!("10m"), json!("30s")]),
            v(&[json!("999ms"), json!("11m")]),
        ),
        (
            "/spec/rotation/ackTimeout",
            v(&[json!("5s"), json!("1h")]),
            v(&[json!("4s"), json!("61m")]),
        ),
        (
            "/spec/rotation/maxBytes",
            v(&[json!(1_048_576), json!(1_i64 << 50)]),
            v(&[json!(1_048_575), json!((1_i64 << 50) + 1)]),
        ),
        (
            "/spec/rotation/maxPackets",
            v(&[json!(1024), json!(1_i64 << 40)]),
            v(&[json!(1023), json!((1_i64 << 40) + 1)]),
        ),
        (
            "/spec/encapsulation/type",
            v(&[json!("UDP"), json!("None")]),
            v(&[json!("TCP")]),
        ),
        (
            "/spec/encapsulation/port",
            v(&[json!(1), json!(65535)]),
            v(&[json!(0), json!(65536)]),
        ),
        (
            "/spec/mtu",
            v(&[json!("auto"), json!(1280), json!(9000)]),
            v(&[json!(1279), json!(9001), json!("Auto"), json!("1400")]),
        ),
        (
            "/spec/nodeSelector",
            v(&[
                json!({}),
                json!({"matchExpressions": [{"key": "z", "operator": "NotIn", "values": ["a"]}]}),
            ]),
            v(&[
                json!({"matchExpressions": [{"key": "z", "operator": "DoesNotExist", "values": ["a"]}]}),
            ]),
        ),
    ];
    let mut rng = Rng(0x6D65_7368_7365_6321);
    let (mut accepted, mut rejected, mut disagreements) = (0, 0, vec![]);
    for i in 0..80 {
        let mut doc = tunnel_json(&unique_name("generated"), json!({}));
        for (path, valid, invalid) in &fields {
            if let Some(value) = rng.field(valid, invalid) {
                set(&mut doc, path, value);
            }
        }
        let mirror = mirror_accepts(&doc);
        let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
        let server = match api.create(&dry_run(), &obj).await {
            Ok(_) => Ok(()),
            Err(e) => Err(api_message(e)),
        };
        if server.is_ok() {
            accepted += 1
        } else {
            rejected += 1
        }
        if server.is_ok() != mirror {
            disagreements.push(format!(
                "#{i} mirror={mirror} server={server:?} spec={}",
                doc["spec"]
            ));
        }
    }
    eprintln!("generated specs: {accepted} accepted, {rejected} rejected");
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    assert!(
        accepted >= 5 && rejected >= 5,
        "accepted {accepted}, rejected {rejected}: the generator lost its mix"
    );
}

/// One object the API server must refuse, and what its message must say.
struct Invalid {
    what: &'static str,
    kind: &'static str,
    path: &'static str,
    value: Value,
    expect: &'static [&'static str],
}

fn invalid_cases() -> Vec<Invalid> {
    let t = "IPsecTunnel";
    let n = "IPsecNode";
    vec![
        Invalid {
            what: "replay window below 64",
            kind: t,
            path: "/spec/replayWindow",
            value: json!(32),
            expect: &["spec.replayWindow", "greater than or equal to 64"],
        },
        Invalid {
            what: "replay window above 8192",
            kind: t,
            path: "/spec/replayWindow",
            value: json!(16384),
            expect: &["spec.replayWindow", "less than or equal to 8192"],
        },
        Invalid {
            what: "replay window not a power of two",
            kind: t,
            path: "/spec/replayWindow",
            value: json!(1000),
            expect: &["spec.replayWindow", "power of two between 64 and 8192"],
        },
        Invalid {
            what: "unknown cipher",
            kind: t,
            path: "/spec/cipher",
            value: json!("AES192GCM"),
            expect: &[
                "spec.cipher",
                "Unsupported value",
                "\"AES128GCM\", \"AES256GCM\", \"AES128GMAC\"",
            ],
        },
        Invalid {
            what: "unknown mode",
            kind: t,
            path: "/spec/mode",
            value: json!("Bridge"),
            expect: &["spec.mode", "\"Transport\", \"Tunnel\""],
        },
        Invalid {
            what: "tunnel mode with integrity-only cipher",
            kind: t,
            path: "/spec",
            value: json!({"mode": "Tunnel", "cipher": "AES128GMAC"}),
            expect: &[
                "spec",
                "mode: Tunnel",
                "AES128GMAC is integrity-only",
                "AES128GCM or AES256GCM",
            ],
        },
        Invalid {
            what: "rotation interval too short",
            kind: t,
            path: "/spec/rotation/interval",
            value: json!("5s"),
            expect: &["spec.rotation.interval", "between 10s and 720h"],
        },
        Invalid {
            what: "rotation interval too long",
            kind: t,
            path: "/spec/rotation/interval",
            value: json!("1000h"),
            expect: &["spec.rotation.interval", "between 10s and 720h"],
        },
        Invalid {
            what: "rotation interval not a duration",
            kind: t,
            path: "/spec/rotation/interval",
            value: json!("daily"),
            expect: &["spec.rotation.interval", "must be a duration"],
        },
        Invalid {
            what: "negative rotation interval",
            kind: t,
            path: "/spec/rotation/interval",
            value: json!("-1h"),
            expect: &["spec.rotation.interval", "between 10s and 720h"],
        },
        Invalid {
            what: "grace period too long",
            kind: t,
            path: "/spec/rotation/gracePeriod",
            value: json!("1h"),
            expect: &["spec.rotation.gracePeriod", "between 1s and 10m"],
        },
        Invalid {
            what: "ack timeout too short",
            kind: t,
            path: "/spec/rotation/ackTimeout",
            value: json!("1s"),
            expect: &["spec.rotation.ackTimeout", "between 5s and 1h"],
        },
        Invalid {
            what: "maxBytes below 1Mi",
            kind: t,
            path: "/spec/rotation/maxBytes",
            value: json!(1000),
            expect: &["spec.rotation.maxBytes", "greater than or equal to 1048576"],
        },
        Invalid {
            what: "maxPackets above 2^40",
            kind: t,
            path: "/spec/rotation/maxPackets",
            value: json!(2_199_023_255_552_i64),
            expect: &[
                "spec.rotation.maxPackets",
                "less than or equal to 1099511627776",
            ],
        },
        Invalid {
            what: "unknown encapsulation",
            kind: t,
            path: "/spec/encapsulation/type",
            value: json!("TCP"),
            expect: &["spec.encapsulation.type", "\"UDP\", \"None\""],
        },
        Invalid {
            what: "UDP port out of range",
            kind: t,
            path: "/spec/encapsulation/port",
            value: json!(70000),
            expect: &["spec.encapsulation.port", "less than or equal to 65535"],
        },
        Invalid {
            what: "MTU below IPv6 minimum",
            kind: t,
            path: "/spec/mtu",
            value: json!(576),
            expect: &["spec.mtu", "\"auto\" or an integer between 1280 and 9000"],
        },
        Invalid {
            what: "MTU word other than auto",
            kind: t,
            path: "/spec/mtu",
            value: json!("max"),
            expect: &["spec.mtu", "\"auto\" or an integer between 1280 and 9000"],
        },
        Invalid {
            what: "selector In without values",
            kind: t,
            path: "/spec/nodeSelector",
            value: json!({"matchExpressions": [{"key": "zone", "operator": "In"}]}),
            expect: &[
                "spec.nodeSelector.matchExpressions[0]",
                "In and NotIn need at least one value",
            ],
        },
        Invalid {
            what: "selector Exists with values",
            kind: t,
            path: "/spec/nodeSelector",
            value: json!({"matchExpressions": [{"key": "zone", "operator": "Exists", "values": ["a"]}]}),
            expect: &[
                "spec.nodeSelector.matchExpressions[0]",
                "Exists and DoesNotExist take no values",
            ],
        },
        Invalid {
            what: "unknown selector operator",
            kind: t,
            path: "/spec/nodeSelector",
            value: json!({"matchExpressions": [{"key": "zone", "operator": "Equals", "values": ["a"]}]}),
            expect: &[
                "spec.nodeSelector.matchExpressions[0].operator",
                "\"In\", \"NotIn\", \"Exists\", \"DoesNotExist\"",
            ],
        },
        Invalid {
            what: "tunnel name over 63 characters",
            kind: t,
            path: "/metadata/name",
            value: json!("t".repeat(64)),
            expect: &["metadata.name must be at most 63 characters"],
        },
        Invalid {
            what: "endpoint not an IP",
            kind: n,
            path: "/spec/endpoint",
            value: json!("node-1.example"),
            expect: &["spec.endpoint", "IPv4 or IPv6 address"],
        },
        Invalid {
            what: "pod CIDR with host bits",
            kind: n,
            path: "/spec/podCIDRs",
            value: json!(["10.244.1.7/24"]),
            expect: &["spec.podCIDRs", "host bits zero"],
        },
        Invalid {
            what: "pod CIDR prefix too long",
            kind: n,
            path: "/spec/podCIDRs",
            value: json!(["10.244.1.0/33"]),
            expect: &["spec.podCIDRs", "network CIDRs"],
        },
        Invalid {
            what: "pod CIDR not a CIDR",
            kind: n,
            path: "/spec/podCIDRs",
            value: json!(["10.244.1.0"]),
            expect: &["spec.podCIDRs", "network CIDRs"],
        },
        Invalid {
            what: "public key not 32 bytes of base64",
            kind: n,
            path: "/spec/tunnels/0/publicKeys/0/key",
            value: json!("c2hvcnQ="),
            expect: &[
                "spec.tunnels[0].publicKeys[0].key",
                "base64-encoded 32-byte X25519 public key",
            ],
        },
        Invalid {
            what: "public key non-canonical base64",
            kind: n,
            path: "/spec/tunnels/0/publicKeys/0/key",
            value: json!("hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmp="),
            expect: &[
                "spec.tunnels[0].publicKeys[0].key",
                "base64-encoded 32-byte",
            ],
        },
        Invalid {
            what: "active epoch ahead of installed",
            kind: n,
            path: "/spec/tunnels/0/activeEpoch",
            value: json!(2),
            expect: &[
                "spec.tunnels[0]",
                "activeEpoch must not exceed installedEpoch",
            ],
        },
        Invalid {
            what: "negative key generation",
            kind: n,
            path: "/spec/keyGeneration",
            value: json!(-1),
            expect: &["spec.keyGeneration", "greater than or equal to 0"],
        },
        Invalid {
            what: "duplicate pod CIDR",
            kind: n,
            path: "/spec/podCIDRs",
            value: json!(["10.244.1.0/24", "10.244.1.0/24"]),
            expect: &["spec.podCIDRs[1]", "Duplicate value"],
        },
        Invalid {
            what: "two keys for one epoch",
            kind: n,
            path: "/spec/tunnels/0/publicKeys",
            value: json!([{"epoch": 1, "key": GOOD_KEY}, {"epoch": 1, "key": GOOD_KEY}]),
            expect: &["spec.tunnels[0].publicKeys[1]", "Duplicate value"],
        },
        Invalid {
            what: "endpoint missing",
            kind: n,
            path: "/spec",
            value: json!({"podCIDRs": ["10.244.1.0/24"]}),
            expect: &["spec.endpoint", "Required value"],
        },
    ]
}

#[tokio::test]
async fn the_api_server_rejects_invalid_objects_naming_the_field() {
    let client = setup().await;
    let cases = invalid_cases();
    assert!(cases.len() >= 12);
    let mut failures = vec![];
    for case in &cases {
        let name = unique_name("invalid");
        let (mut doc, api) = match case.kind {
            "IPsecTunnel" => (tunnel_json(&name, json!({})), tunnel_api(&client)),
            _ => (node_json(&name), node_api(&client)),
        };
        set(&mut doc, case.path, case.value.clone());
        if mirror_accepts(&doc) {
            failures.push(format!(
                "{}: the Rust validation mirror accepts it",
                case.what
            ));
        }
        let obj: DynamicObject = serde_json::from_value(doc).unwrap();
        match api.create(&dry_run(), &obj).await {
            Ok(_) => failures.push(format!("{}: accepted", case.what)),
            Err(e) => {
                let msg = api_message(e);
                let missing: Vec<_> = case.expect.iter().filter(|s| !msg.contains(*s)).collect();
                if !missing.is_empty() {
                    failures.push(format!("{}: message lacks {missing:?}: {msg}", case.what));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The same rejection as a user sees it through `kubectl apply`.
#[tokio::test]
async fn kubectl_apply_shows_the_rejection_message() {
    let _client = setup().await;
    let name = unique_name("kubectl-invalid");
    let mut cleanup = Cleanup::new();
    cleanup.add("ipsectunnel", &name);
    let doc = tunnel_json(&name, json!({"replayWindow": 100}));
    let out = kubectl_raw(&["apply", "-f", "-"], Some(&doc.to_string())).unwrap();
    assert!(!out.success, "invalid tunnel applied: {}", out.stdout);
    assert!(out.stderr.contains("spec.replayWindow"), "{}", out.stderr);
    assert!(
        out.stderr.contains("power of two between 64 and 8192"),
        "{}",
        out.stderr
    );
}

/// Transition rules: fields that would break traffic if changed in place.
#[tokio::test]
async fn immutable_fields_are_refused_on_update() {
    let client = setup().await;
    let mut cleanup = Cleanup::new();
    let tunnels = tunnel_api(&client);
    let name = unique_name("immutable");
    cleanup.add("ipsectunnel", &name);
    let created = tunnels
        .create(
            &PostParams::default(),
            &serde_json::from_value(tunnel_json(&name, json!({}))).unwrap(),
        )
        .await
        .unwrap();
    let updates = [
        ("/spec/cipher", json!("AES256GCM"), "cipher is immutable"),
        ("/spec/mode", json!("Tunnel"), "mode is immutable"),
        (
            "/spec/encapsulation/type",
            json!("None"),
            "encapsulation.type is immutable",
        ),
    ];
    for (path, value, expect) in updates {
        let mut doc = serde_json::to_value(&created).unwrap();
        set(&mut doc, path, value);
        let err = tunnels
            .replace(
                &name,
                &PostParams::default(),
                &serde_json::from_value(doc).unwrap(),
            )
            .await
            .expect_err(path);
        let msg = api_message(err);
        let field = format!("spec{}", path.trim_start_matches("/spec").replace('/', "."));
        assert!(
            msg.contains(&field) && msg.contains(expect),
            "{path}: {msg}"
        );
    }
    // Mutable fields still change.
    let mut doc = serde_json::to_value(&created).unwrap();
    set(&mut doc, "/spec/replayWindow", json!(2048));
    set(&mut doc, "/spec/strict", json!(true));
    tunnels
        .replace(
            &name,
            &PostParams::default(),
            &serde_json::from_value(doc).unwrap(),
        )
        .await
        .unwrap();

    // IPsecNode: keyGeneration never decreases; status.nodeId never changes.
    let nodes = node_api(&client);
    let node = unique_name("immutable-node");
    cleanup.add("ipsecnode", &node);
    let created = nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(node_json(&node)).unwrap(),
        )
        .await
        .unwrap();
    let mut doc = serde_json::to_value(&created).unwrap();
    set(&mut doc, "/spec/keyGeneration", json!(1));
    let msg = api_message(
        nodes
            .replace(
                &node,
                &PostParams::default(),
                &serde_json::from_value(doc).unwrap(),
            )
            .await
            .unwrap_err(),
    );
    assert!(
        msg.contains("spec.keyGeneration") && msg.contains("must never decrease"),
        "{msg}"
    );

    let pp = e2e_writer();
    let status = |id: i64| Patch::Merge(json!({"status": {"nodeId": id}}));
    let msg = api_message(
        nodes
            .patch_status(&node, &pp, &status(100))
            .await
            .unwrap_err(),
    );
    assert!(
        msg.contains("status.nodeId") && msg.contains("greater than or equal to 256"),
        "{msg}"
    );
    let id = settle_node_id(&nodes, &node, 300).await;
    let msg = api_message(
        nodes
            .patch_status(&node, &pp, &status(id + 1))
            .await
            .unwrap_err(),
    );
    assert!(
        msg.contains("status") && msg.contains("nodeId is immutable once allocated"),
        "{msg}"
    );
    nodes.patch_status(&node, &pp, &status(id)).await.unwrap();
}

/// Field manager of this suite's own writes, to tell them from others'.
const E2E_MANAGER: &str = "meshsec-e2e-crds";

fn e2e_writer() -> PatchParams {
    PatchParams {
        field_manager: Some(E2E_MANAGER.into()),
        ..Default::default()
    }
}

/// Managers other than this suite that wrote the object's status (a
/// meshsec-operator running against the same cluster reconciles test objects).
fn other_status_writers(obj: &Value) -> Vec<String> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["subresource"] == "status" && m["manager"] != E2E_MANAGER)
        .filter_map(|m| m["manager"].as_str().map(str::to_owned))
        .collect()
}

/// Give the IPsecNode `want` as its node id unless another writer (an
/// operator) allocated one first; return the id it ends up with.
async fn settle_node_id(nodes: &Api<DynamicObject>, name: &str, want: i64) -> i64 {
    for _ in 0..10 {
        let current = nodes.get_status(name).await.unwrap();
        if let Some(id) = current.data["status"]["nodeId"].as_i64() {
            return id;
        }
        let patch = Patch::Merge(json!({"status": {"nodeId": want}}));
        if nodes
            .patch_status(name, &e2e_writer(), &patch)
            .await
            .is_ok()
        {
            return want;
        }
    }
    panic!("could not settle status.nodeId of {name}");
}

#[tokio::test]
async fn defaults_are_filled_in_by_the_api_server() {
    let _client = setup().await;
    let name = unique_name("defaults");
    let mut cleanup = Cleanup::new();
    cleanup.add("ipsectunnel", &name);
    kubectl_stdin(
        &["apply", "-f", "-"],
        &tunnel_json(&name, json!({})).to_string(),
    )
    .unwrap();
    let yaml = kubectl(&["get", "ipsectunnel", &name, "-o", "yaml"]).unwrap();
    for line in [
        "cipher: AES128GCM",
        "mode: Transport",
        "replayWindow: 8192",
        "mtu: auto",
        "interval: 1h",
        "type: UDP",
        "port: 4500",
        "strict: false",
    ] {
        assert!(
            yaml.contains(line),
            "`kubectl get -o yaml` lacks {line:?}:\n{yaml}"
        );
    }
    let served: Value = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(
        served["spec"],
        serde_json::to_value(IPsecTunnelSpec::default()).unwrap()
    );
}

#[tokio::test]
async fn printer_columns_show_mode_cipher_epoch_phase_and_readiness() {
    let client = setup().await;
    let mut cleanup = Cleanup::new();
    let tunnels: Api<IPsecTunnel> = Api::all(client.clone());
    let name = unique_name("columns");
    cleanup.add("ipsectunnel", &name);
    let spec: IPsecTunnelSpec =
        serde_json::from_value(json!({"cipher": "AES256GCM", "mode": "Tunnel"})).unwrap();
    tunnels
        .create(&PostParams::default(), &IPsecTunnel::new(&name, spec))
        .await
        .unwrap();
    let status =
        json!({"status": {"epoch": 3, "phase": "Install", "nodesReady": 2, "nodesTotal": 3}});
    tunnels
        .patch_status(&name, &e2e_writer(), &Patch::Merge(status.clone()))
        .await
        .unwrap();
    let (cells, obj) = table_with_object("ipsectunnel", &name);
    let headers: Vec<&str> = cells.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(
        headers,
        [
            "NAME", "MODE", "CIPHER", "EPOCH", "PHASE", "READY", "NODES", "AGE"
        ]
    );
    let st = &obj["status"];
    let want = [
        json!(name),
        obj["spec"]["mode"].clone(),
        obj["spec"]["cipher"].clone(),
        st["epoch"].clone(),
        st["phase"].clone(),
        st["nodesReady"].clone(),
        st["nodesTotal"].clone(),
    ];
    assert_row(&cells, &want);
    assert_eq!(cells[1].1, "Tunnel");
    assert_eq!(cells[2].1, "AES256GCM");
    if other_status_writers(&obj).is_empty() {
        // Nobody else touched the status: the columns show what we wrote.
        assert_eq!(
            [&cells[3].1, &cells[4].1, &cells[5].1, &cells[6].1],
            ["3", "Install", "2", "3"]
        );
    }

    let nodes: Api<IPsecNode> = Api::all(client.clone());
    let node = unique_name("columns-node");
    cleanup.add("ipsecnode", &node);
    let mut spec: IPsecNodeSpec = serde_json::from_value(node_json(&node)["spec"].clone()).unwrap();
    // HEALTHY shows the node's own report (meshsec writes no Ready condition).
    spec.datapath = Some(meshsec_crds::DatapathStatus {
        healthy: true,
        ..Default::default()
    });
    nodes
        .create(&PostParams::default(), &IPsecNode::new(&node, spec))
        .await
        .unwrap();
    let id = settle_node_id(&node_api(&client), &node, 4242).await;
    let ready = condition(
        conditions::node::READY,
        true,
        conditions::reason::DATAPATH_READY,
        "epoch 1 installed",
        Some(1),
        now(),
    );
    let status = json!({"status": {"conditions": [ready]}});
    nodes
        .patch_status(&node, &e2e_writer(), &Patch::Merge(status))
        .await
        .unwrap();
    let (cells, obj) = table_with_object("ipsecnode", &node);
    let headers: Vec<&str> = cells.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(
        headers,
        ["NAME", "ID", "ENDPOINT", "EPOCH", "HEALTHY", "AGE"]
    );
    let ready = obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| c["status"].clone())
        .unwrap_or(Value::Null);
    assert_row(
        &cells,
        &[
            json!(node),
            json!(id),
            json!("192.0.2.10"),
            json!(1),
            json!(true),
        ],
    );
    assert_eq!(ready, "True", "our Ready condition was dropped: {obj}");
}

/// `kubectl get KIND NAME` cut into (header, cell) pairs, together with the
/// object at the same resourceVersion (retried if a write lands in between).
fn table_with_object(kind: &str, name: &str) -> (Vec<(String, String)>, Value) {
    let get = || -> Value {
        serde_json::from_str(&kubectl(&["get", kind, name, "-o", "json"]).unwrap()).unwrap()
    };
    for _ in 0..20 {
        let before = get();
        let table = kubectl(&["get", kind, name]).unwrap();
        let after = get();
        if before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"] {
            return (cut_table(&table), after);
        }
    }
    panic!("{kind}/{name} kept changing while reading its table");
}

/// Split a kubectl table row at the columns where the headers start (cells
/// may be empty, so splitting on whitespace would misalign them).
fn cut_table(table: &str) -> Vec<(String, String)> {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let row = lines.next().unwrap_or_default();
    let starts: Vec<usize> = header
        .char_indices()
        .filter(|(i, c)| !c.is_whitespace() && (*i == 0 || header[..*i].ends_with(' ')))
        .map(|(i, _)| i)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = starts.get(n + 1).copied().unwrap_or(usize::MAX);
            let head = header[start..end.min(header.len())].trim().to_owned();
            let cell = row
                .get(start..end.min(row.len()))
                .unwrap_or_default()
                .trim()
                .to_owned();
            (head, cell)
        })
        .collect()
}

/// Each cell shows the corresponding field (absent fields print empty).
fn assert_row(cells: &[(String, String)], want: &[Value]) {
    for ((head, cell), field) in cells.iter().zip(want) {
        let shown = match field {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(cell, &shown, "column {head}: {cells:?}");
    }
}

fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    // Whole seconds: the API stores RFC 3339 without fractions.
    let secs = k8s_openapi::jiff::Timestamp::now().as_second();
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(secs).unwrap(),
    )
}

/// `kubectl explain` teaches each field from the descriptions in the types.
#[tokio::test]
async fn kubectl_explain_describes_the_fields() {
    let _client = setup().await;
    let cases = [
        (
            "ipsectunnel.spec.replayWindow",
            "power of two from 64 to 8192",
        ),
        ("ipsectunnel.spec.cipher", "AES128GMAC (integrity only"),
        ("ipsectunnel.spec.mode", "hides pod addresses"),
        ("ipsectunnel.spec.rotation.interval", "from 10s to 720h"),
        ("ipsectunnel.spec.strict", "Fail closed"),
        ("ipsectunnel.spec.nodeSelector", "Empty selects every node"),
        ("ipsectunnel.status.phase", "Prepare"),
        ("ipsecnode.spec.podCIDRs", "Host bits must be zero"),
        (
            "ipsecnode.spec.keyGeneration",
            "bumped by the sidecar at every start",
        ),
        ("ipsecnode.status.nodeId", "24 bits, 256 to 16777215"),
    ];
    for (field, expect) in cases {
        // The OpenAPI document is published a moment after the CRD changes.
        let text = wait_for(
            &format!("kubectl explain {field}"),
            Duration::from_secs(30),
            || {
                let out = kubectl_raw(&["explain", field], None).ok()?;
                // kubectl wraps long descriptions; compare with whitespace collapsed.
                let flat = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
                (out.success && flat.contains(expect)).then_some(out.stdout)
            },
        )
        .unwrap_or_else(|e| {
            let last = kubectl_raw(&["explain", field], None)
                .map(|o| o.stdout + &o.stderr)
                .unwrap_or_default();
            panic!("{e}; last output:\n{last}")
        });
        assert!(text.contains("DESCRIPTION"), "{text}");
    }
    let spec = kubectl(&["explain", "ipsectunnel.spec"]).unwrap();
    for field in [
        "nodeSelector",
        "mode",
        "cipher",
        "encapsulation",
        "rotation",
        "replayWindow",
        "mtu",
        "strict",
    ] {
        assert!(
            spec.contains(field),
            "`kubectl explain ipsectunnel.spec` lacks {field}:\n{spec}"
        );
    }
}

/// An object written through the Rust types, with every field set away from
/// its default and a full status, reads back identical.
#[tokio::test]
async fn typed_objects_round_trip_without_loss() {
    let client = setup().await;
    let mut cleanup = Cleanup::new();
    let tunnels: Api<IPsecTunnel> = Api::all(client.clone());
    let name = unique_name("roundtrip");
    cleanup.add("ipsectunnel", &name);
    let spec: IPsecTunnelSpec = serde_json::from_value(json!({
        "nodeSelector": {"matchLabels": {"pool": "a"}, "matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["z"]}]},
        "mode": "Transport", "cipher": "AES128GMAC",
        "encapsulation": {"type": "UDP", "port": 14500},
        "rotation": {"interval": "90s", "maxBytes": 1048576, "maxPackets": 4096, "gracePeriod": "2s", "ackTimeout": "5s"},
        "replayWindow": 64, "mtu": 1280, "strict": true
    }))
    .unwrap();
    let created = tunnels
        .create(
            &PostParams::default(),
            &IPsecTunnel::new(&name, spec.clone()),
        )
        .await
        .unwrap();
    assert_eq!(created.spec, spec);

    let mut status = IPsecTunnelStatus {
        observed_generation: created.metadata.generation,
        epoch: 9,
        phase: meshsec_crds::RotationPhase::Switch,
        phase_since: Some(now()),
        rotation_trigger: Some(meshsec_crds::RotationTrigger::Manual),
        last_rotation_time: Some(now()),
        nodes_ready: 1,
        nodes_total: 2,
        members: vec!["node-a".into(), "node-b".into()],
        ..Default::default()
    };
    for c in [
        condition(
            conditions::tunnel::READY,
            false,
            conditions::reason::NODES_NOT_READY,
            "1/2 nodes ready",
            Some(1),
            now(),
        ),
        condition(
            conditions::tunnel::ROTATING,
            true,
            conditions::reason::MANUAL_ROTATION,
            "epoch 9",
            Some(1),
            now(),
        ),
    ] {
        conditions::set_condition(&mut status.conditions, c);
    }
    let patch = Patch::Merge(json!({"status": status}));
    let patched = tunnels
        .patch_status(&name, &e2e_writer(), &patch)
        .await
        .unwrap();
    assert_eq!(patched.status.as_ref(), Some(&status));

    let raw: Value =
        serde_json::from_str(&kubectl(&["get", "ipsectunnel", &name, "-o", "json"]).unwrap())
            .unwrap();
    let typed: IPsecTunnel = serde_json::from_value(raw.clone()).unwrap();
    assert_eq!(typed.spec, spec);
    let others = other_status_writers(&raw);
    if others.is_empty() {
        assert_eq!(typed.status, Some(status));
    } else {
        eprintln!("status also written by {others:?}; comparing the raw and typed forms only");
    }
    assert_eq!(serde_json::to_value(&typed).unwrap(), raw);
}
