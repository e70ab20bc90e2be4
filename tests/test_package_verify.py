"""`temoin verify` against hostile packages (issue 15, point 6): each made from a real
extraction with Python's zipfile, as an attacker would, and each refused with the member (or
field) and the rule named. The real package still verifies, and the command's exit codes say
whether authenticity was checked (docs/extraction.md)."""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
import unicodedata
import uuid
import warnings
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import bagit
import httpx
import pytest
from nacl.signing import SigningKey

from shared import merkle
from shared.audit import canonical_bytes
from shared.package import Report, verify_package, write_package
from shared.signatures import b64encode, key_id, public_key_of, tree_head_message
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import build_org, fresh_insee
from tests.fixtures.live import Live, run_temoin
from tests.fixtures.servers import Servers

ATTACKER = SigningKey.generate()


@dataclass(frozen=True)
class Extracted:
    """A real package, the keys Témoin publishes, and the receipt of another recording."""

    package: bytes
    vault_key: str
    receipt_key: str
    other_receipt: dict[str, Any]

    @property
    def members(self) -> list[tuple[zipfile.ZipInfo, bytes]]:
        with zipfile.ZipFile(io.BytesIO(self.package)) as archive:
            return [(info, archive.read(info)) for info in archive.infolist()]

    @property
    def bag(self) -> str:
        return self.members[0][0].filename.split("/", 1)[0]

    @property
    def clip(self) -> str:
        return next(i.filename for i, _ in self.members if i.filename.endswith(".mp4"))

    def file(self, relative: str) -> bytes:
        return next(data for info, data in self.members if info.filename == self.path(relative))

    def path(self, relative: str) -> str:
        return f"{self.bag}/{relative}"

    def keys(self) -> dict[str, str]:
        return {"vault_key": self.vault_key, "receipt_key": self.receipt_key}


@pytest.fixture(scope="module")
async def extracted(live: Live, servers: Servers) -> AsyncIterator[Extracted]:
    async with (
        httpx.AsyncClient(base_url=live.vault.url, timeout=60) as vault,
        httpx.AsyncClient(base_url=live.ingest.url, timeout=60) as ingest,
    ):
        kit = await build_org(vault, ingest, servers, insee=fresh_insee())
        receipts = []
        for size in (300_001, 4_097):
            data, metadata = make_clip(kit, size=size)
            uploaded = await ingest.post(
                "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
            )
            assert uploaded.status_code == 201, uploaded.text
            receipts.append(uploaded.json())
        opened = await vault.post(
            f"{kit.path}/procedures",
            headers=kit.headers("responsable"),
            json={"type": "judiciaire", "reference": f"PV-{uuid.uuid4().hex[:6]}"},
        )
        procedure = opened.json()["id"]
        attached = await vault.post(
            f"{kit.path}/procedures/{procedure}/recordings",
            headers=kit.headers("habilite"),
            json={"recording_id": receipts[0]["recording_id"], "qualification": "outrage"},
        )
        assert attached.status_code == 201, attached.text
        response = await vault.post(
            f"{kit.path}/procedures/{procedure}/extractions",
            headers=kit.headers("habilite"),
            json={
                "recording_id": receipts[0]["recording_id"],
                "motif": "réquisition judiciaire",
                "destinataires": ["OPJ Martin"],
            },
        )
        assert response.status_code == 200, response.text
        yield Extracted(
            package=response.content,
            vault_key=(await vault.get("/v1/audit/public-key")).json()["public_key"],
            receipt_key=(await ingest.get("/v1/receipts/public-key")).json()["public_key"],
            other_receipt=receipts[1],
        )


# --- making hostile packages -------------------------------------------------------------------

Entry = tuple[zipfile.ZipInfo | str, bytes]


def zip_of(entries: list[Entry], compression: int = zipfile.ZIP_STORED) -> bytes:
    """A zip written by Python's zipfile (seekable: no data descriptors), members in order."""
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w", compression=compression) as archive:
        warnings.filterwarnings("ignore", "Duplicate name", UserWarning)  # that is the point
        for name, data in entries:
            archive.writestr(name, data)
    return out.getvalue()


