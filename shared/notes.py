"""Signed notes, transparency-log checkpoints and witness cosignatures, as C2SP writes them:
the formats of Go's checksum database, Sigstore and Tessera, so that standard tools can read
the audit log's heads and witnesses can cosign them.

- signed note (c2sp.org/signed-note): a text ending in a newline, a blank line, then
  signature lines ``— <key name> base64(4-byte key hash || signature)``; verifier keys are
  written ``<name>+<hex key hash>+base64(<type byte> || <public key>)``;
- checkpoint (c2sp.org/tlog-checkpoint): a note whose text is the log's origin, its tree
  size, the base64 root hash (RFC 6962/9162), then optional extension lines;
- cosignature/v1 (c2sp.org/tlog-cosignature): a witness's Ed25519 signature over
  ``cosignature/v1\\ntime <T>\\n`` followed by the checkpoint's text, carried as
  ``timestamp (8 bytes, big-endian) || signature`` under key type 0x04.

This module is pure (no I/O, no settings): the vault, ``temoin witness`` and ``temoin audit
verify`` share it.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from shared.signatures import b64decode, b64encode

ED25519 = 0x01  # an Ed25519 signature over the note's text
COSIGNATURE_V1 = 0x04  # a timestamped Ed25519 cosignature of a checkpoint

SIGNATURE_PREFIX = "\u2014 "  # em dash, space
COSIGNATURE_HEADER = "cosignature/v1"
MAX_SIGNATURES = 64  # the spec asks verifiers to accept at least 16
EMPTY_ROOT = hashlib.sha256(b"").digest()

_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


class NoteError(ValueError):
    """Text that is not a well-formed note, checkpoint or key."""


def valid_name(name: str) -> bool:
    """Key names and origins: non-empty, no Unicode space, no plus sign."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_hash(name: str, key_type: int, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || type || public key)[:4]: the key id of signature lines."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([key_type]) + public_key).digest()[:4]


def cosigned_message(text: str, timestamp: int) -> bytes:
    """What an Ed25519 cosignature/v1 signs: two header lines, then the checkpoint's text."""
    return f"{COSIGNATURE_HEADER}\ntime {timestamp}\n{text}".encode()


@dataclass(frozen=True)
class VerifierKey:
    """A public key as signed notes name it (a "vkey")."""

    name: str
    key_type: int
    public_key: bytes

    @property
    def key_hash(self) -> bytes:
        return key_hash(self.name, self.key_type, self.public_key)

    def __str__(self) -> str:
        encoded = b64encode(bytes([self.key_type]) + self.public_key)
        return f"{self.name}+{self.key_hash.hex()}+{encoded}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        parts = text.strip().split("+", 2)  # base64 may hold plus signs
        if len(parts) != 3 or not valid_name(parts[0]) or len(parts[1]) != 8:
            raise NoteError(f"not a verifier key (name+hash+base64): {text!r}")
        name, hash_hex, encoded = parts
        try:
            material = b64decode(encoded)
            claimed = bytes.fromhex(hash_hex)
        except ValueError as exc:
            raise NoteError(f"not a verifier key: {text!r}") from exc
        if len(material) != 33 or material[0] not in (ED25519, COSIGNATURE_V1):
            raise NoteError(f"verifier key {name}: only Ed25519 keys (type 0x01, 0x04)")
        key = cls(name=name, key_type=material[0], public_key=material[1:])
        if key.key_hash != claimed:
            raise NoteError(f"verifier key {name}: its hash does not match the key")
        return key

    def verify(self, text: str, signature: bytes) -> bool:
        """Whether ``signature`` (without the key hash) signs ``text`` under this key."""
        if self.key_type == COSIGNATURE_V1:
            if len(signature) != 8 + 64:
                return False
            (timestamp,) = struct.unpack(">Q", signature[:8])
            message, signature = cosigned_message(text, timestamp), signature[8:]
        else:
            message = text.encode()
        try:
            VerifyKey(self.public_key).verify(message, signature)
        except (BadSignatureError, ValueError):
            return False
        return True


def parse_keys(text: str) -> tuple[VerifierKey, ...]:
    """Verifier keys separated by commas, spaces or newlines (a setting's value)."""
    return tuple(VerifierKey.parse(part) for part in re.split(r"[\s,]+", text.strip()) if part)


