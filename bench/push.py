"""Benchmark: what a push sends to the registry, each push from a fresh runner (no skopeo blob-info cache).

Runs Debian's docker-registry on 127.0.0.1 behind a byte-counting TCP proxy. The image is shaped like a
version's: many large env layers (torch, nvidia-*, ...), one small layer per node, and a tree layer that
names them. Scenarios, each on a fresh runner (`tests.support.registry.fresh_runner_path`: every skopeo call
gets an empty HOME and, for root, an empty /var/lib/containers):

- first push: nothing in the registry;
- node-only change: one node's layer and the tree layer differ (target: bytes sent <= 1 % of the image);
- docs-only commit: the same image again (target: nothing but the manifest);
- and, as the honest peer, the same node-only change pushed the way `push` did before (skopeo straight from
  the docker-archive, compressing while sending), also from a fresh runner.

    python bench/push.py [--env-layers 30] [--env-mib 8] [--nodes 20] [--node-kib 256]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from comfyver.ship import push  # noqa: E402

from tests.support.registry import Registry, fresh_runner_path, write_docker_archive  # noqa: E402
from tests.support.tcpproxy import TCPProxy  # noqa: E402


def image_layers(rnd: random.Random, env_layers: int, env_bytes: int, nodes: list[bytes]) -> list[dict[str, bytes]]:
    envs = [{f"nix/store/env{i}/lib.so": random.Random(i).randbytes(env_bytes)} for i in range(env_layers)]
    node_layers = [{f"nix/store/node{i}/__init__.py": body} for i, body in enumerate(nodes)]
    tree = {"nix/store/tree/nodes.txt": b"\n".join(n[:16].hex().encode() for n in nodes)}
    return [*envs, *node_layers, tree]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env-layers", type=int, default=30)
    ap.add_argument("--env-mib", type=int, default=8, help="size of each env layer")
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--node-kib", type=int, default=256)
    args = ap.parse_args()
    rnd = random.Random(7)
    nodes = [rnd.randbytes(args.node_kib << 10) for _ in range(args.nodes)]
    changed = [*nodes[:-1], rnd.randbytes(args.node_kib << 10)]
    with tempfile.TemporaryDirectory(prefix="comfyver-bench-") as tmp_name:
        tmp = Path(tmp_name)
        first, second = tmp / "first.tar", tmp / "second.tar"
        write_docker_archive(first, image_layers(rnd, args.env_layers, args.env_mib << 20, nodes))
        write_docker_archive(second, image_layers(rnd, args.env_layers, args.env_mib << 20, changed))
        image_bytes = second.stat().st_size
        os.environ["PATH"] = fresh_runner_path(tmp / "fresh-bin")
        rows: list[tuple[str, int, float]] = []
        for route in ("push", "direct"):  # a registry of its own per route: each starts empty
            reg = Registry(tmp / f"registry-{route}")
            proxy = TCPProxy(reg.port)
            scenarios = (("first push", first), ("node-only change", second), ("docs-only commit", second))
            try:
                for n, (name, archive) in enumerate(scenarios):
                    if route == "direct" and name == "docs-only commit":
                        continue
                    proxy.take()
                    t0 = time.perf_counter()
                    ref = f"127.0.0.1:{proxy.port}/bench/comfyui:s{n}"
                    if route == "push":
                        push.push(archive, push.parse_destination(ref, "x"))
                    else:
                        subprocess.run([shutil.which("skopeo") or "skopeo", "copy", "-q", "--dest-tls-verify=false",
                                        f"docker-archive:{archive}", f"docker://{ref}"], check=True)
                    rows.append((f"{route:<7}{name}", proxy.take(), time.perf_counter() - t0))
            finally:
                reg.close()
    print(f"image: {args.env_layers} env layers x {args.env_mib} MiB, {args.nodes} node layers x {args.node_kib} KiB, "
          f"a tree layer ({image_bytes / 2**20:.1f} MiB uncompressed); every push from a fresh runner")
    print("push   = comfyver push (deterministic compression, then skopeo HEADs every blob)")
    print("direct = skopeo copy docker-archive: -> docker:// (what push did before; the peer)")
    for name, sent, secs in rows:
        print(f"{name:<26} sent {sent / 2**20:9.3f} MiB ({sent / image_bytes:7.2%} of the image)  in {secs:6.2f} s")
    sent = {name.split(None, 1)[0] + " " + name.split(None, 1)[1]: b for name, b, _ in rows}
    node_only = sent["push node-only change"] / image_bytes
    docs_only = sent["push docs-only commit"] / image_bytes
    print(f"node-only change, fresh runner: {node_only:.2%} of the image (target <= 1 %); "
          f"the peer sent {sent['direct node-only change'] / image_bytes:.2%}")
    print(f"docs-only commit, fresh runner: {sent['push docs-only commit']} bytes ({docs_only:.3%}: the manifest)")
    return 0 if node_only <= 0.01 else 1


if __name__ == "__main__":
    raise SystemExit(main())
