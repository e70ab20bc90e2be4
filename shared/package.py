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
import posixpath
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from nacl.signing import SigningKey

from shared.receipts import receipt_is_valid
from shared.signatures import b64encode, key_id, public_key_of, verify
from shared.witness import inclusion_problems

SIGNATURE_CONTEXT = b"temoin-package-v1\n"
BAGIT_TXT = b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
READ_SIZE = 1 << 20


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


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    clip_sha256: str | None = None

    @property
    def valid(self) -> bool:
        return not self.problems


def _manifest(text: str) -> dict[str, str]:
    entries = {}
    for line in text.splitlines():
        if line.strip():
            digest, _, path = line.partition(" ")
            entries[path.strip()] = digest.strip()
    return entries


def _hash_member(archive: zipfile.ZipFile, name: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with archive.open(name) as handle:
        while block := handle.read(READ_SIZE):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def verify_package(
    path: Path, *, vault_key: str | None = None, receipt_key: str | None = None
) -> Report:
    """Check a package: the bag (every manifest), the vault's signature, the receipt, and
    each audit entry's inclusion proof. ``vault_key`` and ``receipt_key`` (base64 Ed25519)
    are the keys the checker trusts; without them, the keys the package carries are used,
    which proves integrity but not origin (the report says so)."""
    report = Report()
    problems = report.problems
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        return Report(problems=[f"not a readable zip: {exc}"])
    with archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) != 1:
            return Report(problems=["a package holds exactly one bag directory"])
        bag = roots.pop()

        def read(relative: str) -> bytes:
            return archive.read(f"{bag}/{relative}")

        try:
            if read("bagit.txt") != BAGIT_TXT:
                problems.append("bagit.txt is not BagIt 1.0 in UTF-8")
            manifest = _manifest(read("manifest-sha256.txt").decode())
            tagmanifest_bytes = read("tagmanifest-sha256.txt")
            signature = json.loads(read("signature.json"))
        except (KeyError, ValueError) as exc:
            return Report(problems=[f"a required file is missing or unreadable: {exc}"])

        # The bag: every payload file listed and matching, nothing unlisted.
        payload = {n[len(bag) + 1 :] for n in names if n.startswith(f"{bag}/data/")}
        for missing in sorted(set(manifest) - payload):
            problems.append(f"{missing}: listed in the manifest but absent")
        for extra in sorted(payload - set(manifest)):
            problems.append(f"{extra}: in the bag but not in the manifest")
        octets = 0
        for relative, expected in manifest.items():
            if relative not in payload:
                continue
            actual, size = _hash_member(archive, f"{bag}/{relative}")
            octets += size
            if actual != expected:
                problems.append(f"{relative}: SHA-256 differs from the manifest (altered)")
        for relative, expected in _manifest(tagmanifest_bytes.decode()).items():
            try:
                actual = hashlib.sha256(read(relative)).hexdigest()
            except KeyError:
                problems.append(f"{relative}: listed in the tag manifest but absent")
                continue
            if actual != expected:
                problems.append(f"{relative}: SHA-256 differs from the tag manifest (altered)")
        info = dict(
            line.split(": ", 1)
            for line in read("bag-info.txt").decode().splitlines()
            if ": " in line
        )
        if info.get("Payload-Oxum") != f"{octets}.{len(manifest)}":
            problems.append("Payload-Oxum does not match the payload")

        # The vault's signature over the tag manifest (hence over every file).
        key = vault_key or str(signature.get("public_key", ""))
        if vault_key is None:
            report.notes.append(
                "vault key not given: checked with the key the package carries "
                f"(key id {signature.get('key_id')}); compare it with the vault's published key"
            )
        if not verify(key, SIGNATURE_CONTEXT + tagmanifest_bytes, str(signature.get("signature"))):
            problems.append("the package signature does not verify")

        clips = [p for p in manifest if p not in _KNOWN_FILES]
        if len(clips) != 1:
            problems.append("a package holds exactly one clip")
            return report
        report.clip_sha256 = manifest[clips[0]]
        clip_size = archive.getinfo(f"{bag}/{clips[0]}").file_size
        _check_receipt(report, _json(archive, bag, "data/receipt.json"), receipt_key, clip_size)
        _check_audit(report, _json(archive, bag, "data/audit.json"), key)
    return report


_KNOWN_FILES = {"data/metadata.json", "data/audit.json", "data/receipt.json"}


def _json(archive: zipfile.ZipFile, bag: str, relative: str) -> Any:
    try:
        return json.loads(archive.read(posixpath.join(bag, relative)))
    except KeyError:
        return None


def _check_receipt(
    report: Report, receipt: Mapping[str, Any] | None, receipt_key: str | None, size: int
) -> None:
    if receipt is None:
        report.notes.append("no receipt in the package (none on file for this recording)")
        return
    if receipt.get("sha256") != report.clip_sha256 or receipt.get("size") != size:
        report.problems.append("the receipt is for other bytes than the clip")
    if receipt_key is None:
        report.notes.append("receipt key not given: the receipt's signature was not checked")
    elif not receipt_is_valid(dict(receipt), receipt_key):
        report.problems.append("the receipt's signature does not verify")


def _check_audit(report: Report, audit: Mapping[str, Any] | None, log_key: str) -> None:
    if audit is None:
        report.problems.append("no audit history in the package")
        return
    proofs = audit.get("proofs", [])
    collected = False
    for proof in proofs:
        for problem in inclusion_problems(proof, [proof["head"]], log_key):
            report.problems.append(f"audit entry {proof['entry'].get('entry_id')}: {problem}")
        entry = proof["entry"]
        if entry.get("action") == "collecte" and entry.get("details", {}).get("sha256") == (
            report.clip_sha256
        ):
            collected = True
    if not collected:
        report.problems.append("no proved collecte entry for this clip in the audit history")