@dataclass(frozen=True)
class Signature:
    name: str
    key_hash: bytes
    signature: bytes

    def line(self) -> str:
        return f"{SIGNATURE_PREFIX}{self.name} {b64encode(self.key_hash + self.signature)}\n"

    @classmethod
    def parse_line(cls, line: str) -> Signature:
        line = line.removesuffix("\n")
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError("a signature line starts with an em dash and a space")
        name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
        if not valid_name(name) or " " in encoded:
            raise NoteError("malformed signature line")
        try:
            raw = b64decode(encoded)
        except ValueError as exc:
            raise NoteError("signature line: not base64") from exc
        if len(raw) < 5:
            raise NoteError("signature line: too short")
        return cls(name=name, key_hash=raw[:4], signature=raw[4:])

    def is_by(self, key: VerifierKey) -> bool:
        return self.name == key.name and self.key_hash == key.key_hash

    @property
    def timestamp(self) -> int:
        """A cosignature/v1's time (POSIX seconds)."""
        if len(self.signature) != 8 + 64:
            raise NoteError("not a cosignature/v1")
        (value,) = struct.unpack(">Q", self.signature[:8])
        return int(value)


@dataclass(frozen=True)
class Note:
    text: str
    signatures: tuple[Signature, ...] = ()

    def __str__(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)

    @classmethod
    def parse(cls, message: str) -> Note:
        if _CONTROL.search(message):
            raise NoteError("a note holds no control character but newlines")
        if not message.endswith("\n"):
            raise NoteError("a note ends with a newline")
        split = message.rfind("\n\n")
        if split < 0:
            raise NoteError("a note's signatures follow a blank line")
        text, block = message[: split + 1], message[split + 2 :]
        lines = block.splitlines()
        if not lines or len(lines) > MAX_SIGNATURES:
            raise NoteError("a note has from 1 to 64 signature lines")
        return cls(text=text, signatures=tuple(Signature.parse_line(line) for line in lines))

    def verified_by(self, keys: Iterable[VerifierKey]) -> list[tuple[VerifierKey, Signature]]:
        """The signatures from ``keys``, each checked; one that fails makes the note invalid
        (NoteError), as the spec asks. Signatures from other keys are ignored."""
        found = []
        for key in keys:
            for signature in self.signatures:
                if signature.is_by(key):
                    if not key.verify(self.text, signature.signature):
                        raise NoteError(f"the signature of {key.name} does not verify")
                    found.append((key, signature))
        return found

    def with_signatures(self, *signatures: Signature) -> Note:
        return Note(self.text, self.signatures + tuple(signatures))


@dataclass(frozen=True)
class NoteSigner:
    """An Ed25519 key that signs notes (type 0x01) or cosigns checkpoints (type 0x04)."""

    name: str
    key: SigningKey
    key_type: int = ED25519

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise NoteError(f"invalid key name {self.name!r}: no space, no plus sign")

    @property
    def verifier(self) -> VerifierKey:
        return VerifierKey(self.name, self.key_type, bytes(self.key.verify_key))

    def sign(self, text: str, *, timestamp: int | None = None) -> Signature:
        if self.key_type == COSIGNATURE_V1:
            if timestamp is None:
                raise ValueError("a cosignature needs its timestamp")
            raw = self.key.sign(cosigned_message(text, timestamp)).signature
            raw = struct.pack(">Q", timestamp) + raw
        else:
            raw = self.key.sign(text.encode()).signature
        return Signature(self.name, self.verifier.key_hash, raw)


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head as a checkpoint's text (without signatures)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = field(default=())

    def text(self) -> str:
        lines = [self.origin, str(self.size), b64encode(self.root), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise NoteError("a checkpoint's text ends with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or not all(lines):
            raise NoteError("a checkpoint has an origin, a size, a root hash, no empty line")
        origin, size, root, *extensions = lines
        if not re.fullmatch(r"0|[1-9][0-9]{0,18}", size):
            raise NoteError("a checkpoint's size is a decimal number without leading zero")
        try:
            digest = b64decode(root)
        except ValueError as exc:
            raise NoteError("a checkpoint's root hash is base64") from exc
        if len(digest) != 32:
            raise NoteError("a checkpoint's root hash is 32 bytes")
        return cls(origin=origin, size=int(size), root=digest, extensions=tuple(extensions))


__all__ = [
    "COSIGNATURE_V1",
    "ED25519",
    "EMPTY_ROOT",
    "Checkpoint",
    "Note",
    "NoteError",
    "NoteSigner",
    "Signature",
    "VerifierKey",
    "cosigned_message",
    "key_hash",
    "parse_keys",
    "valid_name",
]
