"""Extraction packages: a BagIt bag (RFC 8493) in a zip, signed, that anyone can check
offline (`temoin verify`, docs/extraction.md).

    {bag}/bagit.txt
    {bag}/bag-info.txt                organisation, procedure, requester, date, Payload-Oxum
    {bag}/data/{clip}                 the clip, byte for byte as the dock uploaded it
    {bag}/data/metadata.json          the registry's record of it (R241-10)
    {bag}/data/audit.json             its audit entries, each with an inclusion proof against
                                      a signed tree head of the vault's log
    {bag}/data/receipt.json           the receipt ingest signed for it, when on file
    {bag}/manifest-sha256.txt         every payload file
    {bag}/tagmanifest-sha256.txt      bagit.txt, bag-info.txt, manifest-sha256.txt
    {bag}/signature.json              Ed25519 over "temoin-package-v1\\n" + tagmanifest bytes

The zip is written as a stream (stored, zip64, data descriptors): no part of it is ever whole
in memory or on disk, and the clip's SHA-256 is computed as it goes.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from nacl.signing import SigningKey

from shared import strictzip
from shared.receipts import receipt_digest, receipt_is_valid
from shared.signatures import b64encode, key_id, public_key_of, verify
from shared.witness import inclusion_problems

SIGNATURE_CONTEXT = b"temoin-package-v1\n"
BAGIT_TXT = b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"


DERIVATION_CONTEXT = b"temoin-derivation-v1\n"


def _canonical(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_derivation(record: Mapping[str, Any], signer: SigningKey) -> dict[str, Any]:
    """A training package's derivation record (data/derivation.json) with the vault's
    signature over "temoin-derivation-v1\n" + the record's canonical JSON (sorted keys, no
    spaces, UTF-8)."""
    public_key = public_key_of(signer)
    return {
        "record": dict(record),
        "signature": {
            "algorithm": "Ed25519",
            "key_id": key_id(public_key),
            "public_key": public_key,
            "signed": "temoin-derivation-v1\\n + the record's canonical JSON",
            "signature": b64encode(signer.sign(DERIVATION_CONTEXT + _canonical(record)).signature),
        },
    }


class ClipMismatch(Exception):
    """The clip read back does not hash to the registry's SHA-256: the package is void."""


def _info_text(info: Iterable[tuple[str, str]]) -> bytes:
    lines = []
    for label, value in info:
        flat = " ".join(str(value).split())  # one line per element (RFC 8493 2.2.2)
        lines.append(f"{label}: {flat}\n")
    return "".join(lines).encode()


def write_package(
    out: IO[bytes],
    *,
    bag: str,
    info: list[tuple[str, str]],
    clip_name: str,
    clip: Iterable[bytes | memoryview],
    clip_size: int,
    clip_sha256: str,
    files: Mapping[str, bytes],
    signer: SigningKey,
) -> None:
    """Write the package to ``out`` (any writable stream, seekable or not). ``files`` are
    the other payload files, by name under data/. Raises ClipMismatch (after writing the
    clip) if the clip's bytes do not hash to ``clip_sha256``."""
    payload: list[tuple[str, str]] = []  # (sha256, path)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:

        def put(path: str, data: bytes) -> str:
            archive.writestr(f"{bag}/{path}", data)
            return hashlib.sha256(data).hexdigest()

        digest = hashlib.sha256()
        size = 0
        entry = zipfile.ZipInfo(f"{bag}/data/{clip_name}")
        entry.compress_type = zipfile.ZIP_STORED
        with archive.open(entry, "w", force_zip64=True) as handle:
            for piece in clip:
                digest.update(piece)
                size += len(piece)
                handle.write(piece)
        if digest.hexdigest() != clip_sha256 or size != clip_size:
            raise ClipMismatch("the clip read back differs from the registry: package void")
        payload.append((clip_sha256, f"data/{clip_name}"))
        for name, data in files.items():
            payload.append((put(f"data/{name}", data), f"data/{name}"))

        octets = clip_size + sum(len(data) for data in files.values())
        info = [*info, ("Payload-Oxum", f"{octets}.{len(payload)}")]
        manifest = "".join(f"{h}  {p}\n" for h, p in payload).encode()
        tags = [
            (put("bagit.txt", BAGIT_TXT), "bagit.txt"),
            (put("bag-info.txt", _info_text(info)), "bag-info.txt"),
            (put("manifest-sha256.txt", manifest), "manifest-sha256.txt"),
        ]
        tagmanifest = "".join(f"{h}  {p}\n" for h, p in tags).encode()
        put("tagmanifest-sha256.txt", tagmanifest)
        public_key = public_key_of(signer)
        signature = {
            "algorithm": "Ed25519",
            "key_id": key_id(public_key),
            "public_key": public_key,
            "signed": "temoin-package-v1\\n + tagmanifest-sha256.txt",
            "signature": b64encode(signer.sign(SIGNATURE_CONTEXT + tagmanifest).signature),
        }
        put("signature.json", json.dumps(signature, indent=2).encode())


