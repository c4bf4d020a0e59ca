"""Copy a Python env built by pyproject.nix (a venv of links into one store path per package) into ONE store
path, except the packages of at least MIN_BYTES (torch, nvidia-*, triton, ...) and what their libraries link
(their RUNPATHs name them, so they are in the closure anyway), which stay links.

Why: an image's layers are store paths (dockerTools: one layer per path, at most maxLayers). A version env of a
hundred small packages would spill into one shared last layer that changes with anything; flattened, the
image has a few dozen paths, each its own layer, and a node or model change leaves every env layer as it was.

The copy must not refer to the packages it copied, or they stay in the closure:
- bytecode names its source file (co_filename): the copies' __pycache__ are dropped and compiled again;
- auto-patchelf wrote absolute RUNPATHs (a wheel's own `<pkg>.libs`): those naming a copied package are
  rewritten to the copy (patchelf --set-rpath);
- the env's own files (bin/ scripts, pyvenv.cfg, the python wrapper) name the env: rewritten to OUT, which has
  the same length (same name, same store hash length), so binaries stay intact.

usage: python flatten_env.py VENV OUT MIN_BYTES
"""

from __future__ import annotations

import contextlib
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


def is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def rpath(path: str) -> list[str]:
    r = subprocess.run(["patchelf", "--print-rpath", path], capture_output=True, text=True)
    return [e for e in r.stdout.strip().split(":") if e] if r.returncode == 0 else []


def packages_of(venv: str) -> set[str]:
    """The store paths the venv's links point into (its packages and its interpreter)."""
    found = set()
    for d, dirs, files in os.walk(venv):
        for name in dirs + files:
            p = os.path.join(d, name)
            if os.path.islink(p):
                sp = store_path(os.path.realpath(p))
                if sp and sp != venv:
                    found.add(sp)
    return found


def kept_packages(packages: set[str], min_bytes: int) -> set[str]:
    """Large packages, interpreters, and (to a fixpoint) every package a kept one's libraries link."""
    kept = {p for p in packages if os.path.isdir(os.path.join(p, "include")) or tree_bytes(p) >= min_bytes}
    todo = list(kept)
    while todo:
        p = todo.pop()
        for d, _, files in os.walk(p):
            for f in files:
                fp = os.path.join(d, f)
                if ".so" in f and not os.path.islink(fp) and is_elf(fp):
                    for entry in rpath(fp):
                        sp = store_path(entry)
                        if sp in packages and sp not in kept:
                            kept.add(sp)
                            todo.append(sp)
    return kept


@contextlib.contextmanager
def writable(path: str):
    """A copied file keeps its store mode (read-only): writable while it is rewritten, then as it was."""
    mode = os.stat(path).st_mode
    os.chmod(path, mode | 0o200)
    try:
        yield
    finally:
        os.chmod(path, mode)


def main(venv: str, out: str, min_bytes: int) -> None:
    venv = os.path.realpath(venv)
    if len(out) != len(venv):
        raise SystemExit(f"flatten_env: {out} must have the length of {venv} (give the copy the env's name)")
    packages = packages_of(venv)
    kept = kept_packages(packages, min_bytes)
    copied = packages - kept

    def copy(src: str, dst: str) -> None:
        if os.path.islink(src):
            target = os.path.realpath(src)
            sp = store_path(target)
            link = os.readlink(src)
            if sp == venv:  # a link inside the env (lib64 -> lib): the same link inside the copy
                os.symlink(out + link[len(venv):] if link.startswith(venv) else link, dst)
                return
            if sp in kept or not os.path.exists(target):  # into a kept package, or dangling: stays a link
                os.symlink(target if os.path.exists(target) else link, dst)
                return
            src = target  # into a copied package: copy what it points to
        if os.path.isdir(src):
            os.mkdir(dst)
            for name in sorted(os.listdir(src)):
                copy(os.path.join(src, name), os.path.join(dst, name))
        else:
            shutil.copy2(src, dst)
            if src.startswith(venv + "/"):
                rewrite(dst)

    def rewrite(path: str) -> None:
        data = Path(path).read_bytes()
        if venv.encode() in data:
            with writable(path):
                Path(path).write_bytes(data.replace(venv.encode(), out.encode()))

    copy(venv, out)

    site = []
    for d, dirs, files in os.walk(out):
        if "__pycache__" in dirs:
            shutil.rmtree(os.path.join(d, "__pycache__"))
            dirs.remove("__pycache__")
        dirs[:] = [x for x in dirs if not os.path.islink(os.path.join(d, x))]
        if d.endswith("/site-packages"):
            site.append(d)
        for name in files:
            p = os.path.join(d, name)
            if os.path.islink(p):
                continue
            if d.endswith("/bin") and os.access(p, os.X_OK):
                rewrite(p)
            if (".so" in name or d.endswith("/bin")) and is_elf(p):
                old = rpath(p)
                new = [out + e[len(store_path(e)):] if store_path(e) in copied else e for e in old]
                if new != old:
                    with writable(p):
                        subprocess.run(["patchelf", "--set-rpath", ":".join(new), p], check=True)
    # Compiled files name their source's store path: compile the copies here, so they name the env. A file
    # that does not compile (a template, a Python 2 leftover) is left as uv's install leaves it: uncompiled.
    for d in site:
        entries = [os.path.join(d, x) for x in sorted(os.listdir(d)) if not os.path.islink(os.path.join(d, x))]
        if entries:
            subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", os.environ.get("NIX_BUILD_CORES", "1"),
                            *entries], stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
