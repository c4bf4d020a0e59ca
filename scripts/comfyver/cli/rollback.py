"""`comfyver rollback <endpoint> [--to RELEASE]`: back to a release's image and settings (itself a release)."""

from __future__ import annotations

import json

from comfyver.cli.args import verb
from comfyver.ship import deploy, releases


def register(sub) -> None:
    p = verb(sub, "rollback", run, help="put a RunPod endpoint back on an earlier release's image and settings",
             description="Update the endpoint (REST API v2) to the image, env, CUDA constraint and network volumes "
                         "of an earlier release: --to RELEASE (its id or version, as `comfyver releases` lists), "
                         "else the newest release before the live one that runs something else. RunPod records the "
                         "rollback as a new release. Needs $RUNPOD_API_KEY. Example: comfyver rollback abc123 --to v3")
    p.add_argument("endpoint", metavar="ENDPOINT", help="serverless endpoint id")
    p.add_argument("--to", metavar="RELEASE", help="release id or version (default: the previous release)")


def run(args) -> int:
    done = releases.rollback(deploy.RunPodV2(), args.endpoint, args.to)
    if args.json:
        print(json.dumps(done.as_json(), indent=2))
        return 0
    t = done.target.state
    print(f"endpoint {done.endpoint_id}: rolled back from release {done.previous.id} to {done.target.id} "
          f"(version {t.version_id or '-'}, image {t.image})")
    if done.release:
        print(f"  new release {done.release.id} (v{done.release.version}) is live")
    return 0