# --- checking a package offline ---------------------------------------------------------------
#
# The zip itself is read by shared/strictzip.py, which refuses any archive two readers could
# see differently. Then the bag's rules (one bag directory, every file listed in a manifest and
# matching it), the vault's signature over the tag manifest, the receipt, the audit proofs,
# and finally what each of them states about the recording, which must agree.

TAG_FILES = ("bagit.txt", "bag-info.txt", "manifest-sha256.txt")  # the tag manifest lists them
SIGNATURE_FILES = ("tagmanifest-sha256.txt", "signature.json")  # the signature's own files
METADATA, AUDIT, RECEIPT = "data/metadata.json", "data/audit.json", "data/receipt.json"
DERIVATION = "data/derivation.json"  # a training package's signed derivation record
DOCUMENTS = (METADATA, AUDIT, RECEIPT, DERIVATION)
# What a training package's metadata.json may state: nothing that names the wearer, the
# camera or the place (R241-12: training copies are anonymised).
TRAINING_METADATA = {"derivative_id", "day", "duration_s", "procedure", "content_type"}
MAX_DOCUMENT = 64 << 20  # the largest tag file or JSON document read into memory
_DIGEST_LINE = re.compile(r"([0-9a-f]{64})[ \t]+(.+)")
_CLIP_NAME = re.compile(r"data/([0-9a-f-]{36})\.[A-Za-z0-9]{1,8}")


@dataclass(frozen=True)
class Problem:
    """One refusal: what it concerns (a member, a file, a field), the rule, what was found."""

    subject: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{strictzip.shown(self.subject)}: {self.detail} [{self.rule}]"


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # What was checked only with a key the package carries itself: proves integrity, not who
    # made it. Empty when every key was given by the checker.
    unauthenticated: list[str] = field(default_factory=list)
    clip_sha256: str | None = None

    @property
    def valid(self) -> bool:
        """Nothing refused (integrity; see ``authenticated`` for origin)."""
        return not self.problems

    @property
    def authenticated(self) -> bool:
        """Nothing refused, and every signature checked with a key the checker gave."""
        return self.valid and not self.unauthenticated

    def refuse(self, subject: str, rule: str, detail: str) -> None:
        self.problems.append(Problem(subject, rule, detail))


def verify_package(
    path: Path,
    *,
    vault_key: str | None = None,
    receipt_key: str | None = None,
    audit_key: str | None = None,
    original_receipt: Mapping[str, Any] | None = None,
) -> Report:
    """Check a package offline (docs/extraction.md): the zip, the bag, the vault's signature,
    the receipt, each audit entry's inclusion proof, and that metadata, collecte entry and
    receipt agree. ``vault_key``, ``receipt_key`` and ``audit_key`` (base64 Ed25519) are the
    keys the checker trusts; ``audit_key`` defaults to ``vault_key`` (the vault signs its
    packages and its log's tree heads with one key). A key not given is taken from the
    package, which proves integrity, not origin: ``Report.unauthenticated`` says what.
    ``original_receipt``, for a training package: the receipt of the original recording (from
    its own package), checked against the digest the derivation record names
    (docs/training-copies.md)."""
    report = Report()
    archive, refusals = strictzip.open_zip(path)
    if archive is None:
        # Nothing is hashed from an archive two readers could see differently.
        for refusal in refusals:
            report.refuse(refusal.member, refusal.rule, refusal.detail)
        return report
    with archive:
        _PackageCheck(archive, report).run(vault_key, receipt_key, audit_key, original_receipt)
    return report


