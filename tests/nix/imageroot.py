"""Run a program in an image's root file system, as a container runtime would (tests only; needs root).

The root is what nixpkgs' stream_layered_image.py writes into the image (conf.json): the customisation layer
(unpacked, writable, as a container's root is) and every store path of `store_layers` (bound read-only).
The program runs in a private mount namespace, chrooted there, with the image config's Env and nothing else.

The stand-in nixpkgs' packages are links to the host's files (its interpreters, bash, gcc): a real nixpkgs has
those in store paths of the image. So the host files the image's store links name are bound at their own paths,
with what the host's gcc and interpreters need besides (gcc's parts, `as`, `ld`, the host's library folder),
except the names triton looks a compiler up by (`gcc`, `clang`): only what the image provides may answer that.
The host's library folder is /usr/lib/x86_64-linux-gnu, the folder the NVIDIA container toolkit injects the
driver into on Debian and Ubuntu hosts: it is the driver folder (`driver`) over the host's (an overlay).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path

DRIVER_DIR = "/usr/lib/x86_64-linux-gnu"
HOST_LIBS = "/usr/lib/x86_64-linux-gnu"
# what the host's gcc runs and reads besides its driver (found on PATH: as, ld), bound at their host paths
# and the folder the host's libc.so linker script names (/lib/... on a merged-/usr host)
HOST_TOOLCHAIN = ["/usr/lib/gcc", "/usr/libexec/gcc", "/usr/include", "/lib/x86_64-linux-gnu"]
HOST_PATH_TOOLS = ["as", "ld"]
NEVER_BOUND = {"gcc", "clang"}  # triton's lookups (besides $CC)
# `bind SRC DST`: SRC read-only at $root/DST, unless something is there already (shell lines)
BIND = ['bind() { src=$1; dst=$root$2; if [ -e "$dst" ] || [ -L "$dst" ]; then return 0; fi',
        '  if [ -d "$src" ]; then mkdir -p "$dst"; else mkdir -p "$(dirname "$dst")"; : > "$dst"; fi',
        '  mount --bind "$src" "$dst"; mount -o remount,bind,ro "$dst"; }']


def unpack(conf: dict, root: Path) -> list[str]:
    """The customisation layer under `root`; returns the image's store paths."""
    root.mkdir(parents=True)
    with tarfile.open(Path(conf["customisation_layer"]) / "layer.tar") as t:
        t.extractall(root, filter="tar")  # links into the store stay links
    return [p for layer in conf["store_layers"] for p in layer]


def host_targets(store_paths: list[str]) -> list[str]:
    """The host files the image's store paths link to (absolute links out of the store, as the stand-in's)."""
    found: set[str] = set()
    for top in store_paths:
        entries = [top] if not os.path.isdir(top) or os.path.islink(top) else []
        for dirpath, dirnames, filenames in os.walk(top):
            entries += [os.path.join(dirpath, n) for n in dirnames + filenames]
        for e in entries:
            if os.path.islink(e):
                t = os.readlink(e)
                if t.startswith("/") and not t.startswith("/nix/store/") and os.path.exists(t):
                    found.add(t)
    return sorted(t for t in found if os.path.basename(t) not in NEVER_BOUND)