def plain(extracted: Extracted) -> list[Entry]:
    """The real package's members by name and bytes, to write again (without the streaming
    writer's data descriptors)."""
    return [(info.filename, data) for info, data in extracted.members]


def altered(data: bytes) -> bytes:
    return data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:]


def rebuilt(
    extracted: Extracted,
    files: dict[str, bytes | None],
    *,
    signer: SigningKey = ATTACKER,
    keep_signature: bool = False,
) -> bytes:
    """The package as an attacker rebuilds it with the vault's own code: payload files
    changed (None removes one), manifests and Payload-Oxum recomputed, signed with ``signer``
    (or with the original signature.json kept)."""
    clip = extracted.file(extracted.clip[len(extracted.bag) + 1 :])
    payload = {
        name: extracted.file(f"data/{name}")
        for name in ("metadata.json", "audit.json", "receipt.json")
    }
    for name, data in files.items():
        if data is None:
            payload.pop(name)
        else:
            payload[name] = data
    lines = extracted.file("bag-info.txt").decode().splitlines()
    info = [(label, value) for label, _, value in (line.partition(": ") for line in lines)]
    info = [(label, value) for label, value in info if label != "Payload-Oxum"]
    out = io.BytesIO()
    write_package(
        out,
        bag=extracted.bag,
        info=info,
        clip_name=extracted.clip.rsplit("/", 1)[1],
        clip=[clip],
        clip_size=len(clip),
        clip_sha256=hashlib.sha256(clip).hexdigest(),
        files=payload,
        signer=signer,
    )
    if not keep_signature:
        return out.getvalue()
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as archive:
        entries: list[Entry] = [(i.filename, archive.read(i)) for i in archive.infolist()]
    signature = extracted.path("signature.json")
    return zip_of(
        [(n, extracted.file("signature.json") if n == signature else d) for n, d in entries]
    )


def edited_metadata(extracted: Extracted, **changes: Any) -> bytes:
    metadata = json.loads(extracted.file("data/metadata.json"))
    metadata["recording"].update(changes)
    return json.dumps(metadata, indent=2).encode()


def later(instant: str, hours: int = 1) -> str:
    return (datetime.fromisoformat(instant) + timedelta(hours=hours)).isoformat()


def patch_name(package: bytes, old: str, new: bytes, *, local_only: bool = False) -> bytes:
    """The package with a member's name bytes replaced (same length) in its local header and,
    unless ``local_only``, in the central directory: what zipfile cannot write."""
    raw = old.encode()
    assert len(raw) == len(new)
    if local_only:
        at = package.index(raw)  # the local header comes first
        return package[:at] + new + package[at + len(raw) :]
    return package.replace(raw, new)


def patch_header(package: bytes, name: str, **fields: int) -> bytes:
    """Overwrite fields of a member's local header and central directory entry."""
    raw = name.encode()
    local = package.index(raw) - 30
    central = package.rindex(raw) - 46
    data = bytearray(package)
    offsets = {  # (local, central, struct format)
        "flags": (6, 8, "<H"),
        "crc": (14, 16, "<I"),
        "compressed_size": (18, 20, "<I"),
        "size": (22, 24, "<I"),
        "external_attr": (None, 38, "<I"),
    }
    for field_name, value in fields.items():
        in_local, in_central, fmt = offsets[field_name]
        if in_local is not None:
            struct.pack_into(fmt, data, local + in_local, value)
        struct.pack_into(fmt, data, central + in_central, value)
    return bytes(data)


def special(name: str, data: bytes, *, unix_mode: int = 0, dos: int = 0) -> Entry:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (unix_mode << 16) | dos
    return info, data


def with_unicode_path_extra(name: str, data: bytes, other: str) -> Entry:
    info = zipfile.ZipInfo(name)
    body = b"\x01" + struct.pack("<I", 0) + other.encode()
    info.extra = struct.pack("<HH", 0x7075, len(body)) + body
    return info, data


