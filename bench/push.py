"""Benchmark: a second push of an image that shares all but one layer with the first.

Runs Debian's docker-registry on 127.0.0.1 behind a byte-counting TCP proxy and
pushes two docker-archives with `comfyver.ship.push` (skopeo). Prints bytes sent to the
registry and wall time for each push, and their ratios (target: second/first
bytes < 5%).

    python bench/push.py [--layers 40] [--layer-mib 2]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from comfyver.ship import push  # noqa: E402

from tests.support.registry import Registry, write_docker_archive  # noqa: E402
from tests.support.tcpproxy import TCPProxy  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=40, help="layers per image (dockerTools uses up to 100)")
    ap.add_argument("--layer-mib", type=int, default=2)
    args = ap.parse_args()
    rnd = random.Random(7)
    size = args.layer_mib << 20
    layers = [{f"layer{i}/blob.bin": rnd.randbytes(size)} for i in range(args.layers)]
    changed = layers[:-1] + [{"changed/blob.bin": rnd.randbytes(size)}]
    with tempfile.TemporaryDirectory(prefix="comfyver-bench-") as tmp:
        tmp = Path(tmp)
        first, second = tmp / "first.tar", tmp / "second.tar"
        write_docker_archive(first, layers)
        write_docker_archive(second, changed)
        reg = Registry(tmp / "registry")
        proxy = TCPProxy(reg.port)
        try:
            rows = []
            for name, archive in (("first push", first), ("second push", second)):
                proxy.take()
                t0 = time.perf_counter()
                res = push.push(archive, push.parse_destination(f"127.0.0.1:{proxy.port}/bench/comfyui:{name[:5]}", "x"))
                rows.append((name, proxy.take(), time.perf_counter() - t0, res.digest))
        finally:
            reg.close()
    print(f"image: {args.layers} layers x {args.layer_mib} MiB; the second differs in its last layer only")
    for name, sent, secs, digest in rows:
        print(f"{name:<12} sent {sent / 2**20:9.2f} MiB  in {secs:6.2f} s  ({digest[:19]}...)")
    (_, b1, t1, _), (_, b2, t2, _) = rows
    print(f"bytes ratio second/first: {b2 / b1:.2%} (target < 5%)")
    print(f"time ratio second/first:  {t2 / t1:.2%}")
    return 0 if b2 / b1 < 0.05 else 1


if __name__ == "__main__":
    raise SystemExit(main())
