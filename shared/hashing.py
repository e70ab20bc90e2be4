"""A SHA-256 whose running state can be saved and restored in another process.

A resumable upload arrives in pieces, possibly at different ingest or vault processes, and the
clip's SHA-256 must still be computed over every byte as it streams. hashlib cannot export
its state, so this calls OpenSSL's libcrypto (the library hashlib itself uses, same speed)
through its long-stable ``SHA256_CTX`` interface: a plain 112-byte struct without pointers
(eight 32-bit chaining words, the bit count, the pending 64-byte block and its fill), which
is therefore the complete state of the hash and safe to store as bytes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib

_CTX_SIZE = 112  # sizeof(SHA256_CTX): h[8], Nl, Nh, data[16], num, md_len (32-bit words)


def _load() -> ctypes.CDLL:
    name = ctypes.util.find_library("crypto") or "libcrypto.so.3"
    lib = ctypes.CDLL(name)
    for function in (lib.SHA256_Init, lib.SHA256_Update, lib.SHA256_Final):
        function.restype = ctypes.c_int
    lib.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    return lib


_lib = _load()


class ResumableSha256:
    def __init__(self, state: bytes | None = None) -> None:
        if state is None:
            self._ctx = ctypes.create_string_buffer(_CTX_SIZE)
            if _lib.SHA256_Init(self._ctx) != 1:
                raise RuntimeError("SHA256_Init failed")
        else:
            if len(state) != _CTX_SIZE:
                raise ValueError("not a saved SHA-256 state")
            self._ctx = ctypes.create_string_buffer(state, _CTX_SIZE)

    def update(self, data: bytes) -> None:
        if _lib.SHA256_Update(self._ctx, data, len(data)) != 1:
            raise RuntimeError("SHA256_Update failed")

    def state(self) -> bytes:
        """The running state, to restore with ``ResumableSha256(state)``."""
        return self._ctx.raw

    def hexdigest(self) -> str:
        copy = ctypes.create_string_buffer(self._ctx.raw, _CTX_SIZE)  # finalising consumes it
        out = ctypes.create_string_buffer(32)
        if _lib.SHA256_Final(out, copy) != 1:
            raise RuntimeError("SHA256_Final failed")
        return out.raw.hex()


def _self_test() -> None:
    """Refuse to run on a libcrypto whose struct differs from the one assumed above."""
    first = ResumableSha256()
    first.update(b"abc" * 50)
    resumed = ResumableSha256(first.state())
    resumed.update(b"def")
    if resumed.hexdigest() != hashlib.sha256(b"abc" * 50 + b"def").hexdigest():
        raise RuntimeError("libcrypto's SHA256_CTX is not the expected one")


_self_test()
