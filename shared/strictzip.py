"""A strict reader of zip archives, for files whose reader must not be fooled: extraction
packages (shared/package.py). Where zip readers disagree, it refuses rather than picks.

Readers differ in what they take from an archive: the first or the last of two members of the
same name, the local header's name or the central directory's, a Unicode-path extra field, a
name cut at a NUL, a path that climbs out with `..`, a symlink, bytes hidden before the first
member or after the end record. An archive is accepted here only if every reader would see the
same thing:

- every byte of the file belongs to exactly one member, the central directory, or its end
  records (nothing before, between, or after; no comment);
- each member's local header agrees with the central directory (name, flags, method, CRC and
  sizes), and so does its data descriptor;
- no encryption, no compression but stored or deflated, no symlink or other special file;
- each name is a plain relative path: UTF-8, NFC, `/`-separated, without `.`, `..`, empty
  components, backslashes, colons (drive letters, alternate streams) or control characters;
- no two members name the same file, even after the normalisations some readers apply
  (backslashes, `.` and empty components, a trailing or leading slash, NFC/NFD). Case is not
  folded: zip names are case-sensitive, and a bag's manifests then refuse the stranger.

`open_zip` returns the members or the refusals, each naming the member and its rule; members
are then read by `ZipMember`, never by name, and `read` checks the size and CRC it declared.
"""

from __future__ import annotations

import hashlib
import re
import struct
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

READ_SIZE = 1 << 20
MAX_CENTRAL_DIRECTORY = 16 << 20  # a package has a handful of members

_EOCD = struct.Struct("<4sHHHHIIH")  # end of central directory record
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_EOCD_SIG = b"PK\x05\x06"
_ZIP64_LOCATOR_SIG = b"PK\x06\x07"
_ZIP64_EOCD_SIG = b"PK\x06\x06"
_CENTRAL_SIG = b"PK\x01\x02"
_LOCAL_SIG = b"PK\x03\x04"
_DESCRIPTOR_SIG = b"PK\x07\x08"

STORED, DEFLATED = 0, 8
_FLAG_ENCRYPTED = 0x0001
_FLAG_DESCRIPTOR = 0x0008
_FLAG_STRONG_ENCRYPTION = 0x0040
_FLAG_UTF8 = 0x0800
_FLAG_MASKED_HEADERS = 0x2000
_FLAGS_ALLOWED = 0x0002 | 0x0004 | _FLAG_DESCRIPTOR | _FLAG_UTF8  # deflate level, descriptor
_AES_METHOD = 99
_ZIP64_EXTRA = 0x0001
_UNICODE_PATH_EXTRA = 0x7075  # Info-ZIP: some readers take this name over the header's
_UNIX = 3
_S_IFMT, _S_IFREG, _S_IFDIR, _S_IFLNK = 0o170000, 0o100000, 0o040000, 0o120000
_DOS_DIRECTORY, _DOS_REPARSE_POINT = 0x10, 0x400  # a reparse point is a Windows symlink
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown(name: str) -> str:
    """A name as printed in a refusal: escaped when it holds anything but printable ASCII, so
    that `é` and `e` + a combining accent, or a NUL, can be told apart."""
    return name if name.isascii() and name.isprintable() else ascii(name)


@dataclass(frozen=True)
class Refusal:
    """Why an archive (or a member of it) is refused: the member, the rule, what was found."""

    member: str
    rule: str
    detail: str


@dataclass(frozen=True)
class ZipMember:
    name: str  # decoded as the central directory gives it
    raw_name: bytes
    flags: int
    method: int
    crc: int
    compressed_size: int
    size: int  # uncompressed, as declared
    local_offset: int
    data_offset: int  # after the local header
    end_offset: int  # after the data and its descriptor, where the next member must start
    is_directory: bool


@dataclass(frozen=True)
class _Central:
    raw_name: bytes
    name: str
    made_by: int
    flags: int
    method: int
    crc: int
    compressed_size: int
    size: int
    local_offset: int
    external_attr: int
    extra: dict[int, bytes]


