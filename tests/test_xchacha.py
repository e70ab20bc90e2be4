"""XChaCha20-Poly1305 on OpenSSL (shared/xchacha.py) gives libsodium's bytes, both ways: a
sealed object is readable by any libsodium reader, and objects sealed before are still read."""

from __future__ import annotations

import os

import pytest
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

from shared import xchacha


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 1000, 65536, 65536 + 17])
def test_same_bytes_as_libsodium(size: int) -> None:
    for _ in range(20):  # fresh keys and nonces: every word of HChaCha20 gets exercised
        key, nonce, aad = os.urandom(32), os.urandom(24), os.urandom(40)
        plaintext = os.urandom(size)
        ours = xchacha.encrypt(key, nonce, plaintext, aad)
        assert ours == crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)
        assert crypto_aead_xchacha20poly1305_ietf_decrypt(ours, aad, nonce, key) == plaintext
        assert xchacha.decrypt(key, nonce, memoryview(ours), aad) == plaintext


def test_all_ones_words_wrap_around() -> None:
    # HChaCha20 subtracts the input words modulo 2**32: inputs of 0xFF bytes make that wrap.
    key, nonce, aad = b"\xff" * 32, b"\xff" * 24, b""
    ours = xchacha.encrypt(key, nonce, b"clip", aad)
    assert ours == crypto_aead_xchacha20poly1305_ietf_encrypt(b"clip", aad, nonce, key)


def test_any_change_is_rejected() -> None:
    key, nonce, aad = os.urandom(32), os.urandom(24), b"header"
    sealed = bytearray(xchacha.encrypt(key, nonce, b"x" * 100, aad))
    sealed[50] ^= 1
    with pytest.raises(xchacha.Rejected):
        xchacha.decrypt(key, nonce, bytes(sealed), aad)
    sealed[50] ^= 1
    with pytest.raises(CryptoError):  # libsodium agrees on the tag over the AAD
        crypto_aead_xchacha20poly1305_ietf_decrypt(bytes(sealed), b"other", nonce, key)
    with pytest.raises(xchacha.Rejected):
        xchacha.decrypt(key, nonce, bytes(sealed), b"other")
    other_nonce = nonce[:16] + bytes(8)
    with pytest.raises(xchacha.Rejected):
        xchacha.decrypt(key, other_nonce, bytes(sealed), aad)


def test_sizes_are_checked() -> None:
    with pytest.raises(ValueError):
        xchacha.encrypt(os.urandom(31), os.urandom(24), b"", b"")
    with pytest.raises(ValueError):
        xchacha.decrypt(os.urandom(32), os.urandom(12), b"x" * 16, b"")


def test_encrypt_into_writes_the_same_bytes() -> None:
    key, nonce, aad, plaintext = os.urandom(32), os.urandom(24), b"aad", os.urandom(5000)
    out = bytearray(len(plaintext) + xchacha.TAG_SIZE)
    xchacha.encrypt_into(key, nonce, memoryview(plaintext), aad, memoryview(out))
    assert bytes(out) == xchacha.encrypt(key, nonce, plaintext, aad)


def test_decrypt_into_reads_libsodium_and_refuses_a_change() -> None:
    key, nonce, aad, plaintext = os.urandom(32), os.urandom(24), b"aad", os.urandom(5000)
    sealed = bytearray(crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key))
    out = bytearray(len(plaintext))
    xchacha.decrypt_into(key, nonce, memoryview(sealed), aad, memoryview(out))
    assert out == plaintext
    sealed[7] ^= 1
    with pytest.raises(xchacha.Rejected):
        xchacha.decrypt_into(key, nonce, memoryview(sealed), aad, memoryview(out))
