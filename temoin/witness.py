"""`temoin witness`: what the DPO, the préfecture or a court runs on its own machine to witness
the audit log (C2SP tlog-cosignature).

The witness keeps a state file: its own Ed25519 key and name, the log's key, and the last
checkpoint it cosigned. Each run pulls the vault's latest checkpoint, checks the log's
signature, checks that it extends the checkpoint it holds (an RFC 9162 consistency proof from
the vault, checked here), cosigns it (cosignature/v1, timestamped) and sends the cosignature
back. A checkpoint that does not extend the one it holds (a log cut short or rewritten) is
refused, kept in the state file as evidence, and never cosigned.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from nacl.signing import SigningKey

from shared import merkle
from shared.notes import (
    COSIGNATURE_V1,
    Checkpoint,
    Note,
    NoteError,
    NoteSigner,
    VerifierKey,
)
from shared.signatures import b64decode, b64encode
from shared.witness import LogHead
from temoin.station import problem


class WitnessError(Exception):
    """The witness could not do its work (unreadable state, vault unreachable, refusal)."""


class Refused(WitnessError):
    """The log's checkpoint does not extend the one this witness cosigned last: not cosigned."""


@dataclass
class WitnessState:
    name: str
    key: SigningKey
    log_key: VerifierKey
    checkpoint: str | None = None  # the last checkpoint cosigned, as a signed note
    refused: list[dict[str, Any]] = field(default_factory=list)

    @property
    def signer(self) -> NoteSigner:
        return NoteSigner(self.name, self.key, COSIGNATURE_V1)

    @property
    def held(self) -> Checkpoint | None:
        return (
            None if self.checkpoint is None else Checkpoint.parse(Note.parse(self.checkpoint).text)
        )

    @classmethod
    def create(cls, path: Path, name: str, log_key: str) -> WitnessState:
        try:
            state = cls(name=name, key=SigningKey.generate(), log_key=VerifierKey.parse(log_key))
            state.signer  # noqa: B018  (checks the name)
        except NoteError as exc:
            raise WitnessError(str(exc)) from exc
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise WitnessError(f"{path} exists: a witness keeps its key") from exc
        with os.fdopen(fd, "w") as handle:
            json.dump(state._data(), handle, indent=2)
        return state

    @classmethod
    def load(cls, path: Path) -> WitnessState:
        try:
            data = json.loads(path.read_text())
            return cls(
                name=data["name"],
                key=SigningKey(b64decode(data["private_key"])),
                log_key=VerifierKey.parse(data["log_key"]),
                checkpoint=data.get("checkpoint"),
                refused=list(data.get("refused", [])),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WitnessError(f"cannot read the witness state {path}: {exc}") from exc

    def _data(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "private_key": b64encode(bytes(self.key)),
            "verifier_key": str(self.signer.verifier),
            "log_key": str(self.log_key),
            "checkpoint": self.checkpoint,
            "refused": self.refused,
        }

    def save(self, path: Path) -> None:
        """Written whole then renamed: a crash leaves the old state or the new, never half."""
        partial = path.with_name(path.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self._data(), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)


def check_checkpoint(
    state: WitnessState, note_text: str, consistency: list[bytes] | None
) -> tuple[Note, Checkpoint]:
    """The vault's checkpoint, if signed by the log's key and consistent with the one held
    (``consistency``: the RFC 9162 proof from the held size to the new one). Raises Refused."""
    try:
        received = Note.parse(note_text)
        signed = received.verified_by([state.log_key])
        if not signed:
            raise Refused("the checkpoint is not signed by the log's key")
        # Kept with the log's signature only: other witnesses' cosignatures are theirs.
        note = Note(received.text, tuple(signature for _, signature in signed))
        checkpoint = Checkpoint.parse(note.text)
        chain = LogHead.from_checkpoint(checkpoint)
    except NoteError as exc:
        raise Refused(f"not a valid checkpoint of the log: {exc}") from exc
    if checkpoint.origin != state.log_key.name:
        raise Refused(f"a checkpoint of another log ({checkpoint.origin})")
    held = state.held
    if held is None:
        return note, checkpoint
    if checkpoint.size < held.size:
        raise Refused(f"the log shrank: {checkpoint.size} entries, {held.size} cosigned before")
    if checkpoint.size == held.size:
        if checkpoint.root != held.root:
            raise Refused(f"the tree of size {held.size} has another root: the log was rewritten")
        return note, checkpoint
    if chain.previous_size == held.size and chain.previous_root != held.root:
        raise Refused(f"its previous head {held.size} is not the one cosigned: rewritten")
    if consistency is None or not merkle.verify_consistency(
        held.size, checkpoint.size, held.root, checkpoint.root, consistency
    ):
        raise Refused(
            f"the tree of size {checkpoint.size} does not extend the one of size {held.size} "
            "cosigned before (consistency proof fails): the log was rewritten"
        )
    return note, checkpoint


def cosign(state: WitnessState, path: Path, client: httpx.Client) -> tuple[Checkpoint, int]:
    """One witnessing round against the vault ``client`` reaches (authenticated)."""
    response = client.get("/v1/audit/checkpoint")
    if response.status_code != 200:
        raise WitnessError(f"cannot read the checkpoint: {problem(response)}")
    note_text = response.text
    proof: list[bytes] | None = None
    held = state.held
    try:
        size = Checkpoint.parse(Note.parse(note_text).text).size
    except NoteError as exc:
        raise Refused(f"not a checkpoint: {exc}") from exc
    if held is not None and 0 < held.size < size:
        answer = client.get("/v1/audit/consistency", params={"first": held.size, "second": size})
        if answer.status_code == 200:
            proof = [bytes.fromhex(h) for h in answer.json()["proof"]]
        elif answer.status_code != 404:  # 404: a head gone, which the check below refuses
            raise WitnessError(f"cannot read the consistency proof: {problem(answer)}")
    try:
        note, checkpoint = check_checkpoint(state, note_text, proof)
    except Refused as refusal:
        state.refused.append(
            {
                "at": datetime.now(UTC).isoformat(),
                "reason": str(refusal),
                "checkpoint": note_text,
                "held": state.checkpoint,
                "proof": None if proof is None else [h.hex() for h in proof],
            }
        )
        state.save(path)
        raise
    timestamp = int(time.time())
    cosignature = state.signer.sign(note.text, timestamp=timestamp)
    # Held before it is sent: the witness never cosigns a smaller tree after this one.
    state.checkpoint = str(note.with_signatures(cosignature))
    state.save(path)
    sent = client.post(
        "/v1/audit/cosignatures",
        json={"tree_size": checkpoint.size, "cosignature": cosignature.line().rstrip("\n")},
    )
    if sent.status_code != 201:
        raise WitnessError(f"the vault did not take the cosignature: {problem(sent)}")
    return checkpoint, timestamp
