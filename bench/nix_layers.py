"""Layer sharing of the Nix images, measured on real docker archives.

Builds `image-<id>` for versions that differ from a base version in one thing, with the flake's real uv2nix /
pyproject.nix / build-system-pkgs and the stand-in nixpkgs, whose dockerTools runs nixpkgs' own closure-graph.py
and stream_layered_image.py. Every version has the bundled example's Python set (real CUDA torch from PyPI),
20 node packs and 10 model files (4 MiB each). Each archive is read back (its layer tars, their digests and
sizes), and the bench prints, per scenario, the image's layers and bytes, its layer plan (store paths, layers,
paths merged into a shared layer: image.nix's layerCheck) and what it shares with the base image:

  base      the base version (image-<id>; with models: image-<id>-with-models)
  node      one node pack at another commit
  model     one model file with other bytes (images with models)
  uv.lock   one more Python package (uv lock keeps every other pin, torch too)
  docs      a second commit of the flake that changes only README.md and docs/ (same version)

Targets: >= 99 % of bytes shared for a node-only change; a model-only change adds one model's bytes;
a docs-only commit changes no layer; no image merges paths into a shared layer.

Run: python bench/nix_layers.py [--keep DIR]   (first run: ~10 min, the env's 3.3 GB of wheels; then ~8 min)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from tests.nix import harness as h  # noqa: E402

NODE = "class N:\n    @classmethod\n    def INPUT_TYPES(cls):\n        return {{'required': {{}}}}\n" \
       "    RETURN_TYPES = ()\n    FUNCTION = 'run'\n    CATEGORY = 'bench'\n    def run(self):\n        return ()\n" \
       "NODE_CLASS_MAPPINGS = {{'BenchNode{n}': N}}\n"


def layers_of(archive: Path) -> dict[str, int]:
    """Layer digest (its folder in the archive) -> uncompressed bytes, read from the docker-archive stream."""
    zstd = subprocess.Popen(["zstd", "-dcq", str(archive)], stdout=subprocess.PIPE)
    out = {}
    with tarfile.open(fileobj=zstd.stdout, mode="r|") as tar:
        for m in tar:
            if m.name.endswith("/layer.tar"):
                out[m.name.split("/")[0]] = m.size
    if zstd.wait():
        raise SystemExit(f"zstd failed on {archive}")
    return out


def uv_lock_plus_one(dest: Path) -> Path:
    """The example's pyproject.toml + uv.lock with one more small package, locked by uv (others kept)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy2(h.EXAMPLE_PYTHON / name, dest / name)
    text = (dest / "pyproject.toml").read_text().replace('dependencies = [\n', 'dependencies = [\n  "six",\n', 1)
    (dest / "pyproject.toml").write_text(text)
    uv = shutil.which("uv") or str(Path(sys.prefix) / "bin" / "uv")
    subprocess.run([uv, "lock", "-q", "--project", str(dest)], check=True)
    return dest


def build_image(flake: Path, vid: str, ov: list[str], models: bool = False) -> tuple[Path, float]:
    t = time.perf_counter()
    attr = f"image-{vid}" + ("-with-models" if models else "")
    p = h.nix("build", "--json", "--no-link", f"{flake}#packages.{h.SYSTEM}.{attr}", *ov, timeout=7200)
    return Path(json.loads(p.stdout)[0]["outputs"]["out"]), time.perf_counter() - t