class MemberCorrupt(Exception):
    """A member's bytes do not match what the archive declares (size or CRC)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(f"{refusal.member!r}: {refusal.detail} [{refusal.rule}]")
        self.refusal = refusal


class StrictZip:
    """An archive whose structure `open_zip` accepted; members are read one at a time."""

    def __init__(self, handle: BinaryIO, members: list[ZipMember]) -> None:
        self._handle = handle
        self.members = members

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> StrictZip:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def read(self, member: ZipMember) -> Iterator[bytes]:
        """The member's bytes, in pieces. Raises MemberCorrupt, after the last piece, if they
        are not as many as it declared or their CRC differs: discard what was read then."""
        handle = self._handle
        handle.seek(member.data_offset)
        remaining = member.compressed_size
        inflater = zlib.decompressobj(-15) if member.method == DEFLATED else None
        produced = 0
        crc = 0
        while remaining:
            block = handle.read(min(READ_SIZE, remaining))
            if not block:
                raise MemberCorrupt(Refusal(member.name, "size", "the file ends inside it"))
            remaining -= len(block)
            pieces = [block] if inflater is None else _inflate(inflater, block, member)
            for piece in pieces:
                produced += len(piece)
                if produced > member.size:
                    raise MemberCorrupt(
                        Refusal(member.name, "size", f"holds more than its {member.size} bytes")
                    )
                crc = zlib.crc32(piece, crc)
                yield piece
        if inflater is not None and (not inflater.eof or inflater.unused_data):
            raise MemberCorrupt(Refusal(member.name, "size", "its deflate stream is not whole"))
        if produced != member.size:
            raise MemberCorrupt(
                Refusal(member.name, "size", f"declares {member.size} bytes but holds {produced}")
            )
        if crc != member.crc:
            raise MemberCorrupt(
                Refusal(member.name, "crc", "its CRC-32 differs from the one declared")
            )

    def read_all(self, member: ZipMember, limit: int) -> bytes:
        if member.size > limit:
            raise MemberCorrupt(
                Refusal(member.name, "too-large", f"{member.size} bytes, more than {limit}")
            )
        return b"".join(self.read(member))

    def sha256(self, member: ZipMember) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        for piece in self.read(member):
            digest.update(piece)
            size += len(piece)
        return digest.hexdigest(), size


def _inflate(inflater: zlib._Decompress, block: bytes, member: ZipMember) -> Iterator[bytes]:
    data = block
    while data:
        # Bounded output per step: a small member cannot expand into gigabytes in memory.
        try:
            piece = inflater.decompress(data, READ_SIZE)
        except zlib.error as exc:
            refusal = Refusal(member.name, "crc", f"corrupt deflate data ({exc})")
            raise MemberCorrupt(refusal) from exc
        yield piece
        data = inflater.unconsumed_tail


def open_zip(path: Path) -> tuple[StrictZip | None, list[Refusal]]:
    """The archive's members, or why it is refused (then None). Nothing of a member's data is
    read here: only headers, so this is cheap whatever the archive's size."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        return None, [Refusal(str(path), "unreadable", str(exc))]
    try:
        members, refusals = _structure(handle)
    except (OSError, ValueError, struct.error) as exc:
        members, refusals = [], [Refusal(str(path), "zip-structure", f"unreadable: {exc}")]
    if refusals:
        handle.close()
        return None, refusals
    return StrictZip(handle, members), []


def _structure(handle: BinaryIO) -> tuple[list[ZipMember], list[Refusal]]:
    file_size = handle.seek(0, 2)
    archive = "(archive)"
    if file_size < _EOCD.size:
        return [], [Refusal(archive, "zip-end", "too short to be a zip archive")]
    eocd_offset = file_size - _EOCD.size
    handle.seek(eocd_offset)
    sig, disk, cd_disk, disk_entries, entries, cd_size, cd_offset, comment = _EOCD.unpack(
        handle.read(_EOCD.size)
    )
    if sig != _EOCD_SIG or comment:
        return [], [
            Refusal(
                archive,
                "zip-end",
                "the file does not end with the central directory's end record: a comment or "
                "data was appended after it",
            )
        ]
    end_of_directory = eocd_offset
    if eocd_offset >= _ZIP64_LOCATOR.size:
        handle.seek(eocd_offset - _ZIP64_LOCATOR.size)
        locator = _ZIP64_LOCATOR.unpack(handle.read(_ZIP64_LOCATOR.size))
        if locator[0] == _ZIP64_LOCATOR_SIG:
            _, locator_disk, zip64_offset, disks = locator
            end_of_directory = zip64_offset
            if zip64_offset + _ZIP64_EOCD.size != eocd_offset - _ZIP64_LOCATOR.size:
                return [], [Refusal(archive, "zip-end", "data around the zip64 end record")]
            handle.seek(zip64_offset)
            record = _ZIP64_EOCD.unpack(handle.read(_ZIP64_EOCD.size))
            if record[0] != _ZIP64_EOCD_SIG or record[1] != _ZIP64_EOCD.size - 12:
                return [], [Refusal(archive, "zip-end", "a malformed zip64 end record")]
            _, _, _, _, disk, cd_disk, disk_entries, entries, cd_size, cd_offset = record
            if locator_disk or disks != 1:
                return [], [Refusal(archive, "zip-multidisk", "spans several disks")]
    if disk or cd_disk or disk_entries != entries:
        return [], [Refusal(archive, "zip-multidisk", "spans several disks")]
    if cd_offset + cd_size != end_of_directory:
        return [], [
            Refusal(
                archive,
                "zip-directory",
                "the central directory does not end where its end record starts "
                "(data between them, or data before the first member shifting every offset)",
            )
        ]
    if cd_size > MAX_CENTRAL_DIRECTORY:
        return [], [Refusal(archive, "zip-directory", "a central directory too large")]
    handle.seek(cd_offset)
    centrals, refusals = _central_directory(handle.read(cd_size), entries)
    if refusals:
        return [], refusals
    members, refusals = _members(handle, centrals, cd_offset)
    refusals += _duplicates(members)
    return members, refusals


