"""Copy a Python env built by pyproject.nix (a venv of links into one store path per package) into ONE store
path, except the packages of at least MIN_BYTES (torch, nvidia-*, triton, ...), which stay links.

Why: an image's layers are store paths (dockerTools: one layer per path, at most maxLayers). A version env of a
hundred small packages would spill into one shared last layer that changes with anything; flattened, the
image has a few dozen paths, each its own layer, and a node or model change leaves every env layer as it was.

usage: python flatten_env.py VENV OUT MIN_BYTES
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

STORE = "/nix/store/"


def store_path(p: str) -> str | None:
    if not p.startswith(STORE):
        return None
    return STORE + p[len(STORE):].split("/", 1)[0]


def tree_bytes(root: str) -> int:
    total = 0
    for d, _, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_size
            except OSError:
                pass
    return total


def main(venv: str, out: str, min_bytes: int) -> None:
    venv = os.path.realpath(venv)
    sizes: dict[str, int] = {}

    def kept(target: str) -> bool:
        sp = store_path(target)
        if sp is None or sp == venv:
            return False
        if sp not in sizes:
            # an interpreter (bin/python*) stays a link too: it is shared by every env on it
            sizes[sp] = min_bytes if os.path.isdir(os.path.join(sp, "include")) else tree_bytes(sp)
        return sizes[sp] >= min_bytes

    def copy(src: str, dst: str) -> None:
        if os.path.islink(src):
            target = os.path.realpath(src)
            if kept(target) or not os.path.exists(target):
                os.symlink(target if os.path.exists(target) else os.readlink(src), dst)
            elif os.path.isdir(target):
                os.mkdir(dst)
                for name in sorted(os.listdir(target)):
                    copy(os.path.join(target, name), os.path.join(dst, name))
            else:
                shutil.copy2(target, dst)
        elif os.path.isdir(src):
            os.mkdir(dst)
            for name in sorted(os.listdir(src)):
                copy(os.path.join(src, name), os.path.join(dst, name))
        else:
            shutil.copy2(src, dst)
            if src.startswith(venv + "/"):
                rewrite(dst)

    def rewrite(path: str) -> None:
        """The env's own files (scripts, pyvenv.cfg, wrappers) name the env: name the copy instead."""
        data = Path(path).read_bytes()
        if venv.encode() in data:
            mode = os.stat(path).st_mode
            os.chmod(path, mode | 0o200)
            Path(path).write_bytes(data.replace(venv.encode(), out.encode()))
            os.chmod(path, mode)

    copy(venv, out)
    # Compiled files name their source's store path (co_filename): drop the copies' and compile them again
    # here, so the env refers to itself and not to the package paths it was copied from.
    site = []
    for d, dirs, files in os.walk(out):
        if "__pycache__" in dirs:
            shutil.rmtree(os.path.join(d, "__pycache__"))
            dirs.remove("__pycache__")
        dirs[:] = [x for x in dirs if not os.path.islink(os.path.join(d, x))]
        if d.endswith("/site-packages"):
            site.append(d)
    for d in site:
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", os.environ.get("NIX_BUILD_CORES", "1"),
                        *[os.path.join(d, x) for x in sorted(os.listdir(d)) if not os.path.islink(os.path.join(d, x))]],
                       check=True, stdout=subprocess.DEVNULL)
    for d, dirs, files in os.walk(out):
        for name in files:
            p = os.path.join(d, name)
            if not os.path.islink(p) and os.access(p, os.X_OK) and d.endswith("/bin"):
                rewrite(p)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
