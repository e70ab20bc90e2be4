"""The resumable SHA-256: saved and restored at any byte, in another object, it gives
hashlib's digest."""

from __future__ import annotations

import hashlib
import os
import random

import pytest

from shared.hashing import ResumableSha256


def test_state_survives_any_split() -> None:
    data = os.urandom(300_001)
    rng = random.Random(7)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 6)))
        state = ResumableSha256().state()
        for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
            hasher = ResumableSha256(state)  # as if each piece reached another process
            hasher.update(data[start:end])
            state = hasher.state()
        assert ResumableSha256(state).hexdigest() == hashlib.sha256(data).hexdigest()


def test_digest_does_not_consume_the_state() -> None:
    hasher = ResumableSha256()
    hasher.update(b"abc")
    assert hasher.hexdigest() == hashlib.sha256(b"abc").hexdigest()
    hasher.update(b"def")
    assert hasher.hexdigest() == hashlib.sha256(b"abcdef").hexdigest()


def test_refuses_what_is_not_a_state() -> None:
    with pytest.raises(ValueError):
        ResumableSha256(b"too short")