def _central_directory(data: bytes, entries: int) -> tuple[list[_Central], list[Refusal]]:
    centrals: list[_Central] = []
    position = 0
    archive = "(archive)"
    while position < len(data):
        if position + _CENTRAL.size > len(data):
            return [], [Refusal(archive, "zip-directory", "a truncated central directory")]
        fields = _CENTRAL.unpack_from(data, position)
        sig, made_by, _, flags, method, _, _, crc, csize, size = fields[:10]
        name_len, extra_len, comment_len, disk, _, external, offset = fields[10:]
        if sig != _CENTRAL_SIG:
            return [], [Refusal(archive, "zip-directory", "a malformed central directory")]
        start = position + _CENTRAL.size
        raw_name = data[start : start + name_len]
        extra = _extra_fields(data[start + name_len : start + name_len + extra_len])
        position = start + name_len + extra_len + comment_len
        if position > len(data) or extra is None:
            return [], [Refusal(archive, "zip-directory", "a malformed central directory")]
        zip64 = extra.get(_ZIP64_EXTRA, b"")
        try:
            values = iter(struct.unpack(f"<{len(zip64) // 8}Q", zip64[: len(zip64) // 8 * 8]))
            if size == 0xFFFFFFFF:
                size = next(values)
            if csize == 0xFFFFFFFF:
                csize = next(values)
            if offset == 0xFFFFFFFF:
                offset = next(values)
        except StopIteration:
            return [], [Refusal(archive, "zip-directory", "a malformed zip64 extra field")]
        name = _decode_name(raw_name, flags)
        centrals.append(
            _Central(
                raw_name, name, made_by, flags, method, crc, csize, size, offset, external, extra
            )
        )
        if disk not in (0, 0xFFFF):
            return [], [Refusal(name, "zip-multidisk", "on another disk")]
    if len(centrals) != entries:
        return [], [
            Refusal(
                archive,
                "zip-directory",
                f"the end record counts {entries} members, the central directory holds "
                f"{len(centrals)}",
            )
        ]
    return centrals, []


def _extra_fields(data: bytes) -> dict[int, bytes] | None:
    fields: dict[int, bytes] = {}
    position = 0
    while position + 4 <= len(data):
        tag, length = struct.unpack_from("<HH", data, position)
        value = data[position + 4 : position + 4 + length]
        if len(value) != length or tag in fields:
            return None
        fields[tag] = value
        position += 4 + length
    return fields if position == len(data) else None


def _decode_name(raw: bytes, flags: int) -> str:
    """The name as a reader honouring the UTF-8 flag reads it; undecodable bytes are kept
    visible (and refused by the name rules)."""
    if flags & _FLAG_UTF8:
        return raw.decode("utf-8", errors="backslashreplace")
    return raw.decode("cp437")


def _members(
    handle: BinaryIO, centrals: list[_Central], cd_offset: int
) -> tuple[list[ZipMember], list[Refusal]]:
    members: list[ZipMember] = []
    refusals: list[Refusal] = []
    for central in centrals:
        found = _member_refusals(central)
        member, local = _local(handle, central)
        found += local
        refusals += found
        if member is not None:
            members.append(member)
    if refusals:
        return members, refusals
    # Every byte before the central directory belongs to exactly one member, in order.
    position = 0
    for member in sorted(members, key=lambda m: m.local_offset):
        if member.local_offset != position:
            where = "before the first member" if position == 0 else "before this member"
            kind = "zip-prefix" if position == 0 else "zip-gap"
            if member.local_offset < position:
                where, kind = "overlaps the member before it", "zip-overlap"
            refusals.append(Refusal(member.name, kind, f"data {where}"))
        position = max(position, member.end_offset)
    if position != cd_offset:
        refusals.append(
            Refusal(
                "(archive)", "zip-gap", "data between the last member and the central directory"
            )
        )
    return members, refusals


def _member_refusals(central: _Central) -> list[Refusal]:
    """The rules on one central-directory entry alone: encryption, method, type, name."""
    name = central.name
    refusals = []
    if central.flags & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION | _FLAG_MASKED_HEADERS) or (
        central.method == _AES_METHOD
    ):
        refusals.append(Refusal(name, "encrypted", "an encrypted member"))
    elif central.flags & ~_FLAGS_ALLOWED:
        refusals.append(Refusal(name, "zip-flags", f"unsupported flags {central.flags:#06x}"))
    if central.method not in (STORED, DEFLATED):
        refusals.append(
            Refusal(name, "compression", f"compression method {central.method}: only stored "
                     "or deflated")
        )  # fmt: skip
    elif central.method == STORED and central.compressed_size != central.size:
        refusals.append(
            Refusal(
                name,
                "size",
                f"stored, yet declares {central.size} bytes in {central.compressed_size}",
            )
        )
    if _UNICODE_PATH_EXTRA in central.extra:
        refusals.append(
            Refusal(name, "second-name", "a Unicode-path extra field: a second name for it")
        )
    directory = name.endswith("/")
    if central.made_by >> 8 == _UNIX:
        kind = (central.external_attr >> 16) & _S_IFMT
        if kind == _S_IFLNK:
            refusals.append(Refusal(name, "symlink", "a symbolic link"))
        elif kind not in (0, _S_IFREG, _S_IFDIR):
            refusals.append(Refusal(name, "special-file", "neither a file nor a directory"))
        elif (kind == _S_IFDIR) != directory and kind:
            refusals.append(
                Refusal(name, "file-type", "its attributes and its name disagree on directory")
            )
    if central.external_attr & _DOS_REPARSE_POINT:
        refusals.append(Refusal(name, "symlink", "a Windows reparse point (link)"))
    elif central.external_attr & _DOS_DIRECTORY and not directory:
        refusals.append(
            Refusal(name, "file-type", "its attributes and its name disagree on directory")
        )
    if directory and central.size:
        refusals.append(Refusal(name, "file-type", "a directory entry holding data"))
    refusals += [Refusal(name, rule, detail) for rule, detail in _path_problems(central, directory)]
    return refusals


def _path_problems(central: _Central, directory: bool) -> list[tuple[str, str]]:
    raw, name = central.raw_name, central.name
    if central.flags & _FLAG_UTF8:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return [("name-encoding", "flagged UTF-8 but is not")]
    elif not raw.isascii():
        return [("name-encoding", "a non-ASCII name without the UTF-8 flag (read as CP437 by "
                 "some readers, as UTF-8 by others)")]  # fmt: skip
    return name_problems(name, directory=directory)


def name_problems(name: str, *, directory: bool = False) -> list[tuple[str, str]]:
    """The rules every name (in an archive or a manifest) follows: (rule, what was found)."""
    problems = []
    if not name:
        return [("name-empty", "an empty name")]
    if "\x00" in name:
        problems.append(("name-nul", "a NUL in its name (readers cut the name there)"))
    elif _CONTROL.search(name):
        problems.append(("name-control", "a control character in its name"))
    if "\\" in name:
        problems.append(("name-backslash", "a backslash in its name (a separator on Windows)"))
    if name.startswith("/"):
        problems.append(("name-absolute", "an absolute path"))
    if re.match(r"[A-Za-z]:", name):
        problems.append(("name-drive", "a drive letter"))
    elif ":" in name:
        problems.append(("name-colon", "a colon in its name (a drive or an NTFS stream)"))
    parts = (name[:-1] if directory else name).lstrip("/").split("/")
    if ".." in parts:
        problems.append(("name-parent", "a `..` component: it would climb out of the bag"))
    if "." in parts or "" in parts:
        problems.append(("name-not-canonical", "a `.` or empty component, or a trailing slash"))
    if unicodedata.normalize("NFC", name) != name:
        problems.append(
            ("name-unicode", "not in Unicode NFC (some readers normalise it, others do not)")
        )
    return problems


def name_key(name: str) -> str:
    """What a lenient reader may take a name for: two members with the same key are the same
    file to some reader (backslashes as separators, a name cut at a NUL, NFC, `.` and empty
    components, a drive letter, and Windows dropping a component's trailing dots and spaces).
    Case is kept: zip names are case-sensitive."""
    name = unicodedata.normalize("NFC", name.replace("\\", "/").split("\x00", 1)[0])
    parts = [p if p == ".." else p.rstrip(". ") for p in name.split("/")]
    parts = [p for p in parts if p]
    if parts and re.fullmatch(r"[A-Za-z]:", parts[0]):
        parts = parts[1:]
    return "/".join(parts)


def _duplicates(members: list[ZipMember]) -> list[Refusal]:
    seen: dict[str, ZipMember] = {}
    refusals = []
    for member in members:
        key = name_key(member.name)
        first = seen.setdefault(key, member)
        if first is not member:
            same = (
                "the same name"
                if first.name == member.name
                else f"the same file as {shown(first.name)}"
            )
            refusals.append(
                Refusal(member.name, "duplicate", f"a second member with {same}: readers "
                         "disagree on which one they take")
            )  # fmt: skip
    return refusals


def _local(handle: BinaryIO, central: _Central) -> tuple[ZipMember | None, list[Refusal]]:
    """The member as its local header describes it, checked against the central directory."""
    name = central.name
    handle.seek(central.local_offset)
    header = handle.read(_LOCAL.size)
    if len(header) != _LOCAL.size:
        return None, [Refusal(name, "local-header", "its local header lies outside the file")]
    sig, _, flags, method, _, _, crc, csize, size, name_len, extra_len = _LOCAL.unpack(header)
    if sig != _LOCAL_SIG:
        return None, [Refusal(name, "local-header", "no local header where it should start")]
    raw_name = handle.read(name_len)
    extra = _extra_fields(handle.read(extra_len))
    refusals = []
    if raw_name != central.raw_name:
        refusals.append(
            Refusal(
                name,
                "local-header",
                f"its local header names it {raw_name!r}: the central directory and the local "
                "header disagree",
            )
        )
    if extra is None:
        refusals.append(Refusal(name, "local-header", "a malformed extra field"))
        extra = {}
    if _UNICODE_PATH_EXTRA in extra and _UNICODE_PATH_EXTRA not in central.extra:
        refusals.append(Refusal(name, "second-name", "a Unicode-path extra field: a second name"))
    if flags != central.flags or method != central.method:
        refusals.append(
            Refusal(name, "local-header", "flags or method differ from the central directory")
        )
    zip64 = _ZIP64_EXTRA in extra
    if zip64:
        values = extra[_ZIP64_EXTRA]
        if len(values) >= 16:
            size, csize = struct.unpack_from("<QQ", values)
    declared = (crc, csize, size)
    expected = (central.crc, central.compressed_size, central.size)
    if flags & _FLAG_DESCRIPTOR:
        # The values follow the data; the header holds zeros (or, rarely, the same values).
        if declared not in ((0, 0, 0), expected):
            refusals.append(
                Refusal(name, "local-header", "CRC or sizes differ from the central directory")
            )
    elif declared != expected:
        refusals.append(
            Refusal(name, "local-header", "CRC or sizes differ from the central directory")
        )
    data_offset = central.local_offset + _LOCAL.size + name_len + extra_len
    end = data_offset + central.compressed_size
    if flags & _FLAG_DESCRIPTOR:
        handle.seek(end)
        length = 24 if zip64 else 16  # with its signature
        tail = handle.read(length)
        short = struct.Struct("<IQQ" if zip64 else "<III")
        if tail[:4] == _DESCRIPTOR_SIG and short.unpack_from(tail, 4) == expected:
            end += length
        elif len(tail) >= short.size and short.unpack_from(tail) == expected:
            end += short.size
        else:
            refusals.append(
                Refusal(name, "data-descriptor", "its data descriptor differs from the central "
                         "directory")
            )  # fmt: skip
    member = ZipMember(
        name=name,
        raw_name=central.raw_name,
        flags=central.flags,
        method=central.method,
        crc=central.crc,
        compressed_size=central.compressed_size,
        size=central.size,
        local_offset=central.local_offset,
        data_offset=data_offset,
        end_offset=end,
        is_directory=name.endswith("/"),
    )
    return member, refusals