class _PackageCheck:
    def __init__(self, archive: strictzip.StrictZip, report: Report) -> None:
        self.archive = archive
        self.report = report
        self.bag = ""
        self.files: dict[str, strictzip.ZipMember] = {}  # by path inside the bag
        self.documents: dict[str, bytes | None] = {}  # the small files, as read and hashed
        self.sizes: dict[str, int] = {}

    def refuse(self, subject: str, rule: str, detail: str) -> None:
        self.report.refuse(subject, rule, detail)

    def run(
        self,
        vault_key: str | None,
        receipt_key: str | None,
        audit_key: str | None,
        original_receipt: Mapping[str, Any] | None = None,
    ) -> None:
        if not self._layout():
            return
        manifests = self._manifests()
        if manifests is None:
            return
        payload, tags = manifests
        self._listed_only(payload, tags)
        self._hash(payload, tags)
        info = self._bag_info(payload)
        carried = self._signature(vault_key)
        clip = self._clip(payload)
        if clip is None:
            return
        documents = {name: self._json(name) for name in DOCUMENTS}
        log_key = audit_key or vault_key or carried or ""
        if audit_key is None and vault_key is None:
            self.report.unauthenticated.append(
                "the audit proofs' tree heads: checked with the key the package carries"
            )
        if DERIVATION in payload or info.get("Temoin-Procedure-Type") == "formation":
            _Training(self).check(documents, info, clip, vault_key or carried or "", log_key)
            _Training(self).receipt_link(documents, original_receipt, receipt_key)
            return
        if original_receipt is not None:
            self.report.notes.append(
                "the receipt given (--receipt) was not used: it is for a training package; "
                "this package carries its original's receipt itself"
            )
        receipt = documents[RECEIPT]
        self._receipt(receipt, receipt_key)
        collecte = self._audit(documents[AUDIT], log_key, clip)
        _Claims(self.report).check(
            clip=clip,
            info=info,
            metadata=documents[METADATA],
            collecte=collecte,
            receipt=receipt,
        )

    # --- the bag's layout ---------------------------------------------------------------

    def _layout(self) -> bool:
        """One bag directory holding everything; returns False when nothing more is worth
        checking."""
        members = self.archive.members
        bags = [m.name[: -len("/bagit.txt")] for m in members if m.name.endswith("/bagit.txt")]
        if len(bags) != 1 or "/" in bags[0]:
            self.refuse(
                "(package)",
                "bag-layout",
                f"a package holds exactly one bag directory with its bagit.txt; found {bags}",
            )
            return False
        self.bag = bags[0]
        prefix = f"{self.bag}/"
        for member in members:
            if member.name == prefix:
                continue
            if not member.name.startswith(prefix):
                self.refuse(member.name, "bag-outside", f"outside the bag directory {self.bag!r}")
                continue
            self.files[member.name[len(prefix) :]] = member
        return True

    def _manifests(self) -> tuple[dict[str, str], dict[str, str]] | None:
        for name in (*TAG_FILES, *SIGNATURE_FILES):
            member = self.files.get(name)
            if member is None or member.is_directory:
                self.refuse(f"{self.bag}/{name}", "bag-missing", "a required file is missing")
        if self.report.problems:
            return None
        payload = self._manifest("manifest-sha256.txt", tag=False)
        tags = self._manifest("tagmanifest-sha256.txt", tag=True)
        for name in TAG_FILES:
            if name not in tags:
                self.refuse(
                    f"{self.bag}/tagmanifest-sha256.txt",
                    "tagmanifest-scope",
                    f"does not list {name}: the signature would not cover it",
                )
        return payload, tags

    def _manifest(self, name: str, *, tag: bool) -> dict[str, str]:
        """path -> SHA-256, refusing what a bag's manifest may not hold (RFC 8493 2.1.3)."""
        subject = f"{self.bag}/{name}"
        text = self._document(name)
        if text is None:
            return {}
        try:
            lines = text.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            self.refuse(subject, "manifest-syntax", "not UTF-8")
            return {}
        if lines[-1] != "":
            self.refuse(subject, "manifest-syntax", "its last line does not end")
        entries: dict[str, str] = {}
        keys: dict[str, str] = {}
        for number, line in enumerate(lines[:-1], 1):
            match = _DIGEST_LINE.fullmatch(line)
            if match is None:
                self.refuse(subject, "manifest-syntax", f"line {number} is not `sha256  path`")
                continue
            digest, listed = match.groups()
            listed = (
                listed.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")
            )  # RFC 8493 2.1.3
            refused = strictzip.name_problems(listed)
            for rule, detail in refused:
                self.refuse(subject, rule, f"line {number} lists {listed!r}: {detail}")
            if refused:
                continue
            if listed.startswith("data/") == tag or listed in SIGNATURE_FILES:
                what = "payload manifest lists a tag file" if not tag else "lists a payload file"
                self.refuse(subject, "manifest-scope", f"{what} or the signature's: {listed!r}")
                continue
            key = strictzip.name_key(listed)
            if key in keys:
                self.refuse(
                    subject, "manifest-duplicate", f"lists {listed!r} twice ({keys[key]!r})"
                )
                continue
            keys[key] = listed
            entries[listed] = digest
        return entries

    def _listed_only(self, payload: Mapping[str, str], tags: Mapping[str, str]) -> None:
        """Every member is a listed file, a signature file, or a directory that holds one."""
        listed = {*payload, *tags, *SIGNATURE_FILES}
        directories = {""}
        for name in listed:
            parts = name.split("/")[:-1]
            directories |= {"/".join(parts[: i + 1]) + "/" for i in range(len(parts))}
        for name, member in self.files.items():
            subject = f"{self.bag}/{name}"
            if member.is_directory:
                if name.rstrip("/") in listed:
                    self.refuse(subject, "bag-directory", "a directory where a file is expected")
                elif name not in directories:
                    self.refuse(subject, "bag-directory", "a directory holding no listed file")
            elif name not in listed:
                where = "payload manifest" if name.startswith("data/") else "tag manifest"
                self.refuse(subject, "bag-unlisted", f"a file the {where} does not list")
        for name, manifest in (("manifest", payload), ("tag manifest", tags)):
            for listed_name in manifest:
                found = self.files.get(listed_name)
                if found is None or found.is_directory:
                    self.refuse(
                        f"{self.bag}/{listed_name}",
                        "manifest-missing",
                        f"listed in the {name} but absent",
                    )

    def _hash(self, payload: Mapping[str, str], tags: Mapping[str, str]) -> None:
        for manifest_name, manifest in (("manifest", payload), ("tag manifest", tags)):
            for name, expected in manifest.items():
                member = self.files.get(name)
                if member is None or member.is_directory:
                    continue
                if name in DOCUMENTS or not name.startswith("data/"):
                    data = self._document(name)
                    if data is None:
                        continue
                    actual, size = hashlib.sha256(data).hexdigest(), len(data)
                else:
                    try:
                        actual, size = self.archive.sha256(member)
                    except strictzip.MemberCorrupt as exc:
                        self.refuse(exc.refusal.member, exc.refusal.rule, exc.refusal.detail)
                        continue
                self.sizes[name] = size
                if actual != expected:
                    self.refuse(
                        f"{self.bag}/{name}",
                        "manifest-digest",
                        f"its SHA-256 differs from the {manifest_name}'s (altered)",
                    )

    def _document(self, name: str) -> bytes | None:
        """A small file, read once (within MAX_DOCUMENT); None (refused) if its bytes are not
        what the archive declares."""
        if name not in self.documents:
            data = None
            try:
                data = self.archive.read_all(self.files[name], MAX_DOCUMENT)
            except strictzip.MemberCorrupt as exc:
                self.refuse(exc.refusal.member, exc.refusal.rule, exc.refusal.detail)
            self.documents[name] = data
        return self.documents[name]

    def _bag_info(self, payload: Mapping[str, str]) -> dict[str, str]:
        if self._document("bagit.txt") != BAGIT_TXT:
            self.refuse(f"{self.bag}/bagit.txt", "bagit-txt", "not BagIt 1.0 in UTF-8")
        subject = f"{self.bag}/bag-info.txt"
        info: dict[str, str] = {}
        text = self._document("bag-info.txt")
        if text is None:
            return info
        try:
            lines = text.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            self.refuse(subject, "bag-info", "not UTF-8")
            lines = []
        for line in lines:
            label, colon, value = line.partition(":")
            if not colon or label != label.strip() or not label:
                self.refuse(subject, "bag-info", f"not a `Label: value` line: {line!r}")
            elif label in info:
                self.refuse(subject, "bag-info", f"{label} given twice: which one holds?")
            else:
                info[label] = value.strip()
        octets = sum(self.sizes.get(name, 0) for name in payload)
        if info.get("Payload-Oxum") != f"{octets}.{len(payload)}":
            self.refuse(subject, "payload-oxum", "Payload-Oxum does not match the payload")
        return info

    # --- signatures ---------------------------------------------------------------------

    def _signature(self, vault_key: str | None) -> str | None:
        """Checks the vault's signature over the tag manifest; returns the key the package
        carries (None if it carries none)."""
        subject = f"{self.bag}/signature.json"
        document, tagmanifest = (
            self._document("signature.json"),
            self._document("tagmanifest-sha256.txt"),
        )
        if document is None or tagmanifest is None:
            return None  # refused as read
        try:
            signature = json.loads(document)
            carried = signature["public_key"]
            value = signature["signature"]
            if signature.get("algorithm") != "Ed25519" or not all(
                isinstance(v, str) for v in (carried, value)
            ):
                raise ValueError("not an Ed25519 signature")
        except (ValueError, KeyError, TypeError) as exc:
            self.refuse(subject, "signature", f"unreadable: {exc}")
            return None
        if vault_key is None:
            self.report.unauthenticated.append(
                "the vault's signature: checked with the key the package carries (key id "
                f"{signature.get('key_id')}), which anyone can put there"
            )
        elif vault_key != carried:
            self.report.notes.append("the package carries another public key than the one given")
        message = SIGNATURE_CONTEXT + tagmanifest
        if not verify(vault_key or carried, message, value):
            self.refuse(
                subject,
                "signature",
                "the vault's signature over the tag manifest does not verify"
                + ("" if vault_key else " (with the key the package carries)"),
            )
        return str(carried)

    def _clip(self, payload: Mapping[str, str]) -> _Clip | None:
        for name in (METADATA, AUDIT):
            if name not in payload:
                self.refuse(f"{self.bag}/{name}", "bag-payload", "a required file is missing")
        clips = [name for name in payload if name not in DOCUMENTS]
        if len(clips) != 1:
            self.refuse(
                f"{self.bag}/data/", "bag-payload", f"a package holds exactly one clip: {clips}"
            )
            return None
        name = clips[0]
        match = _CLIP_NAME.fullmatch(name)
        if match is None or name not in self.sizes:
            if match is None:
                self.refuse(
                    f"{self.bag}/{name}", "bag-payload", "a clip is named {recording id}.{ext}"
                )
            return None
        self.report.clip_sha256 = payload[name]
        return _Clip(name, match.group(1), payload[name], self.sizes[name])

    def _json(self, name: str) -> dict[str, Any] | None:
        document = self._document(name) if name in self.files else None
        if document is None:
            return None
        try:
            value = json.loads(document)
        except ValueError as exc:
            self.refuse(f"{self.bag}/{name}", "json", f"not JSON: {exc}")
            return None
        if not isinstance(value, dict):
            self.refuse(f"{self.bag}/{name}", "json", "not a JSON object")
            return None
        return value

    def _receipt(self, receipt: Mapping[str, Any] | None, receipt_key: str | None) -> None:
        if receipt is None:
            self.report.notes.append("no receipt in the package (none on file for it)")
            return
        if receipt_key is None:
            self.report.unauthenticated.append(
                "the receipt: its signature was not checked (no receipt key given)"
            )
        elif not receipt_is_valid(dict(receipt), receipt_key):
            self.refuse(
                f"{self.bag}/{RECEIPT}", "receipt-signature", "ingest's signature does not verify"
            )

    def _audit(
        self, audit: Mapping[str, Any] | None, log_key: str, clip: _Clip
    ) -> Mapping[str, Any] | None:
        """Checks every proof; returns the recording's one proved collecte entry."""
        subject = f"{self.bag}/{AUDIT}"
        proofs = audit.get("proofs") if audit is not None else None
        if not isinstance(proofs, list):
            self.refuse(subject, "audit", "no list of proofs")
            return None
        collectes = []
        for index, proof in enumerate(proofs):
            where = f"{subject} proofs[{index}]"
            try:
                entry = proof["entry"]
                problems = inclusion_problems(proof, [proof["head"]], log_key)
                recordings = [str(r) for r in entry["recording_ids"]]
                action = entry["action"]
                where = f"{subject} entry {entry.get('entry_id')}"
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                self.refuse(where, "audit-proof", f"a malformed proof ({exc!r})")
                continue
            for problem in problems:
                self.refuse(where, "audit-proof", problem)
            if clip.recording_id not in recordings:
                self.refuse(where, "audit-foreign", "an entry about other recordings")
            elif action == "collecte":
                collectes.append(entry)  # compared below even if its proof failed (refused)
        if len(collectes) != 1:
            self.refuse(
                subject,
                "audit-collecte",
                f"{len(collectes)} collecte entries for recording {clip.recording_id}; a "
                "package carries exactly one, with its proof",
            )
            return None
        collecte: Mapping[str, Any] = collectes[0]
        if collecte.get("outcome") != "success":
            self.refuse(subject, "audit-collecte", "the collecte entry is not a success")
        return collecte


