"""Independent implementation of the meshsec key schedule (docs/protocol.md)
using the `cryptography` package, for cross-checking the Rust crate."""

import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LABEL = b"meshsec/v1 esp"
CIPHER_CODES = {"aes128gcm": 1, "aes256gcm": 2, "aes128gmac": 3}
MATERIAL_LEN = {"aes128gcm": 20, "aes256gcm": 36, "aes128gmac": 20}


def public_key(secret: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


def shared_secret(secret: bytes, peer_public: bytes) -> bytes:
    shared = X25519PrivateKey.from_private_bytes(secret).exchange(
        X25519PublicKey.from_public_bytes(peer_public)
    )
    if shared == bytes(32):
        raise ValueError("all-zero shared secret")
    return shared


def info(uid: str, epoch: int, id_s: int, id_r: int, g_s: int, g_r: int, cipher: str) -> bytes:
    u = uid.encode()
    return (
        LABEL
        + struct.pack(">H", len(u))
        + u
        + struct.pack(">QIIQQB", epoch, id_s, id_r, g_s, g_r, CIPHER_CODES[cipher])
    )


def derive(psk: bytes, shared: bytes, info_bytes: bytes, cipher: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=MATERIAL_LEN[cipher], salt=psk, info=info_bytes
    ).derive(shared)


def spi(epoch: int, generation: int, node_id: int) -> int:
    value = ((epoch % 4) << 30) | ((generation % 64) << 24) | node_id
    assert node_id < (1 << 24) and value >= 256
    return value