def run(conf: dict, root: Path, store_paths: list[str], driver: Path, argv: list[str], ldconfig: str = "host",
        timeout: float = 600) -> subprocess.CompletedProcess:
    """`argv` in the image's root (see the top), with the config's Env; before it, the toolkit's step: `driver`'s
    files in DRIVER_DIR, and ldconfig run in the root as libnvidia-container's nvc_ldcache_update runs it:
    `ldconfig -f /etc/ld.so.conf -C /etc/ld.so.cache <folder>` with an empty environment, `ldconfig` being the
    host's (its default, "@/sbin/ldconfig") or, `ldconfig="image"`, the image's /sbin/ldconfig."""
    toolkit = {"host": f'{shutil.which("ldconfig") or "/sbin/ldconfig"} -r "$root"',
               "image": f'env -i {shutil.which("chroot") or "/usr/sbin/chroot"} "$root" /sbin/ldconfig'}[ldconfig]
    binds = host_targets(store_paths) + [d for d in HOST_TOOLCHAIN if os.path.isdir(d)]
    binds += [os.path.realpath(shutil.which(t) or f"/usr/bin/{t}") + "=/usr/bin/" + t for t in HOST_PATH_TOOLS]
    lines = ["set -eu", f"root={shlex.quote(str(root))}",
             *BIND,
             # the store paths first: a host file never stands in for one
             *[f"bind {shlex.quote(p)} {shlex.quote(p)}" for p in store_paths if not os.path.islink(p)],
             *[f"ln -s {shlex.quote(os.readlink(p))} \"$root\"{shlex.quote(p)}" for p in store_paths if os.path.islink(p)],
             f'mount -t overlay overlay -o lowerdir={shlex.quote(str(driver))}:{HOST_LIBS} "$root"{DRIVER_DIR}',
             *[f"bind {shlex.quote(b.split('=')[0])} {shlex.quote(b.split('=')[-1])}" for b in binds],
             'mkdir -p "$root/dev" "$root/proc"; mount --rbind /dev "$root/dev"; mount --rbind /proc "$root/proc"',
             f'{toolkit} -f /etc/ld.so.conf -C /etc/ld.so.cache {DRIVER_DIR}',
             'exec env -i "$@"']
    cmd = ["unshare", "-m", "--propagation", "private", "bash", "-c", "\n".join(lines), "in-image-root",
           *conf["config"]["Env"], shutil.which("chroot") or "/usr/sbin/chroot", str(root), *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def stub_libcuda(cuda_h: Path, dest: Path) -> Path:
    """A libcuda.so.1 that defines every driver API function cuda.h names (each returns an error): the driver
    stand-in. Built with the host's gcc."""
    import re
    names = sorted(set(re.findall(r"\b(cu[A-Z][A-Za-z0-9_]*)\b", cuda_h.read_text())))
    dest.mkdir(parents=True, exist_ok=True)
    src = dest.parent / "libcuda-stub.c"
    src.write_text("".join(f"int {n}(void) {{ return 999; }}\n" for n in names))  # CUDA_ERROR_UNKNOWN
    so = dest / "libcuda.so.1"
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(so), str(src)], check=True)
    return so


def json_tail(p: subprocess.CompletedProcess) -> dict:
    """The JSON object a probe printed last."""
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if p.returncode or not lines:
        raise AssertionError(f"probe failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return json.loads(lines[-1])


def start(root: Path, store_paths: list[str], env: dict[str, str], argv: list[str], **popen: object) -> subprocess.Popen:
    """Start `argv` in an unpacked image root (umoci's rootfs: the image's own store paths are in it) with `env`
    and nothing else: the host files the stand-in's store links name bound at their paths (see the top), /dev
    and /proc; no driver. For a long-running program (a worker): the caller stops it."""
    lines = ["set -eu", f"root={shlex.quote(str(root))}",
             *BIND,
             *[f"bind {shlex.quote(t)} {shlex.quote(t)}" for t in host_targets(store_paths)],
             # what those host programs link (bash: libtinfo ...): the host's library folder, at /lib/<triplet>
             # only: /usr/lib/<triplet> is the image's empty driver folder, first on its LD_LIBRARY_PATH, where
             # the host's libraries (libpython of another build) would shadow what the interpreters' RUNPATHs name
             'mkdir -p "$root/lib/x86_64-linux-gnu"',
             f'mount --bind {HOST_LIBS} "$root/lib/x86_64-linux-gnu"; mount -o remount,bind,ro "$root/lib/x86_64-linux-gnu"',
             'mkdir -p "$root/dev" "$root/proc"; mount --rbind /dev "$root/dev"; mount --rbind /proc "$root/proc"',
             'exec env -i "$@"']
    cmd = [shutil.which("unshare") or "unshare", "-m", "--propagation", "private", "bash", "-c", "\n".join(lines),
           "in-image-root", *[f"{k}={v}" for k, v in env.items()], shutil.which("chroot") or "/usr/sbin/chroot",
           str(root), *argv]
    return subprocess.Popen(cmd, **popen)  # type: ignore[call-overload]