class _Training:
    """A package for training (R241-12): an anonymised copy, never the original. Its
    derivation record must carry the vault's signature and describe this very clip; the
    proved audit entries must be this copy's (demande, end of the job, review, extraction),
    about the original the record names, and the demande must name the original's SHA-256 as
    the record does: that is the link to the original's collecte, which the log holds but the
    package does not carry (it names the wearer, the camera and the place)."""

    def __init__(self, check: _PackageCheck) -> None:
        self.check_ = check
        self.bag = check.bag

    def refuse(self, subject: str, rule: str, detail: str) -> None:
        self.check_.refuse(subject, rule, detail)

    def check(
        self,
        documents: Mapping[str, dict[str, Any] | None],
        info: Mapping[str, str],
        clip: _Clip,
        vault_key: str,
        log_key: str,
    ) -> None:
        subject = f"{self.bag}/{DERIVATION}"
        document = documents.get(DERIVATION)
        if document is None:
            self.refuse(subject, "bag-payload", "a training package carries its derivation record")
            return
        if documents.get(RECEIPT) is not None:
            self.refuse(
                f"{self.bag}/{RECEIPT}",
                "derivation-personal",
                "a training package carries no receipt (it names the wearer and the place)",
            )
        record = document.get("record")
        signature = document.get("signature")
        if not isinstance(record, dict) or not isinstance(signature, dict):
            self.refuse(subject, "derivation", "no record and signature")
            return
        value = signature.get("signature")
        if not isinstance(value, str) or not verify(
            vault_key, DERIVATION_CONTEXT + _canonical(record), value
        ):
            self.refuse(subject, "derivation-signature", "the vault's signature does not verify")
        original = record.get("original") or {}
        derivative = record.get("derivative") or {}
        if not isinstance(original, dict) or not isinstance(derivative, dict):
            self.refuse(subject, "derivation", "no original and derivative in the record")
            return
        for field_name, stated, found in (
            ("derivative.id", derivative.get("id"), clip.recording_id),
            ("derivative.sha256", derivative.get("sha256"), clip.sha256),
            ("derivative.size", derivative.get("size"), clip.size),
            ("Temoin-Derivative-Id", info.get("Temoin-Derivative-Id"), clip.recording_id),
        ):
            if _text(stated) != _text(found):
                self.refuse(
                    field_name,
                    "claims-differ",
                    f"the record or bag-info says {stated!r}, the clip {found!r}",
                )
        metadata = documents.get(METADATA) or {}
        extra = sorted(set(metadata) - TRAINING_METADATA)
        if extra:
            self.refuse(
                f"{self.bag}/{METADATA}",
                "derivation-personal",
                f"a training package states nothing identifying: {extra}",
            )
        self._audit(documents.get(AUDIT), log_key, record, clip)

    def receipt_link(
        self,
        documents: Mapping[str, dict[str, Any] | None],
        receipt: Mapping[str, Any] | None,
        receipt_key: str | None,
    ) -> None:
        """The link to the receipt ingest signed for the original: the record names it by a
        digest (shared/receipts.py receipt_digest) that states nothing of it; the checker who
        holds the receipt (from the original's own package) gives it, and it must be ingest's,
        of the original the record names, and the very one the digest names."""
        report = self.check_.report
        record = (documents.get(DERIVATION) or {}).get("record")
        original = record.get("original") if isinstance(record, dict) else None
        if not isinstance(original, dict):
            return  # refused by check()
        named = original.get("receipt_sha256")
        if named is None:
            report.notes.append(
                "the derivation record names no receipt of the original (none was on file): "
                "the link to the original rests on the audit entries only"
            )
            if receipt is not None:
                self.refuse(
                    "the original's receipt (--receipt)",
                    "receipt-link",
                    "the derivation record names no receipt to compare it with",
                )
            return
        if receipt is None:
            report.notes.append(
                "the link to the original's receipt was NOT checked: the derivation record "
                f"names it by its digest {named}; pass --receipt with the receipt from the "
                "original's own package (data/receipt.json) to check it"
            )
            return
        subject = "the original's receipt (--receipt)"
        refused = len(report.problems)
        if receipt_key is None:
            report.unauthenticated.append(
                "the original's receipt: its signature was not checked (no receipt key given)"
            )
        elif not receipt_is_valid(dict(receipt), receipt_key):
            self.refuse(subject, "receipt-signature", "ingest's signature does not verify")
        for name in ("recording_id", "sha256"):
            if receipt.get(name) != original.get(name):
                self.refuse(
                    subject,
                    "receipt-link",
                    f"it is another recording's: its {name} is {receipt.get(name)!r}, the "
                    f"record's original's {original.get(name)!r}",
                )
        try:
            digest = receipt_digest(receipt)
        except ValueError as exc:
            self.refuse(subject, "receipt-link", str(exc))
            return
        if digest != named:
            self.refuse(
                subject,
                "receipt-link",
                f"not the receipt the record names (its digest is {digest}, the record's "
                f"{named}): another receipt, or one altered",
            )
        if len(report.problems) == refused:
            report.notes.append(
                f"the original's receipt given is the one the derivation record names ({named})"
            )

    def _audit(
        self,
        audit: Mapping[str, Any] | None,
        log_key: str,
        record: Mapping[str, Any],
        clip: _Clip,
    ) -> None:
        subject = f"{self.bag}/{AUDIT}"
        proofs = audit.get("proofs") if audit is not None else None
        if not isinstance(proofs, list):
            self.refuse(subject, "audit", "no list of proofs")
            return
        original = _text(record["original"].get("recording_id"))
        seen: dict[str, list[Mapping[str, Any]]] = {}
        for index, proof in enumerate(proofs):
            where = f"{subject} proofs[{index}]"
            try:
                entry = proof["entry"]
                problems = inclusion_problems(proof, [proof["head"]], log_key)
                recordings = [_text(r) for r in entry["recording_ids"]]
                details = entry.get("details") or {}
                where = f"{subject} entry {entry.get('entry_id')}"
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                self.refuse(where, "audit-proof", f"a malformed proof ({exc!r})")
                continue
            for problem in problems:
                self.refuse(where, "audit-proof", problem)
            if original not in recordings or _text(details.get("derivative")) != clip.recording_id:
                self.refuse(where, "audit-foreign", "an entry about another copy or recording")
                continue
            seen.setdefault(str(entry.get("action")), []).append(entry)

        def one(action: str, check: Callable[[Mapping[str, Any]], bool], what: str) -> None:
            if not any(check(entry) for entry in seen.get(action, [])):
                self.refuse(subject, "audit-derivation", f"no proved {action} entry {what}")

        sha = _text(record["original"].get("sha256"))
        one(
            "derivation_requested",
            lambda e: _text((e.get("details") or {}).get("original_sha256")) == sha,
            "naming the original's SHA-256 as the record does",
        )
        one(
            "derivation_finished",
            lambda e: (
                e.get("outcome") == "success"
                and _text((e.get("details") or {}).get("sha256")) == clip.sha256
            ),
            "saying this copy was made",
        )
        one(
            "derivation_reviewed",
            lambda e: (
                (e.get("details") or {}).get("decision") == "approuve"
                and e.get("actor_subject") == record.get("approved_by")
            ),
            "approving it, by the person the record names",
        )
        one("extraction", lambda e: True, "for this copy")