def with_gap(entries: list[Entry], *, before: int) -> bytes:
    """Bytes written straight to the file before member ``before``: every offset stays true,
    but some bytes belong to no member."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for index, (name, data) in enumerate(entries):
            if index == before:
                assert archive.fp is not None
                archive.fp.write(b"PK\x03\x04 hidden member, seen by readers that scan")
                archive.start_dir = archive.fp.tell()  # zipfile writes the next member here
            archive.writestr(name, data)
    return out.getvalue()


# --- the class of hostile packages ------------------------------------------------------------

Trick = Callable[[Extracted], bytes]


def _duplicate_altered_first(x: Extracted) -> bytes:
    clip = x.file(x.clip[len(x.bag) + 1 :])
    return zip_of([(x.clip, altered(clip)), *plain(x)])


def _duplicate_as(name: Callable[[Extracted], str]) -> Trick:
    def trick(x: Extracted) -> bytes:
        clip = x.file(x.clip[len(x.bag) + 1 :])
        return zip_of([*plain(x), (name(x), altered(clip))])

    return trick


def _unicode_twins(x: Extracted) -> bytes:
    nfc = x.path("data/procès-verbal.txt")
    return zip_of([*plain(x), (nfc, b"one"), (unicodedata.normalize("NFD", nfc), b"two")])


def _added(name: Callable[[Extracted], str], data: bytes = b"evil") -> Trick:
    return lambda x: zip_of([*plain(x), (name(x), data)])


def _nul_name(x: Extracted) -> bytes:
    placeholder = x.path("data/evil#txt")
    package = zip_of([*plain(x), (placeholder, b"evil")])
    return patch_name(package, placeholder, placeholder.replace("#", "\x00").encode())


def _local_name_differs(x: Extracted) -> bytes:
    package = zip_of(plain(x))
    return patch_name(package, x.clip, x.clip.replace(".mp4", ".mp5").encode(), local_only=True)


def _encrypted(x: Extracted) -> bytes:
    return patch_header(zip_of(plain(x)), x.path("data/metadata.json"), flags=0x0001)


def _size_differs(x: Extracted) -> bytes:
    name = x.path("data/metadata.json")
    size = len(x.file("data/metadata.json"))
    return patch_header(zip_of(plain(x)), name, size=size + 1)


def _deflated_size_differs(x: Extracted) -> bytes:
    name = x.path("data/metadata.json")
    size = len(x.file("data/metadata.json"))
    return patch_header(zip_of(plain(x), zipfile.ZIP_DEFLATED), name, size=size - 1)


def _crc_differs(x: Extracted) -> bytes:
    return patch_header(zip_of(plain(x)), x.path("data/metadata.json"), crc=0x12345678)


def _second_root(x: Extracted) -> bytes:
    return zip_of([*plain(x), ("other/bagit.txt", x.file("bagit.txt"))])


def _directory_for_file(x: Extracted) -> bytes:
    metadata = x.path("data/metadata.json")
    return zip_of([(n, d) for n, d in plain(x) if n != metadata] + [(f"{metadata}/", b"")])


def _manifest_climbs_out(x: Extracted) -> bytes:
    manifest = x.path("manifest-sha256.txt")
    lines = x.file("manifest-sha256.txt") + f"{'0' * 64}  data/../../evil\n".encode()
    return zip_of([(n, lines if n == manifest else d) for n, d in plain(x)])


TRICKS: dict[str, tuple[Trick, str, Callable[[Extracted], str]]] = {
    # id: (how the package is made, the rule refusing it, the member or subject it names)
    "duplicate, altered clip first": (_duplicate_altered_first, "duplicate", lambda x: x.clip),
    "duplicate via ./": (
        _duplicate_as(lambda x: x.clip.replace("/data/", "/data/./")),
        "duplicate",
        lambda x: x.clip.replace("/data/", "/data/./"),
    ),
    "duplicate via //": (
        _duplicate_as(lambda x: x.clip.replace("/data/", "/data//")),
        "duplicate",
        lambda x: x.clip.replace("/data/", "/data//"),
    ),
    "duplicate via backslashes": (
        _duplicate_as(lambda x: x.clip.replace("/", "\\")),
        "duplicate",
        lambda x: x.clip.replace("/", "\\"),
    ),
    "duplicate via a leading slash": (
        _duplicate_as(lambda x: "/" + x.clip),
        "duplicate",
        lambda x: "/" + x.clip,
    ),
    "duplicate via a trailing slash": (
        _duplicate_as(lambda x: x.clip + "/"),
        "duplicate",
        lambda x: x.clip + "/",
    ),
    "duplicate via a trailing dot (Windows drops it)": (
        _duplicate_as(lambda x: x.clip + "."),
        "duplicate",
        lambda x: x.clip + ".",
    ),
    "duplicate via NFC and NFD": (
        _unicode_twins,
        "duplicate",
        lambda x: unicodedata.normalize("NFD", x.path("data/procès-verbal.txt")),
    ),
    "parent component": (_added(lambda x: x.path("../evil")), "name-parent", lambda x: "../evil"),
    "parent at the top": (_added(lambda x: "../evil"), "name-parent", lambda x: "../evil"),
    "absolute path": (_added(lambda x: "/etc/evil"), "name-absolute", lambda x: "/etc/evil"),
    "drive letter": (_added(lambda x: "C:/evil"), "name-drive", lambda x: "C:/evil"),
    "drive-relative": (_added(lambda x: "C:evil"), "name-drive", lambda x: "C:evil"),
    "backslash": (
        _added(lambda x: x.path("data\\evil.txt")),
        "name-backslash",
        lambda x: "data\\evil.txt",
    ),
    "NUL in a name": (_nul_name, "name-nul", lambda x: "evil\x00txt"),
    "control character": (
        _added(lambda x: x.path("data/evil\n.txt")),
        "name-control",
        lambda x: "evil\n.txt",
    ),
    "symlink": (
        lambda x: zip_of(
            [*plain(x), special(x.path("data/link"), b"/etc/passwd", unix_mode=0o120777)]
        ),
        "symlink",
        lambda x: "data/link",
    ),
    "windows reparse point": (
        lambda x: zip_of([*plain(x), special(x.path("data/link"), b"C:/", dos=0x400)]),
        "symlink",
        lambda x: "data/link",
    ),
    "device file": (
        lambda x: zip_of([*plain(x), special(x.path("data/dev"), b"", unix_mode=0o020666)]),
        "special-file",
        lambda x: "data/dev",
    ),
    "a second name in an extra field": (
        lambda x: zip_of(
            [*plain(x), with_unicode_path_extra(x.path("data/note.txt"), b"x", "../evil")]
        ),
        "second-name",
        lambda x: "data/note.txt",
    ),
    "local header names another member": (
        _local_name_differs,
        "local-header",
        lambda x: x.clip,
    ),
    "encrypted member": (_encrypted, "encrypted", lambda x: "data/metadata.json"),
    "declared size differs (stored)": (_size_differs, "size", lambda x: "data/metadata.json"),
    "declared size differs (deflated)": (
        _deflated_size_differs,
        "size",
        lambda x: "data/metadata.json",
    ),
    "CRC differs": (_crc_differs, "crc", lambda x: "data/metadata.json"),
    "data before the first member": (
        lambda x: b"MZ self-extractor stub " * 8 + x.package,
        "zip-directory",
        lambda x: "(archive)",
    ),
    "data before the first member, offsets fixed": (
        lambda x: with_gap(plain(x), before=0),
        "zip-prefix",
        lambda x: x.members[0][0].filename,
    ),
    "data between members": (
        lambda x: with_gap(plain(x), before=3),
        "zip-gap",
        lambda x: x.members[3][0].filename,
    ),
    "data after the central directory": (
        lambda x: x.package + b"appended",
        "zip-end",
        lambda x: "(archive)",
    ),
    "an archive comment": (
        lambda x: x.package[:-2] + struct.pack("<H", 5) + b"hello",
        "zip-end",
        lambda x: "(archive)",
    ),
    "a member not in the payload manifest": (
        _added(lambda x: x.path("data/extra.txt")),
        "bag-unlisted",
        lambda x: "data/extra.txt",
    ),
    "a member not in the tag manifest": (
        _added(lambda x: x.path("extra-tag.txt")),
        "bag-unlisted",
        lambda x: "extra-tag.txt",
    ),
    "a case variant is no duplicate, but unlisted": (
        _duplicate_as(lambda x: x.clip.replace(".mp4", ".MP4")),
        "bag-unlisted",
        lambda x: x.clip.replace(".mp4", ".MP4"),
    ),
    "a top-level member": (_added(lambda x: "README.txt"), "bag-outside", lambda x: "README.txt"),
    "a second top-level directory": (
        _added(lambda x: "other/clip.mp4"),
        "bag-outside",
        lambda x: "other/clip.mp4",
    ),
    "a second bag": (_second_root, "bag-layout", lambda x: "(package)"),
    "a directory where a file is expected": (
        _directory_for_file,
        "bag-directory",
        lambda x: "data/metadata.json/",
    ),
    "an unexpected directory": (
        _added(lambda x: x.path("empty/"), b""),
        "bag-directory",
        lambda x: "empty/",
    ),
    "a manifest path climbing out": (
        _manifest_climbs_out,
        "name-parent",
        lambda x: "manifest-sha256.txt",
    ),
}


def _check(package: bytes, tmp_path: Path, **keys: str) -> Report:
    path = tmp_path / "package.zip"
    path.write_bytes(package)
    return verify_package(path, **keys)


def _rules(report: Report) -> set[str]:
    return {problem.rule for problem in report.problems}


@pytest.mark.parametrize("trick", list(TRICKS), ids=list(TRICKS))
def test_hostile_packages_are_refused(extracted: Extracted, tmp_path: Path, trick: str) -> None:
    make, rule, subject = TRICKS[trick]
    report = _check(make(extracted), tmp_path, **extracted.keys())
    assert not report.valid
    named = [p for p in report.problems if p.rule == rule]
    assert named, f"expected a {rule!r} refusal, got: {[str(p) for p in report.problems]}"
    assert any(subject(extracted) in p.subject for p in named), [str(p) for p in named]


def test_the_clip_is_never_hashed_from_an_ambiguous_archive(
    extracted: Extracted, tmp_path: Path
) -> None:
    """The acceptance run's package: the altered clip first, the original second. bagit and
    a last-member reader (Python's zipfile) see the original; a first-member reader sees the
    altered clip. Nothing is hashed from it: the archive is refused whole."""
    package = _duplicate_altered_first(extracted)
    with zipfile.ZipFile(io.BytesIO(package)) as archive:  # what the last-member reader sees
        assert archive.read(extracted.clip) == extracted.file(
            extracted.clip[len(extracted.bag) + 1 :]
        )
        archive.extractall(tmp_path / "unzipped")
    bagit.Bag(str(tmp_path / "unzipped" / extracted.bag)).validate()  # the validator passes it
    report = _check(package, tmp_path, **extracted.keys())
    assert _rules(report) == {"duplicate"}
    assert report.clip_sha256 is None
    (problem,) = report.problems
    assert str(problem).startswith(f"{extracted.clip}: a second member with the same name")


def test_the_real_package_verifies(extracted: Extracted, tmp_path: Path) -> None:
    report = _check(extracted.package, tmp_path, **extracted.keys())
    assert report.authenticated, [str(p) for p in report.problems]
    receipt = json.loads(extracted.file("data/receipt.json"))
    assert report.clip_sha256 == receipt["sha256"]


def test_a_repacked_package_still_verifies(extracted: Extracted, tmp_path: Path) -> None:
    """The rules are the bag's, not one byte layout: the same files re-zipped with deflate,
    without data descriptors, with the directory entries `zip -r` adds, still verify."""
    directories: list[Entry] = [(f"{extracted.bag}/", b""), (extracted.path("data/"), b"")]
    package = zip_of(directories + plain(extracted), zipfile.ZIP_DEFLATED)
    report = _check(package, tmp_path, **extracted.keys())
    assert report.authenticated, [str(p) for p in report.problems]


def test_zip64_end_records_are_read(
    extracted: Extracted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clip over 4 GiB makes the vault write zip64 sizes, offsets and end records: the same
    structures, made here by lowering zipfile's limits instead of writing 4 GiB."""
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 1000)
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 2)
    package = zip_of(plain(extracted))
    assert b"PK\x06\x06" in package[-200:]  # the zip64 end record
    report = _check(package, tmp_path, **extracted.keys())
    assert report.authenticated, [str(p) for p in report.problems]
    report = _check(package + b"\0", tmp_path, **extracted.keys())
    assert _rules(report) == {"zip-end"}


