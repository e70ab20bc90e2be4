"""Signed notes, checkpoints and cosignatures against the reference implementations' own test
vectors: Go's golang.org/x/mod/sumdb/note (note_test.go), transparency-dev/formats
(log/checkpoint_test.go, note/note_cosigv1_test.go) and the C2SP specifications' examples; and
cosignatures checked by a second Ed25519 implementation (OpenSSL, through `cryptography`)."""

from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.signing import SigningKey

from shared.notes import (
    COSIGNATURE_V1,
    ED25519,
    Checkpoint,
    Note,
    NoteError,
    NoteSigner,
    Signature,
    VerifierKey,
    cosigned_message,
)
from shared.signatures import b64decode, public_key_of
from shared.witness import LogHead, open_head

# golang.org/x/mod/sumdb/note, note_test.go: TestSign, TestOpen.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIGNED = (
    GO_TEXT + "\n"
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfq"
    "dngotpRZb6KE6RyyBwJnAM=\n"
)
GO_ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwn"
    "WLox33WWd1RvMc+QQ=\n"
)
# c2sp.org/signed-note, "Verifier keys", Example.
C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = (
    "This is an example message.\n\n"
    "— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mF"
    "XmRKuwHjG1Yu72IneyaQM=\n"
)


def _go_signer() -> NoteSigner:
    material = b64decode(GO_SKEY.split("+", 4)[4])
    assert material[0] == ED25519
    return NoteSigner("PeterNeumann", SigningKey(material[1:]))


def test_signing_a_note_gives_go_s_bytes() -> None:
    signer = _go_signer()
    assert str(signer.verifier) == GO_VKEY
    note = Note(GO_TEXT, (signer.sign(GO_TEXT),))
    assert str(note) == GO_SIGNED


def test_opening_notes_as_go_and_c2sp_write_them() -> None:
    peter, enoch = VerifierKey.parse(GO_VKEY), VerifierKey.parse(GO_ENOCH_VKEY)
    both = Note.parse(GO_SIGNED + GO_ENOCH_SIG)
    assert both.text == GO_TEXT
    assert [s.name for _, s in both.verified_by([peter])] == ["PeterNeumann"]
    assert len(both.verified_by([peter, enoch])) == 2
    assert both.verified_by([VerifierKey.parse(C2SP_VKEY)]) == []  # unknown keys: ignored
    example = Note.parse(C2SP_NOTE)
    assert example.verified_by([VerifierKey.parse(C2SP_VKEY)])
    tampered = Note.parse(C2SP_NOTE.replace("example message", "example massage"))
    with pytest.raises(NoteError, match="does not verify"):
        tampered.verified_by([VerifierKey.parse(C2SP_VKEY)])


@pytest.mark.parametrize(
    "vkey",
    [
        GO_VKEY,
        GO_ENOCH_VKEY,
        C2SP_VKEY,
        # transparency-dev/formats note_cosigv1_test.go: a native cosignature/v1 key.
        "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
        "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6",  # base64 with a plus
    ],
)
def test_verifier_keys_and_their_hashes(vkey: str) -> None:
    key = VerifierKey.parse(vkey)
    assert str(key) == vkey
    assert key.key_type in (ED25519, COSIGNATURE_V1)


@pytest.mark.parametrize(
    "vkey",
    [
        "rekor.sigstore.dev+12345678+THIS_IS_NOT_BASE64!",
        "rekor.sigstore.dev+00000000+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # wrong hash
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # unknown type
        "bananas.sigstore.dev+12344556",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        GO_VKEY[:-2],
    ],
)
def test_malformed_verifier_keys_are_refused(vkey: str) -> None:
    with pytest.raises(NoteError):
        VerifierKey.parse(vkey)