@dataclass(frozen=True)
class _Clip:
    name: str  # inside the bag
    recording_id: str
    sha256: str
    size: int


# --- what the package's parts state about the recording, which must agree -------------------


def _text(value: Any) -> Any:
    return value


def _identifier(value: Any) -> Any:
    try:
        return str(uuid.UUID(value)) if isinstance(value, str) else value
    except ValueError:
        return value


def _is_identifier(value: Any) -> bool:
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


def _integer(value: Any) -> Any:
    return ("not an integer", value) if isinstance(value, bool | float) else value


def _number(value: Any) -> Any:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _instant(value: Any) -> Any:
    """An ISO 8601 time with its offset, as an instant: the same moment written "Z" or
    "+00:00" agrees; a time without offset agrees with nothing but itself."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
        if moment.tzinfo is not None:
            return moment.astimezone(UTC)
    return value


# How the values of a field compare, for the fields whose form varies; any other field stated
# by two parts compares as an instant if it is one, else exactly.
FIELDS: dict[str, Callable[[Any], Any]] = {
    "recording_id": _identifier,
    "organisation_id": _identifier,
    "station_id": _identifier,
    "camera_id": _identifier,
    "agent_id": _identifier,
    "camera_serial": _text,
    "agent_matricule": _text,
    "sha256": _text,
    "size": _integer,
    "started_at": _instant,
    "ended_at": _instant,
    "received_at": _instant,
    "clock_offset_ms": _integer,
    "pre_record_s": _integer,
    "latitude": _number,
    "longitude": _number,
    "address": _text,
    "intervention_ref": _text,
    "retain_until": _instant,
    "procedure_reference": _text,
    "procedure_type": _text,
}
# Where metadata.json's recording and the collecte entry's details name them differently.
_METADATA_NAMES = {"id": "recording_id"}
_COLLECTE_NAMES = {"camera": "camera_serial", "agent": "agent_matricule", "station": "station_id"}
_RECEIPT_FIELDS = (
    "recording_id",
    "organisation_id",
    "station_id",
    "camera_serial",
    "sha256",
    "size",
    "received_at",
)


def _stated(values: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """The fields a JSON object states (present, even null), renamed by ``names``; a `place`
    object gives latitude, longitude and address."""
    stated = {names.get(k, k): v for k, v in values.items() if k != "place"}
    place = values.get("place", ...)
    if isinstance(place, Mapping):
        stated |= {k: v for k, v in place.items() if k in ("latitude", "longitude", "address")}
    elif place is None:
        stated |= dict.fromkeys(("latitude", "longitude", "address"))
    return stated


class _Claims:
    """Every field stated by more than one part of the package must be the same in all of
    them: the clip itself, bag-info.txt, metadata.json, the proved collecte entry (what the
    vault logged when the clip arrived) and the receipt (what ingest signed then)."""

    def __init__(self, report: Report) -> None:
        self.report = report

    def check(
        self,
        *,
        clip: _Clip,
        info: Mapping[str, str],
        metadata: Mapping[str, Any] | None,
        collecte: Mapping[str, Any] | None,
        receipt: Mapping[str, Any] | None,
    ) -> None:
        sources: dict[str, dict[str, Any]] = {
            "the clip": {
                "recording_id": clip.recording_id,
                "sha256": clip.sha256,
                "size": clip.size,
            },
            "bag-info.txt": {
                field_name: info[label]
                for label, field_name in (
                    ("Temoin-Recording-Id", "recording_id"),
                    ("External-Identifier", "procedure_reference"),
                    ("Temoin-Procedure-Type", "procedure_type"),
                )
                if label in info
            },
        }
        if metadata is not None:
            sources[METADATA] = self._metadata(metadata)
        if collecte is not None:
            sources |= self._collecte(collecte)
        if receipt is not None:
            sources[RECEIPT] = {k: receipt[k] for k in _RECEIPT_FIELDS if k in receipt}
        names = dict.fromkeys(name for stated in sources.values() for name in stated)
        for name in names:
            compare = FIELDS.get(name, _instant)
            said = {source: stated[name] for source, stated in sources.items() if name in stated}
            if len({repr(compare(value)) for value in said.values()}) > 1:
                self.report.refuse(
                    name,
                    "claims-differ",
                    "the package's parts disagree: "
                    + ", ".join(f"{source} says {value!r}" for source, value in said.items()),
                )
        attested = {
            name
            for source in ("the collecte audit entry", RECEIPT, "the clip")
            for name in sources.get(source, {})
        }
        unattested = sorted(set(sources.get(METADATA, {})) - attested)
        if unattested:
            self.report.notes.append(
                "stated by metadata.json alone, vouched for by the vault's signature only: "
                f"{', '.join(unattested)}"
            )

    def _metadata(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        recording = metadata.get("recording")
        stated = _stated(recording, _METADATA_NAMES) if isinstance(recording, Mapping) else {}
        for key, name in (
            ("camera_serial", "camera_serial"),
            ("agent_matricule", "agent_matricule"),
        ):
            if key in metadata:
                stated[name] = metadata[key]
        procedure = metadata.get("procedure")
        if isinstance(procedure, Mapping):
            for key in ("reference", "type"):
                if key in procedure:
                    stated[f"procedure_{key}"] = procedure[key]
        return stated

    def _collecte(self, entry: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """What the collecte entry states, as one source; its details' `organisation`, when
        it is an id, as a second (the entry's own organisation_id is the first)."""
        details = entry.get("details")
        details = details if isinstance(details, Mapping) else {}
        stated = _stated(details, _COLLECTE_NAMES)
        stated.pop("recording_id", None)  # it is in recording_ids, below
        stated.pop("organisation", None)  # below
        if "organisation_id" in entry:
            stated["organisation_id"] = entry["organisation_id"]
        recordings = entry.get("recording_ids")
        if isinstance(recordings, list) and len(recordings) == 1:
            stated["recording_id"] = recordings[0]
        sources = {"the collecte audit entry": stated}
        organisation = details.get("organisation")
        if isinstance(organisation, Mapping):
            organisation = organisation.get("id")
        if _is_identifier(organisation):  # a name is stated nowhere else in a package
            sources["the collecte audit entry's details"] = {"organisation_id": organisation}
        return sources
