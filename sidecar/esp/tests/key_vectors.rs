//! Recomputes the key-schedule and SPI test vectors published in
//! docs/protocol.md (themselves computed with Python `cryptography`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use meshsec_esp::Cipher;
use meshsec_esp::key_schedule::{
    KeyError, KeyPair, NodeRef, SaContext, derive, derive_from, derive_pair,
};
use meshsec_esp::spi;

const PROTOCOL_MD: &str = include_str!("../../../docs/protocol.md");

/// The `name = value` lines of the ```vectors block.
fn vectors() -> HashMap<String, String> {
    let block = PROTOCOL_MD
        .split("```vectors\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/protocol.md has a ```vectors block");
    block
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn hex32(v: &HashMap<String, String>, k: &str) -> [u8; 32] {
    hex::decode(&v[k]).unwrap().try_into().unwrap()
}

fn num<T: std::str::FromStr>(v: &HashMap<String, String>, k: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    v[k].parse().unwrap()
}

/// Node `n`'s id and generation in the vectors.
fn node(v: &HashMap<String, String>, n: &str) -> NodeRef {
    NodeRef {
        id: num(v, &format!("id_{n}")),
        generation: num(v, &format!("g_{n}")),
    }
}

#[test]
fn key_schedule_matches_published_vectors() {
    let v = vectors();
    let ki = KeyPair::from_secret_bytes(hex32(&v, "sk_i"));
    let kj = KeyPair::from_secret_bytes(hex32(&v, "sk_j"));
    assert_eq!(hex::encode(ki.public()), v["pk_i"]);
    assert_eq!(hex::encode(kj.public()), v["pk_j"]);
    let psk = hex32(&v, "psk");
    let epoch: u64 = num(&v, "epoch");
    let (i, j) = (node(&v, "i"), node(&v, "j"));
    let uid = v["uid"].as_str();
    let mut checked = 0;
    for cipher in [Cipher::Aes128Gcm, Cipher::Aes256Gcm, Cipher::Aes128Gmac] {
        let name = cipher.as_str();
        // Node i's view and node j's view must agree on both directions.
        let at_i = derive_pair(&psk, &ki, &kj.public(), uid, epoch, i, j, cipher).unwrap();
        let at_j = derive_pair(&psk, &kj, &ki.public(), uid, epoch, j, i, cipher).unwrap();
        let want_ij = &v[&format!("{name}.key_i_to_j")];
        let want_ji = &v[&format!("{name}.key_j_to_i")];
        assert_eq!(
            &hex::encode(at_i.outbound.expose_material()),
            want_ij,
            "{name}"
        );
        assert_eq!(
            &hex::encode(at_j.inbound.expose_material()),
            want_ij,
            "{name}"
        );
        assert_eq!(
            &hex::encode(at_i.inbound.expose_material()),
            want_ji,
            "{name}"
        );
        assert_eq!(
            &hex::encode(at_j.outbound.expose_material()),
            want_ji,
            "{name}"
        );
        assert_ne!(want_ij, want_ji);
        if let Some(info) = v.get(&format!("{name}.info_i_to_j")) {
            let ctx = SaContext {
                tunnel_uid: uid,
                epoch,
                sender: i,
                receiver: j,
                cipher,
            };
            assert_eq!(&hex::encode(ctx.info().unwrap()), info);
        }
        checked += 1;
    }
    assert_eq!(checked, 3);
    assert_eq!(
        format!("{:08x}", spi::compose(epoch, i.generation, i.id).unwrap()),
        v["spi_i_to_j"]
    );
    assert_eq!(
        format!("{:08x}", spi::compose(epoch, j.generation, j.id).unwrap()),
        v["spi_j_to_i"]
    );
}

#[test]
fn every_input_changes_the_key() {
    let ki = KeyPair::from_secret_bytes([1; 32]);
    let kj = KeyPair::from_secret_bytes([2; 32]);
    let base = SaContext {
        tunnel_uid: "u",
        epoch: 1,
        sender: NodeRef {
            id: 300,
            generation: 1,
        },
        receiver: NodeRef {
            id: 301,
            generation: 1,
        },
        cipher: Cipher::Aes128Gcm,
    };
    let k = |psk: [u8; 32], ctx: SaContext<'_>| {
        hex::encode(
            derive(&psk, &ki, &kj.public(), &ctx)
                .unwrap()
                .expose_material(),
        )
    };
    let reference = k([0; 32], base);
    let variants = [
        k([1; 32], base),
        k(
            [0; 32],
            SaContext {
                tunnel_uid: "v",
                ..base
            },
        ),
        k([0; 32], SaContext { epoch: 2, ..base }),
        k(
            [0; 32],
            SaContext {
                sender: NodeRef {
                    id: 302,
                    generation: 1,
                },
                ..base
            },
        ),
        k(
            [0; 32],
            SaContext {
                receiver: NodeRef {
                    id: 302,
                    generation: 1,
                },
                ..base
            },
        ),
        k(
            [0; 32],
            SaContext {
                sender: NodeRef {
                    id: 300,
                    generation: 2,
                },
                ..base
            },
        ),
        k(
            [0; 32],
            SaContext {
                receiver: NodeRef {
                    id: 301,
                    generation: 2,
                },
                ..base
            },
        ),
        k(
            [0; 32],
            SaContext {
                cipher: Cipher::Aes128Gmac,
                ..base
            },
        ),
    ];
    for (n, x) in variants.iter().enumerate() {
        assert_ne!(x, &reference, "variant {n} did not change the key");
    }
}