def test_no_byte_of_a_package_escapes_the_checks(extracted: Extracted, tmp_path: Path) -> None:
    """Every byte of a member's data, and every truncation, is refused; a byte changed in any
    header is refused or harmless, and never crashes the check."""
    package = extracted.package
    data_ranges = []
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        for info in archive.infolist():
            name_length, extra_length = struct.unpack_from("<HH", package, info.header_offset + 26)
            start = info.header_offset + 30 + name_length + extra_length
            data_ranges.append((start, info.compress_size))
    rng = random.Random(15)
    positions = [start + rng.randrange(size) for start, size in data_ranges for _ in range(8)]
    for position in positions:
        flipped = package[:position] + bytes([package[position] ^ 0x20]) + package[position + 1 :]
        assert not _check(flipped, tmp_path, **extracted.keys()).valid, position
    deflated = zip_of(plain(extracted), zipfile.ZIP_DEFLATED)
    for source in (package, deflated):
        for _ in range(300):
            position = rng.randrange(len(source))
            flipped = source[:position] + bytes([source[position] ^ 0x01]) + source[position + 1 :]
            _check(flipped, tmp_path, **extracted.keys())  # refused or not, never an exception
    for cut in (1, 22, 100, len(package) // 2, len(package) - 1):
        assert not _check(package[:cut], tmp_path).valid


# --- what the package states must agree --------------------------------------------------------


def test_metadata_edited_with_manifests_recomputed(extracted: Extracted, tmp_path: Path) -> None:
    metadata = json.loads(extracted.file("data/metadata.json"))
    started = metadata["recording"]["started_at"]
    edited = edited_metadata(extracted, started_at=later(started))

    # The vault's signature kept: it no longer covers the recomputed tag manifest.
    kept = _check(rebuilt(extracted, {"metadata.json": edited}, keep_signature=True), tmp_path)
    assert {"signature", "claims-differ"} <= _rules(kept)

    # Re-signed with the attacker's key: refused by the vault's key, and by the collecte
    # entry the vault logged when the clip arrived, whose proof holds.
    resigned = rebuilt(extracted, {"metadata.json": edited})
    report = _check(resigned, tmp_path, **extracted.keys())
    assert _rules(report) == {"signature", "claims-differ"}
    (problem,) = [p for p in report.problems if p.rule == "claims-differ"]
    assert problem.subject == "started_at"
    assert f"data/metadata.json says {later(started)!r}" in problem.detail
    assert "the collecte audit entry says" in problem.detail


@pytest.mark.parametrize(
    "changes",
    [
        {"ended_at": "2001-01-01T00:00:00+00:00"},
        {"size": 1},
        {"sha256": "0" * 64},
        {"station_id": str(uuid.uuid4())},
        {"id": str(uuid.uuid4())},
        {"received_at": "2001-01-01T00:00:00Z"},
    ],
    ids=lambda changes: next(iter(changes)),
)
def test_every_attested_field_is_compared(
    extracted: Extracted, tmp_path: Path, changes: dict[str, Any]
) -> None:
    resigned = rebuilt(extracted, {"metadata.json": edited_metadata(extracted, **changes)})
    report = _check(resigned, tmp_path, **extracted.keys())
    assert _rules(report) == {"signature", "claims-differ"}, [str(p) for p in report.problems]


def test_camera_and_agent_are_compared(extracted: Extracted, tmp_path: Path) -> None:
    metadata = json.loads(extracted.file("data/metadata.json"))
    metadata["camera_serial"] = "CAM-OTHER"
    metadata["agent_matricule"] = "M-OTHER"
    report = _check(
        rebuilt(extracted, {"metadata.json": json.dumps(metadata).encode()}),
        tmp_path,
        **extracted.keys(),
    )
    differing = {p.subject for p in report.problems if p.rule == "claims-differ"}
    assert differing == {"camera_serial", "agent_matricule"}


def test_the_receipt_of_another_recording(extracted: Extracted, tmp_path: Path) -> None:
    other = json.dumps(extracted.other_receipt).encode()
    report = _check(rebuilt(extracted, {"receipt.json": other}), tmp_path, **extracted.keys())
    differing = {p.subject for p in report.problems if p.rule == "claims-differ"}
    assert {"recording_id", "sha256", "size"} <= differing
    assert "receipt-signature" not in _rules(report)  # ingest did sign it, for another clip


def _forged_audit(extracted: Extracted, **details: Any) -> bytes:
    """audit.json remade by someone without the vault's key: the collecte entry edited, in a
    one-entry log whose head they sign themselves."""
    audit = json.loads(extracted.file("data/audit.json"))
    (entry,) = [p["entry"] for p in audit["proofs"] if p["entry"]["action"] == "collecte"]
    entry["details"].update(details)
    leaf = merkle.leaf_hash(canonical_bytes(entry))
    signed_at = "2030-01-01T00:00:00.000000Z"
    signature = ATTACKER.sign(tree_head_message(1, leaf, signed_at)).signature
    head = {
        "tree_size": 1,
        "root_hash": leaf.hex(),
        "signed_at": signed_at,
        "key_id": key_id(public_key_of(ATTACKER)),
        "signature": b64encode(signature),
    }
    proof = {
        "entry": entry,
        "leaf_index": 0,
        "leaf_hash": leaf.hex(),
        "tree_size": 1,
        "audit_path": [],
        "head": head,
    }
    return json.dumps({"proofs": [proof]}).encode()


def _full_forgery(extracted: Extracted) -> bytes:
    metadata = json.loads(extracted.file("data/metadata.json"))
    moved = later(metadata["recording"]["started_at"])
    return rebuilt(
        extracted,
        {
            "metadata.json": edited_metadata(extracted, started_at=moved),
            "audit.json": _forged_audit(extracted, started_at=moved),
        },
    )


def _details_as_the_vault_will_log_them(extracted: Extracted) -> dict[str, Any]:
    """The collecte details as main now logs them (services/vault/recordings/attested.py:
    ids of wearer and camera, place, clock offset, pre-record, intervention, content type,
    object, retention), and the organisation the brief of issue 15 also names, with the
    values the metadata states."""
    metadata = json.loads(extracted.file("data/metadata.json"))
    recording = metadata["recording"]
    receipt = json.loads(extracted.file("data/receipt.json"))
    return {
        "agent_id": recording["agent_id"],
        "camera_id": recording["camera_id"],
        "place": {k: recording[k] for k in ("latitude", "longitude", "address")},
        "clock_offset_ms": recording["clock_offset_ms"],
        "pre_record_s": recording["pre_record_s"],
        "intervention_ref": recording["intervention_ref"],
        "content_type": recording["content_type"],
        "object_key": f"recordings/{receipt['organisation_id']}/{recording['id']}.sealed",
        "object_version": None,
        "retain_until": recording["retain_until"],
        "organisation": receipt["organisation_id"],
    }


def test_fields_the_collecte_entry_will_state_are_compared(
    extracted: Extracted, tmp_path: Path
) -> None:
    details = _details_as_the_vault_will_log_them(extracted)
    agreeing = rebuilt(extracted, {"audit.json": _forged_audit(extracted, **details)})
    report = _check(agreeing, tmp_path)
    assert report.valid, [str(p) for p in report.problems]
    assert not any("latitude" in note for note in report.notes)  # now attested

    changes: dict[str, tuple[str, Any]] = {
        "agent_id": ("agent_id", str(uuid.uuid4())),
        "camera_id": ("camera_id", str(uuid.uuid4())),
        "latitude": ("place", {**details["place"], "latitude": 0.0}),
        "address": ("place", {**details["place"], "address": "ailleurs"}),
        "clock_offset_ms": ("clock_offset_ms", details["clock_offset_ms"] + 1),
        "pre_record_s": ("pre_record_s", 0),
        "intervention_ref": ("intervention_ref", "INT-OTHER"),
        "content_type": ("content_type", "video/quicktime"),
        "retain_until": ("retain_until", later(details["retain_until"], hours=24)),
        "organisation_id": ("organisation", str(uuid.uuid4())),
    }
    for field_name, (key, value) in changes.items():
        forged = _forged_audit(extracted, **{**details, key: value})
        report = _check(rebuilt(extracted, {"audit.json": forged}), tmp_path)
        differing = [p for p in report.problems if p.rule == "claims-differ"]
        assert [p.subject for p in differing] == [field_name], [str(p) for p in report.problems]
    no_place = _forged_audit(extracted, **{**details, "place": None})
    report = _check(rebuilt(extracted, {"audit.json": no_place}), tmp_path)
    assert {p.subject for p in report.problems} == {"latitude", "longitude", "address"}
    same_instant = details["retain_until"].replace("Z", "+00:00")
    report = _check(
        rebuilt(
            extracted,
            {"audit.json": _forged_audit(extracted, **{**details, "retain_until": same_instant})},
        ),
        tmp_path,
    )
    assert report.valid, [str(p) for p in report.problems]


def test_a_full_forgery_needs_the_keys(extracted: Extracted, tmp_path: Path) -> None:
    """Everything consistent, signed with the forger's key: only the pinned keys refuse it."""
    forged = _full_forgery(extracted)
    alone = _check(forged, tmp_path)
    assert alone.valid and not alone.authenticated
    assert len(alone.unauthenticated) == 3  # signature, tree heads, receipt
    report = _check(forged, tmp_path, **extracted.keys())
    assert {"signature", "audit-proof"} <= _rules(report)


# --- the command ---------------------------------------------------------------------------------


def test_verify_exit_codes(extracted: Extracted, live: Live, tmp_path: Path) -> None:
    real = tmp_path / "real.zip"
    real.write_bytes(extracted.package)
    forged = tmp_path / "forged.zip"
    forged.write_bytes(_full_forgery(extracted))
    hostile = tmp_path / "hostile.zip"
    hostile.write_bytes(_duplicate_altered_first(extracted))
    keys = ["--vault-key", extracted.vault_key, "--receipt-key", extracted.receipt_key]

    def verify(*args: str) -> tuple[int, str, str]:
        done = run_temoin("verify", *args, env=live.env)
        return done.returncode, done.stdout, done.stderr

    code, out, _ = verify(str(real), *keys)
    assert code == 0 and "package valid and authentic" in out, out
    code, out, err = verify(str(real))
    assert code == 2 and "AUTHENTICITY NOT CHECKED" in err and "NOT AUTHENTICATED" in out
    code, out, err = verify(str(real), "--vault-key", extracted.vault_key)
    assert code == 2 and "the receipt" in err  # one key missing is enough
    code, out, err = verify(str(real), "--integrity-only")
    assert code == 0 and "AUTHENTICITY NOT CHECKED" in err and "INTEGRITY ONLY" in out

    code, out, err = verify(str(forged))
    assert code == 2, out + err  # consistent with itself: only the keys tell
    assert verify(str(forged), "--integrity-only")[0] == 0
    code, out, _ = verify(str(forged), *keys)
    assert code == 1 and "REFUSED" in out and "[signature]" in out

    for args in ([str(hostile)], [str(hostile), *keys], [str(hostile), "--integrity-only"]):
        code, out, _ = verify(*args)
        assert code == 1 and f"REFUSED {extracted.clip}: a second member" in out, out
