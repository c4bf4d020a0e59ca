"""`comfyver test <id> (--local URL | --endpoint ID | --dir REALIZED)`: run versions/<id>/tests/*.json."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from comfyver.base import lockfile, project
from comfyver.cli.args import verb
from comfyver.ship import jobclient, versiontests
from comfyver.ship.versiontests import TestResult


def register(sub) -> None:
    p = verb(sub, "test", run, help="run a version's tests (jobs with expected outputs) on a worker",
             description="Run each versions/<id>/tests/*.json (a job input and what it must produce: status, "
                         "outputs per node, kinds, sizes, sha256) as a job: on a RunPod endpoint (--endpoint, needs "
                         "$RUNPOD_API_KEY), the runpod SDK's local API (--local URL), or a worker started here on a "
                         "realized tree (--dir). Prints each result with its reason; exit 1 if any fails. "
                         "Example: comfyver test sdxl --dir ./sdxl-env")
    p.add_argument("version", metavar="ID", help="version id")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--endpoint", metavar="ID", help="a RunPod serverless endpoint running the version")
    where.add_argument("--local", metavar="URL", help="the SDK's local API (python -m handler --rp_serve_api)")
    where.add_argument("--dir", metavar="REALIZED", help="start the handler here on this realized tree (comfyver realize)")
    p.add_argument("--only", action="append", metavar="NAME", help="run only this test (file name, repeatable)")
    p.add_argument("--out", metavar="DIR", help="keep the outputs here, one folder per test (default: a temp folder)")
    p.add_argument("--poll", type=float, default=1.0, metavar="SECONDS", help="job status poll interval")


def print_result(r: TestResult) -> None:
    if r.passed:
        print(f"PASS {r.name} ({r.elapsed:.1f} s, {len(r.outputs)} output(s))")
    else:
        print(f"FAIL {r.name}" + (f" (job {r.job_id}, {r.status})" if r.job_id else ""))
        for reason in r.reasons:
            print(f"  - {reason}")


def run(args) -> int:
    root = project.find_root()
    tests = versiontests.load_tests(root, args.version, args.only)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="comfyver-test-"))
    on_result = None if args.json else print_result

    def go(backend) -> versiontests.TestRun:
        return versiontests.run_tests(backend, tests, args.version, out, poll=args.poll, on_result=on_result)

    if args.dir:
        digest = lockfile.lock_digest(lockfile.read(project.lock_path(root, args.version)))
        with versiontests.local_worker(Path(args.dir).resolve(), args.version, digest, out / "worker.log") as url:
            result = go(jobclient.LocalBackend(url))
    else:
        result = go(jobclient.RunPodBackend(args.endpoint) if args.endpoint else jobclient.LocalBackend(args.local))
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        n_ok = sum(r.passed for r in result.results)
        print(f"{n_ok}/{len(result.results)} test(s) passed on {result.target}")
    return 0 if result.passed else 1
