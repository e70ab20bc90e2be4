"""XChaCha20-Poly1305 (IETF), computed with OpenSSL's ChaCha20-Poly1305 through `cryptography`.

The result is byte for byte libsodium's ``crypto_aead_xchacha20poly1305_ietf_*`` (pynacl), which
the tests check both ways; any libsodium reader opens what this seals. Why not call libsodium:
here OpenSSL's ChaCha20-Poly1305 runs at ~3.7 GB/s against ~1.3 GB/s for libsodium's, and the
cipher is most of the cost of sealing and of serving a clip (`make bench-ingest`,
`make bench-vault`).

The construction (draft-irtf-cfrg-xchacha-03, section 2.3): the 24-byte nonce's first 16 bytes
derive a subkey with HChaCha20, and the subkey encrypts with ChaCha20-Poly1305 under the nonce
4 zero bytes || the nonce's last 8 bytes.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

KEY_SIZE = 32
NONCE_SIZE = 24
TAG_SIZE = 16

_SIGMA = struct.unpack("<4I", b"expand 32-byte k")  # ChaCha's constant words 0-3
_ONE_BLOCK = bytes(64)
_WORD = 0xFFFFFFFF


class Rejected(Exception):
    """The ciphertext failed authentication (wrong key, nonce, AAD or altered bytes)."""


def _hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20 (the draft's section 2.2): ChaCha20's 20 rounds over the key and the 16 bytes,
    keeping words 0-3 and 12-15 without adding the input back. OpenSSL has no HChaCha20, but
    one ChaCha20 block, whose words 12-15 (counter and nonce) are exactly those 16 bytes, is
    the rounds plus the input: subtracting the input words gives HChaCha20."""
    block = Cipher(algorithms.ChaCha20(key, nonce16), mode=None).encryptor().update(_ONE_BLOCK)
    words = struct.unpack("<16I", block)
    inputs = struct.unpack("<4I", nonce16)
    return struct.pack(
        "<8I",
        *((words[i] - _SIGMA[i]) & _WORD for i in range(4)),
        *((words[12 + i] - inputs[i]) & _WORD for i in range(4)),
    )


def _check(key: bytes, nonce: bytes) -> None:
    if len(key) != KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise ValueError("XChaCha20-Poly1305 takes a 32-byte key and a 24-byte nonce")


def encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """ciphertext || 16-byte tag."""
    _check(key, nonce)
    aead = ChaCha20Poly1305(_hchacha20(key, nonce[:16]))
    return aead.encrypt(bytes(4) + nonce[16:], plaintext, aad)


def encrypt_into(
    key: bytes, nonce: bytes, plaintext: bytes | memoryview, aad: bytes, out: memoryview
) -> None:
    """encrypt, written into ``out`` (exactly len(plaintext) + 16 bytes): no copy."""
    _check(key, nonce)
    aead = ChaCha20Poly1305(_hchacha20(key, nonce[:16]))
    aead.encrypt_into(bytes(4) + nonce[16:], plaintext, aad, out)


def decrypt_into(key: bytes, nonce: bytes, sealed: memoryview, aad: bytes, out: memoryview) -> None:
    """decrypt, written into ``out`` (exactly len(sealed) - 16 bytes), or Rejected."""
    _check(key, nonce)
    aead = ChaCha20Poly1305(_hchacha20(key, nonce[:16]))
    try:
        aead.decrypt_into(bytes(4) + nonce[16:], sealed, aad, out)
    except InvalidTag as exc:
        raise Rejected("authentication failed") from exc


def decrypt(key: bytes, nonce: bytes, sealed: bytes | memoryview, aad: bytes) -> bytes:
    """The plaintext of ciphertext || tag, or Rejected."""
    _check(key, nonce)
    aead = ChaCha20Poly1305(_hchacha20(key, nonce[:16]))
    try:
        return aead.decrypt(bytes(4) + nonce[16:], sealed, aad)
    except InvalidTag as exc:
        raise Rejected("authentication failed") from exc