#[test]
fn low_order_public_key_rejected() {
    let k = KeyPair::from_secret_bytes([9; 32]);
    let ctx = SaContext {
        tunnel_uid: "u",
        epoch: 1,
        sender: NodeRef {
            id: 300,
            generation: 1,
        },
        receiver: NodeRef {
            id: 301,
            generation: 1,
        },
        cipher: Cipher::Aes128Gcm,
    };
    // The identity point and a point of order 8 (RFC 7748 / libsodium list).
    let mut order8 = [0u8; 32];
    hex::decode_to_slice(
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        &mut order8,
    )
    .unwrap();
    for pk in [[0u8; 32], order8] {
        assert_eq!(
            derive(&[0; 32], &k, &pk, &ctx).unwrap_err(),
            KeyError::AllZeroSharedSecret
        );
        assert_eq!(k.agree(&pk).unwrap_err(), KeyError::AllZeroSharedSecret);
    }
}

#[test]
fn derive_from_the_agreed_secret_matches_published_vectors() {
    // One X25519 per peer (the sidecar keeps it) gives the published keys
    // of every cipher and both directions, at either end.
    let v = vectors();
    let ki = KeyPair::from_secret_bytes(hex32(&v, "sk_i"));
    let kj = KeyPair::from_secret_bytes(hex32(&v, "sk_j"));
    let (at_i, at_j) = (
        ki.agree(&kj.public()).unwrap(),
        kj.agree(&ki.public()).unwrap(),
    );
    assert_eq!(format!("{at_i:?}"), "PeerSecret(..)");
    let (i, j) = (node(&v, "i"), node(&v, "j"));
    let psk = hex32(&v, "psk");
    for cipher in [Cipher::Aes128Gcm, Cipher::Aes256Gcm, Cipher::Aes128Gmac] {
        let name = cipher.as_str();
        let ctx = |sender, receiver| SaContext {
            tunnel_uid: v["uid"].as_str(),
            epoch: num(&v, "epoch"),
            sender,
            receiver,
            cipher,
        };
        for (shared, sender, receiver, want) in [
            (&at_i, i, j, "key_i_to_j"),
            (&at_j, i, j, "key_i_to_j"),
            (&at_i, j, i, "key_j_to_i"),
            (&at_j, j, i, "key_j_to_i"),
        ] {
            let key = derive_from(&psk, shared, &ctx(sender, receiver)).unwrap();
            assert_eq!(
                hex::encode(key.expose_material()),
                v[&format!("{name}.{want}")],
                "{name} {want}"
            );
        }
    }
}

#[test]
fn fresh_keypairs_differ() {
    let a = KeyPair::generate().unwrap();
    let b = KeyPair::generate().unwrap();
    assert_ne!(a.public(), b.public());
    assert!(!format!("{a:?}").contains("secret:"));
}
