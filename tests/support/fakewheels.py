"""A local package index (PEP 503 simple pages over tiny pure-Python wheels, a few hundred bytes each) for `uv lock`
runs that must pick among exact versions (the torch family) without asking PyPI: point uv at it with
`UV_DEFAULT_INDEX=<index(...)>` (uv_lock passes the environment through). A find-links folder would not do:
`uv lock` still asks PyPI beside it (UV_NO_INDEX is not honoured there) and PyPI's newer torch wins."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def wheel(root: Path, name: str, version: str, requires: list[str] | None = None) -> Path:
    """Write `<name>-<version>-py3-none-any.whl` (version may carry a local label: `2.11.0+cu128`) into `root`."""
    root.mkdir(parents=True, exist_ok=True)
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{name.replace('-', '_')}/__init__.py": b"",
        f"{dist}.dist-info/METADATA": ("Metadata-Version: 2.1\n" f"Name: {name}\n" f"Version: {version}\n"
                                       + "".join(f"Requires-Dist: {r}\n" for r in requires or [])).encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: fakewheels\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = f"{dist}.dist-info/RECORD"
    lines = [_record_line(p, d) for p, d in files.items()] + [f"{record},,"]
    files[record] = ("\n".join(lines) + "\n").encode()
    out = root / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as z:
        for p, d in files.items():
            z.writestr(p, d)
    return out


def index(root: Path, packages: dict[str, list[str] | dict[str, list[str]]]) -> str:
    """`{name: [versions]}` or `{name: {version: [requires]}}` -> wheels under `root/files` and the file:// URL
    of the simple index listing every wheel there (call again to add packages)."""
    for name, versions in packages.items():
        items = versions.items() if isinstance(versions, dict) else ((v, []) for v in versions)
        for version, requires in items:
            wheel(root / "files", name, version, requires)
    by_name: dict[str, list[str]] = {}
    for whl in sorted((root / "files").glob("*.whl")):
        by_name.setdefault(whl.name.split("-", 1)[0].replace("_", "-").lower(), []).append(whl.name)
    for name, files in by_name.items():
        page = root / "simple" / name / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        links = "".join(f'<a href="../../files/{f}">{f}</a>\n' for f in files)
        page.write_text(f"<html><body>\n{links}</body></html>\n")
    return (root / "simple").as_uri()
