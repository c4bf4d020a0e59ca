"""Benchmark: a version's models onto two network volumes, comfyver vs `aws s3 sync`, side by side in one run.

    python bench/volume_sync.py [--models 3] [--model-mb 200]

Two "datacenters" are two moto S3 servers, each behind a TCP proxy that counts the bytes sent to it. Both tools
start from the same verified files on local disk (comfyver's local model store; `aws` gets a folder of hard
links to the same blobs, laid out as the volume: models/sha256/<hex>), and write the same keys into their own
bucket on each server. Each tool runs as its own process, once cold (empty volumes) and once warm (nothing to
do). Printed: wall time and bytes sent per run, and the ratios comfyver / aws.

What differs in the work: comfyver asks RunPod's REST API (a local server here) for each volume's datacenter,
records each object's sha256 and checks size, sha256 and ETag after upload; `aws s3 sync` records no hash and
decides "unchanged" by size and modification time. Needs the `aws` command (pip install awscli).
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
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from tests.support.gitserver import GitServer  # noqa: E402
from tests.support.httpserver import HTTPServer  # noqa: E402
from tests.support.s3volume import MotoDatacenter  # noqa: E402
from tests.support.tcpproxy import TCPProxy  # noqa: E402
from tests.test_realize_helpers import make_project  # noqa: E402

MB = 1_000_000


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--model-mb", type=int, default=200)
    a = ap.parse_args()
    aws = shutil.which("aws")
    if not aws:
        raise SystemExit("bench/volume_sync.py needs the aws command: pip install awscli")

    tmp = Path(tempfile.mkdtemp(prefix="bench-volume-"))
    git, http = GitServer(tmp / "git"), HTTPServer(tmp / "http")
    (tmp / "http").mkdir()
    http.files_root = tmp / "http"
    dcs, proxies = [], []
    try:
        proj = make_project(tmp, git, http, models={f"checkpoints/m{i}.safetensors": os.urandom(a.model_mb * MB)
                                                    for i in range(a.models)})
        total = a.models * a.model_mb * MB
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "scripts"), str(ROOT)]),
               "COMFYVER_MODELS": str(tmp / "store"), "COMFYVER_CACHE": str(tmp / "cache")}
        comfyver = [sys.executable, "-m", "comfyver", "--root", str(proj.root), "models", "sync", proj.vid]
        print(f"{a.models} model(s) of {a.model_mb} MB, two volumes; filling the local store ...", flush=True)
        timed(comfyver, env)  # downloads into the local store and hashes once (not measured)

        dcs = [MotoDatacenter(dc, [f"vol{i}c", f"vol{i}aws"], tmp / f"moto-{dc}.log", check_keys=False)
               for i, dc in ((1, "EU-RO-1"), (2, "US-KS-2"))]
        proxies = [TCPProxy(dc.port) for dc in dcs]
        rest = HTTPServer()
        for i, dc in ((1, "EU-RO-1"), (2, "US-KS-2")):
            rest.routes[f"/v1/networkvolumes/vol{i}c"] = {"id": f"vol{i}c", "dataCenterId": dc}
        env.update({"RUNPOD_REST_URL": rest.url + "/v1", "RUNPOD_API_KEY": "bench",
                    "COMFYVER_RUNPOD_S3_ENDPOINTS": f"EU-RO-1={proxies[0].url},US-KS-2={proxies[1].url}",
                    "RUNPOD_S3_ACCESS_KEY": "bench", "RUNPOD_S3_SECRET_KEY": "bench",
                    "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})

        # the same blobs for aws, as hard links laid out like the volume
        awsdir = tmp / "aws-src" / "models" / "sha256"
        awsdir.mkdir(parents=True)
        for blob in (tmp / "store" / "sha256").iterdir():
            if len(blob.name) == 64:
                os.link(blob, awsdir / blob.name)

        def run_comfyver() -> float:
            return timed([*comfyver, "--to", "runpod://vol1c", "--to", "runpod://vol2c"], env)

        def run_aws() -> float:
            return sum(timed([aws, "s3", "sync", str(awsdir.parent), f"s3://vol{i}aws/models", "--endpoint-url",
                              proxies[i - 1].url, "--only-show-errors"], env) for i in (1, 2))

        rows = {}
        for phase in ("cold", "warm"):
            for name, run in (("aws s3 sync", run_aws), ("comfyver", run_comfyver)):
                for p in proxies:
                    p.take()
                seconds = run()
                rows[(phase, name)] = (seconds, sum(p.take() for p in proxies))
                print(f"  {phase} {name:<12} {seconds:7.2f} s  {rows[(phase, name)][1]:>13,} bytes sent", flush=True)
        print()
        for phase in ("cold", "warm"):
            (ct, cb), (at, ab) = rows[(phase, "comfyver")], rows[(phase, "aws s3 sync")]
            print(f"{phase}: comfyver {ct:.2f} s vs aws s3 sync {at:.2f} s (ratio {ct / at:.2f}); bytes sent "
                  f"{cb:,} vs {ab:,} (payload {2 * total:,} to two volumes)")
        print("targets: cold ratio <= 1.2; warm: under 10 kB sent (requests only)")
        rest.close()
    finally:
        for p in proxies:
            p.close()
        for dc in dcs:
            dc.stop()
        git.close()
        http.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
