"""The `.part` file a download writes into: opened without following a link put in its place, hashed in
chunks. Shared by `download` (the resume/verify/rename machinery) and the fetch functions of `schemes`."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from io import BufferedWriter
from pathlib import Path
from typing import Literal

CHUNK = 1 << 20
Progress = Callable[[int], None]  # called with the number of new bytes


def hash_file(path: str | os.PathLike[str], h: hashlib._Hash | None = None) -> hashlib._Hash:
    h = h or hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h


def open_part(part: Path, mode: Literal["ab", "wb"]) -> BufferedWriter:
    """Open a `.part` file without following a link put in its place (OSError ELOOP if one is there)."""
    return open(part, mode, opener=lambda path, flags: os.open(path, flags | os.O_NOFOLLOW, 0o666))
