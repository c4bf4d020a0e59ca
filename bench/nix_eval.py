"""Evaluation time of the flake as versions/ grows: 5 versions vs 50.

Generates N versions (each with its own core rev/hash, two nodes and two
models, all distinct), puts them in a throw-away copy of the flake, swaps the
stand-in nixpkgs in (uv2nix, pyproject.nix and build-system-pkgs are the real ones; every version has the
bundled example's uv.lock), and times with the real Nix, eval cache off:
  - the attribute names of packages.x86_64-linux
  - every drvPath of packages.x86_64-linux (all versions, models, images)
Prints seconds (best of --repeat) and the 50/5 growth ratio; linear growth is
a ratio of about 10 in drvPath time per version.

Run: python bench/nix_eval.py        (about half a minute)
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from tests.nix import harness as h  # noqa: E402

BASE = json.loads((h.FIXTURES / "full" / "version.json").read_text())


def digest(seed: str) -> bytes:
    return hashlib.sha256(seed.encode()).digest()


def versions(n: int) -> dict[str, dict]:
    out = {}
    for i in range(n):
        vid = f"v{i:03d}"
        lock = copy.deepcopy(BASE)
        lock["id"] = vid
        lock["python"] = {"requires": "==3.11.*", "torch": "pypi"}  # what the example's uv.lock holds
        lock["comfyui"]["locked"]["rev"] = digest(vid + "rev").hex()[:40]
        lock["comfyui"]["locked"]["hash"] = "sha256-" + base64.b64encode(digest(vid + "core")).decode()
        for name, node in lock["nodes"].items():
            node["locked"]["hash"] = "sha256-" + base64.b64encode(digest(vid + name)).decode()
        for path, model in lock["models"].items():
            model["locked"]["sha256"] = digest(vid + path).hex()
        out[vid] = lock
    return out


def timed(args: list[str], repeat: int) -> tuple[float, str]:
    best, out = float("inf"), ""
    for _ in range(repeat):
        t = time.perf_counter()
        out = h.nix(*args).stdout
        best = min(best, time.perf_counter() - t)
    return best, out


def measure(n: int, repeat: int) -> dict:
    work = h.workdir("comfyver-bench-")
    try:
        flake = h.make_flake(work / "flake", versions(n))
        ov = h.stand_ins(work / "stand-in")
        common = ["--json", "--option", "eval-cache", "false", *ov]
        attr = f"{flake}#packages.{h.SYSTEM}"
        h.nix("eval", *common, attr, "--apply", "builtins.attrNames")  # warm-up: lock the overrides once
        t_names, names = timed(["eval", *common, attr, "--apply", "builtins.attrNames"], repeat)
        t_drvs, drvs = timed(["eval", *common, attr, "--apply", "ps: builtins.mapAttrs (n: p: p.drvPath) ps"], repeat)
        assert len(json.loads(names)) == 4 * n + 1 and len(json.loads(drvs)) == 4 * n + 1
        return {"versions": n, "attributes": 4 * n + 1, "names_s": t_names, "drvpaths_s": t_drvs}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=5)
    ap.add_argument("--large", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    small, large = measure(args.small, args.repeat), measure(args.large, args.repeat)
    print(f"{'versions':>8} {'attrs':>6} {'names (s)':>10} {'drvPaths (s)':>13}")
    for r in (small, large):
        print(f"{r['versions']:>8} {r['attributes']:>6} {r['names_s']:>10.3f} {r['drvpaths_s']:>13.3f}")
    k = large["versions"] / small["versions"]
    print(f"growth {small['versions']} -> {large['versions']} versions (x{k:g}): "
          f"names x{large['names_s'] / small['names_s']:.2f}, drvPaths x{large['drvpaths_s'] / small['drvpaths_s']:.2f}")
    print(f"drvPaths per version: {small['drvpaths_s'] / small['versions'] * 1000:.1f} ms at {small['versions']}, "
          f"{large['drvpaths_s'] / large['versions'] * 1000:.1f} ms at {large['versions']}; "
          f"target < 2 s at {large['versions']}: {'met' if large['drvpaths_s'] < 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