def test_checkpoint_text_as_transparency_dev_marshals_it() -> None:
    # transparency-dev/formats log/checkpoint_test.go, TestMarshal.
    assert Checkpoint("Log", 123, b"bananas".ljust(32, b"\0")).text().startswith("Log\n123\n")
    assert Checkpoint.parse("Log\n123\n" + "A" * 43 + "=\n").size == 123
    # c2sp.org/tlog-checkpoint's example.
    example = (
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    parsed = Checkpoint.parse(example)
    assert (parsed.origin, parsed.size) == ("example.com/behind-the-sofa", 20852163)
    assert parsed.text() == example
    for bad in (
        "Log\n0123\n" + "A" * 43 + "=\n",  # leading zero
        "Log\n-1\n" + "A" * 43 + "=\n",
        "Log\n12\nYmFuYW5hcw==\n",  # not 32 bytes
        "Log\n12\n" + "A" * 43 + "=\n\n",  # empty extension line
        "Log\n12\n",
    ):
        with pytest.raises(NoteError):
            Checkpoint.parse(bad)


def test_cosignature_timestamp_as_transparency_dev_reads_it() -> None:
    # note_cosigv1_test.go, TestCoSigV1Timestamp "works".
    line = (
        "— w ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOwo"
        "rDcFiEBYJXORmnFBOBA=="
    )
    assert Signature.parse_line(line).timestamp == 1727964367


def test_a_cosignature_verifies_with_another_ed25519_implementation() -> None:
    """cosignature/v1 as c2sp.org/tlog-cosignature writes it, checked with OpenSSL's Ed25519
    over the message rebuilt from the specification's text, not from our code."""
    log = NoteSigner("temoin.example/audit", SigningKey(b"L" * 32))
    text = LogHead("temoin.example/audit", 40, b"r" * 32, 1767225600, 37, b"p" * 32)
    body = text.checkpoint().text()
    witness = NoteSigner("dpo.example/witness", SigningKey(b"W" * 32), COSIGNATURE_V1)
    line = witness.sign(body, timestamp=1767225660).line()
    raw = b64decode(line.split(" ")[2].rstrip("\n"))
    key_hash = hashlib.sha256(b"dpo.example/witness\n\x04" + bytes(witness.key.verify_key))
    assert raw[:4] == key_hash.digest()[:4]
    (timestamp,) = struct.unpack(">Q", raw[4:12])
    assert timestamp == 1767225660
    message = (
        b"cosignature/v1\ntime 1767225660\n"
        b"temoin.example/audit\n40\n"
        b"cnJycnJycnJycnJycnJycnJycnJycnJycnJycnJycnI=\n"
        b"time 1767225600\nprevious 37 cHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHA=\n"
    )
    assert message == cosigned_message(body, timestamp)
    Ed25519PublicKey.from_public_bytes(bytes(witness.key.verify_key)).verify(raw[12:], message)
    # And the whole cosigned checkpoint opens with both keys, as a Go client would open it.
    note = Note(body, (log.sign(body),)).with_signatures(Signature.parse_line(line))
    assert len(Note.parse(str(note)).verified_by([log.verifier, witness.verifier])) == 2


# Made by tests/vectors/go_crosscheck.go: Go's note.Sign with the vault's development key, and
# a cosignature/v1 by Go's crypto/ed25519 as transparency-dev/formats builds it.
GO_CHECKPOINT = (
    "temoin.invalid/dev/audit\n40\n+pf8SFVo61sI3TN5R2ANkoqXMHWqzY8eHn0X5RZ2zbk=\n"
    "time 1767261600\nprevious 37 sDkr5L0hW4B7mvGpVnvXGaodv4ecqMweR+P3KSdqVnY=\n\n"
    "— temoin.invalid/dev/audit v6z3rkn/YX7kDr1Kl+aPWGVTpLpZX/Xsa7ykjbsD0EIBFy85ECnGxlXTM8G"
    "uiL+aCCMayMVEPRkA5bv/PmOi+xub1Q0=\n"
)
GO_COSIGNATURE = (
    "— dpo.mairie-exemple.fr/temoin-witness EdfVbwAAAABpVkkkvXFUkEXyegrG8fbyX8iFXjrW6f7h5sb7x"
    "akmsjX8m/ur0MWmSRe0ClpSXRDgFf1QO3PpYfngc8o1mspM6lvwBQ==\n"
)


def test_checkpoint_and_cosignature_as_go_makes_them() -> None:
    from services.vault.settings import DEV_AUDIT_ORIGIN, DEV_AUDIT_SIGNING_KEY
    from shared import merkle

    leaves = [merkle.leaf_hash(f"e{i}".encode()) for i in range(40)]
    head = LogHead(
        DEV_AUDIT_ORIGIN, 40, merkle.root_of(leaves), 1767261600, 37, merkle.root_of(leaves[:37])
    )
    body = head.checkpoint().text()
    log = NoteSigner(DEV_AUDIT_ORIGIN, SigningKey(b64decode(DEV_AUDIT_SIGNING_KEY)))
    assert str(Note(body, (log.sign(body),))) == GO_CHECKPOINT
    witness = NoteSigner("dpo.mairie-exemple.fr/temoin-witness", SigningKey(b"W" * 32), 0x04)
    assert witness.sign(body, timestamp=1767262500).line() == GO_COSIGNATURE
    assert open_head(GO_CHECKPOINT, public_key_of(log.key)) == head


def test_temoin_checkpoints_carry_time_and_previous_head() -> None:
    key = SigningKey(b"L" * 32)
    head = LogHead("temoin.example/audit", 40, b"r" * 32, 1767225600, 37, b"p" * 32)
    body = head.checkpoint().text()
    signed = str(Note(body, (NoteSigner("temoin.example/audit", key).sign(body),)))
    assert open_head(signed, public_key_of(key)) == head
    with pytest.raises(NoteError):
        open_head(signed, public_key_of(SigningKey(b"x" * 32)))
    bad = Checkpoint("o", 5, b"r" * 32, ("time 1", "previous 5 " + "A" * 43 + "="))
    with pytest.raises(NoteError, match="smaller than itself"):
        LogHead.from_checkpoint(bad)