def layer_plan(flake: Path, vid: str, ov: list[str], models: bool = False) -> dict:
    """image.nix's layerCheck summary of the image: maxLayers, store layers, store paths, paths merged."""
    attr = f"image-{vid}" + ("-with-models" if models else "") + ".layerCheck"
    p = h.nix("build", "--json", "--no-link", f"{flake}#packages.{h.SYSTEM}.{attr}", *ov, timeout=7200)
    return json.loads(Path(json.loads(p.stdout)[0]["outputs"]["out"]).read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one, removed)")
    args = ap.parse_args()
    base = args.keep or h.workdir("comfyver-bench-layers-")
    base.mkdir(parents=True, exist_ok=True)
    try:
        src = base / "src"
        shutil.rmtree(src, ignore_errors=True)
        core = h.git_input(h.git_repo(src / "comfyui", {"main.py": "print('core')\n"}), "comfyui")
        nodes = {f"pack-{i:02d}": h.git_input(h.git_repo(src / f"pack-{i:02d}", {"__init__.py": NODE.format(n=i)}),
                                              f"pack-{i:02d}") for i in range(20)}
        node2 = h.git_input(h.git_repo(src / "pack-00-b", {"__init__.py": NODE.format(n=100)}), "pack-00")
        models = {f"checkpoints/m{i}.safetensors": h.model_input(src / "files" / f"m{i}.safetensors",
                                                                 os.urandom(4 << 20)) for i in range(10)}
        model2 = h.model_input(src / "files" / "m0-b.safetensors", os.urandom(4 << 20))

        def lock(vid, n=None, m=None):
            return h.version_lock(vid, core, {**nodes, **({"pack-00": n} if n else {})},
                                  {**models, **({"checkpoints/m0.safetensors": m} if m else {})}, torch="pypi")

        versions = {"base": lock("base"), "node": lock("node", n=node2), "model": lock("model", m=model2),
                    "uvlock": lock("uvlock")}
        flake_dir = base / "flake"
        shutil.rmtree(flake_dir, ignore_errors=True)
        flake = h.make_flake(flake_dir, versions)
        plus_one = uv_lock_plus_one(base / "uvlock-project")
        for name in ("pyproject.toml", "uv.lock"):
            shutil.copy2(plus_one / name, flake / "versions" / "uvlock" / name)
        (flake / "README.md").write_text("# readme\n")
        (flake / "docs").mkdir()
        (flake / "docs" / "guide.md").write_text("guide\n")
        h.git("add", "-A", cwd=flake)
        h.git("commit", "-q", "-m", "uv.lock with one more package; docs", cwd=flake)
        shutil.rmtree(base / "stand-in", ignore_errors=True)
        ov = h.stand_ins(base / "stand-in")

        images, seconds, plans = {}, {}, {}
        for key, vid, with_models in (("base", "base", False), ("node", "node", False), ("uvlock", "uvlock", False),
                                      ("base+models", "base", True), ("model", "model", True)):
            images[key], seconds[key] = build_image(flake, vid, ov, with_models)
            plans[key] = layer_plan(flake, vid, ov, with_models)
            print(f"built {images[key].name} in {seconds[key]:.0f} s", flush=True)
        before_docs = images["base"]
        (flake / "README.md").write_text("# readme, edited\n")
        (flake / "docs" / "guide.md").write_text("guide, edited\n")
        h.git("commit", "-q", "-am", "docs only", cwd=flake)
        images["docs"], _ = build_image(flake, "base", ov)
        plans["docs"] = layer_plan(flake, "base", ov, False)

        layers = {key: layers_of(p) for key, p in images.items()}
        print(f"\nevery version: 20 nodes, 10 models of 4 MiB; maxLayers {plans['base']['maxLayers']}\n")
        print(f"{'scenario':<14} {'layers':>6} {'bytes':>15} {'paths':>6} {'merged':>6} {'vs':<12} "
              f"{'layers changed':>14} {'bytes changed':>15} {'bytes shared':>13}  target")
        rows = (("base", "base", None, ""), ("base+models", "base+models", None, ""),
                ("node", "node", "base", ">= 99 %"), ("model", "model", "base+models", "1 model"),
                ("uv.lock", "uvlock", "base", ""), ("docs", "docs", "base", "no layer"))
        for label, key, base_key, target in rows:
            mine, plan = layers[key], plans[key]
            head = (f"{label:<14} {len(mine):>6} {sum(mine.values()):>15,} {plan['paths']:>6} "
                    f"{len(plan['merged']):>6}")
            if base_key is None:
                print(f"{head} {'':<12} {'':>14} {'':>15} {'':>13}  {target}")
                continue
            changed = {d: n for d, n in mine.items() if d not in layers[base_key]}
            shared = 1 - sum(changed.values()) / sum(mine.values())
            note = " (the same image store path)" if key == "docs" and images["docs"] == before_docs else ""
            print(f"{head} {base_key:<12} {len(changed):>14} {sum(changed.values()):>15,} {shared:>12.4%}  "
                  f"{target}{note}")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
