"""Layer sharing of the Nix images, measured on real docker archives.

Builds `image-<id>` for versions that differ from a base version in one thing, with the flake's real uv2nix /
pyproject.nix / build-system-pkgs and the stand-in nixpkgs, whose dockerTools runs nixpkgs' own closure-graph.py
and stream_layered_image.py. Every version has the bundled example's Python set (real CUDA torch from PyPI).
Each archive is read back (its layer tars, their digests and sizes), and the bench prints, per change, the
bytes of the changed version's image that are in layers the base image already has:

  node      one node pack at another commit
  model     one model file with other bytes (images with models: image-<id>-with-models)
  uv.lock   one more Python package (uv lock keeps every other pin, torch too)
  docs      a second commit of the flake that changes only README.md and docs/ (same version)

Targets: >= 99 % of bytes shared for a node-only change; a docs-only commit changes no layer.

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
        node = h.git_input(h.git_repo(src / "node-a", {"__init__.py": NODE.format(n=1)}), "node-a")
        node2 = h.git_input(h.git_repo(src / "node-b", {"__init__.py": NODE.format(n=2)}), "node-b")
        model = h.model_input(src / "files" / "m.safetensors", os.urandom(4 << 20))
        model2 = h.model_input(src / "files" / "m2.safetensors", os.urandom(4 << 20))

        def lock(vid, n=node, m=model):
            return h.version_lock(vid, core, {"pack": n}, {"checkpoints/m.safetensors": m}, torch="pypi")

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

        images, seconds = {}, {}
        for key, vid, models in (("base", "base", False), ("node", "node", False), ("uvlock", "uvlock", False),
                                 ("base+models", "base", True), ("model", "model", True)):
            images[key], seconds[key] = build_image(flake, vid, ov, models)
            print(f"built {images[key].name} in {seconds[key]:.0f} s", flush=True)
        before_docs = images["base"]
        (flake / "README.md").write_text("# readme, edited\n")
        (flake / "docs" / "guide.md").write_text("guide, edited\n")
        h.git("commit", "-q", "-am", "docs only", cwd=flake)
        after_docs, _ = build_image(flake, "base", ov)

        layers = {vid: layers_of(p) for vid, p in images.items()}
        total = sum(layers["base"].values())
        print(f"\nbase image: {len(layers['base'])} layers, {total / 1e9:.2f} GB uncompressed\n")
        print(f"{'change':<8} {'layers changed':>15} {'bytes changed':>15} {'bytes shared':>14}  target")
        for key, base_key, label, target in (("node", "base", "node", ">= 99 %"), ("model", "base+models", "model", ""),
                                             ("uvlock", "base", "uv.lock", "")):
            mine = layers[key]
            changed = {d: s for d, s in mine.items() if d not in layers[base_key]}
            shared = 1 - sum(changed.values()) / sum(mine.values())
            print(f"{label:<8} {len(changed):>15} {sum(changed.values()):>15,} {shared:>13.4%}  {target}")
        same = after_docs == before_docs
        docs_changed = 0 if same else len(set(layers_of(after_docs)) - set(layers["base"]))
        print(f"{'docs':<8} {docs_changed:>15} {'':>15} {'100.0000%' if same else '':>14}  no layer "
              f"({'the same image store path' if same else 'another image'})")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
