"""Fuzz target for comfyver's archive extraction (atheris / libFuzzer): archives built from fuzzed bytes --
link chains, `..`, absolute names, duplicates, entries below links -- must either be refused with a
ComfyverError or unpack with every path and link target inside the folder, nothing written beside it.

Run: python fuzz/archive_extract.py -max_total_time=60      (tests/test_archive.py runs it for a bounded time)
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from comfyver.base.errors import ComfyverError
    from comfyver.sources import archive

PARTS = ["a", "b", "esc", "..", ".", "", "/", "x.py"]
LINK, FILE, DIR = 0o120777, 0o100644, 0o40755


def build(fdp: atheris.FuzzedDataProvider) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for _ in range(fdp.ConsumeIntInRange(1, 8)):
            name = "/".join(PARTS[fdp.ConsumeIntInRange(0, len(PARTS) - 1)] for _ in range(fdp.ConsumeIntInRange(1, 5)))
            kind = fdp.ConsumeIntInRange(0, 2)
            if kind == 2:
                name += "/"
            target = "/".join(PARTS[fdp.ConsumeIntInRange(0, len(PARTS) - 1)] for _ in range(fdp.ConsumeIntInRange(1, 6)))
            info = zipfile.ZipInfo(name or "x")
            info.external_attr = (LINK if kind == 1 else DIR if kind == 2 else FILE) << 16
            zf.writestr(info, target.encode() if kind == 1 else b"data")
    return buf.getvalue()


def check(root: Path, box: Path) -> None:
    real = Path(os.path.realpath(root))
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(os.path.realpath(Path(dirpath) / name))
            if p != real and real not in p.parents:
                raise AssertionError(f"{Path(dirpath) / name} resolves outside: {p}")
    extra = sorted(str(p) for p in box.iterdir() if p.name not in ("out", "a.zip"))
    if extra:
        raise AssertionError(f"written beside the folder: {extra}")


def one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    strip = fdp.ConsumeBool()
    with tempfile.TemporaryDirectory() as tmp:
        box = Path(tmp)
        (box / "a.zip").write_bytes(build(fdp))
        try:
            archive.extract_zip(box / "a.zip", box / "out", strip_root=strip, what="fuzz")
        except ComfyverError:
            if (box / "out").exists():
                raise AssertionError("refused, but the folder was left behind") from None
            return
        check(box / "out", box)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
