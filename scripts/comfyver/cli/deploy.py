"""`comfyver deploy <id> --image REF (--endpoint ID | --create NAME) [--test --staging ID]` (REST API v2), and
`--api v1` (--template ID | --endpoint ID | --create NAME) for v1 templates."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from comfyver.base import lockfile, project
from comfyver.base.errors import UsageError
from comfyver.cli.args import verb
from comfyver.lock import pylock
from comfyver.ship import deploy, volume
from comfyver.sources import cachedmodels


def register(sub) -> None:
    p = verb(sub, "deploy", run, help="point a RunPod serverless endpoint at an image (a release), tested first with --test",
        description="REST API v2 (default): create (--create NAME) or update (--endpoint ID) a serverless endpoint "
                    "to run the image by digest, with gpu.minCudaVersion from the lock's CUDA, the network volume "
                    "and env; RunPod records each deploy as a release, whose env names the version, lock digest and "
                    "image (`comfyver releases`, `comfyver rollback`). --test deploys to --staging ID first, runs "
                    "versions/<id>/tests there, and updates the live endpoint only when all pass. --api v1 updates "
                    "a template's image (--template, or --endpoint's template) or creates a template + endpoint. "
                    "Needs $RUNPOD_API_KEY. Example: comfyver deploy sdxl-base --image "
                    "ghcr.io/acme/comfyui@sha256:... --endpoint abc123 --test --staging stg456")
    p.add_argument("version", metavar="ID", help="version id (its lock gives the CUDA floor)")
    p.add_argument("--image", required=True, metavar="REF",
                   help="image reference by digest, as printed by comfyver push (REGISTRY/IMAGE@sha256:...)")
    p.add_argument("--api", choices=["v2", "v1"], default="v2", help="RunPod REST API (default v2; v1: templates)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--template", metavar="ID", help="--api v1: update this template's image")
    target.add_argument("--endpoint", metavar="ID", help="update this endpoint (v1: its template's image)")
    target.add_argument("--create", metavar="NAME", help="create an endpoint with this name (v1: and a template)")
    p.add_argument("--test", action="store_true",
                   help="v2: deploy to --staging first, run the version's tests there, promote only if all pass")
    p.add_argument("--staging", metavar="ID", help="v2 --test: the staging endpoint the tests run on")
    p.add_argument("--out", metavar="DIR", help="--test: keep the tests' outputs here (default: a temp folder)")
    p.add_argument("--poll", type=float, default=1.0, metavar="SECONDS", help="--test: job status poll interval")
    p.add_argument("--gpu-pool", action="append", default=[], metavar="POOL",
                   help="v2 --create: serverless GPU pool id, repeatable (e.g. ADA_24)")
    p.add_argument("--gpu", action="append", default=[], metavar="TYPE",
                   help="--api v1 --create: GPU type id (repeatable)")
    p.add_argument("--gpu-count", type=int, default=1, metavar="N", help="GPUs per worker (default 1)")
    p.add_argument("--workers-min", type=int, default=0, metavar="N", help="always-on workers (default 0)")
    p.add_argument("--workers-max", type=int, default=3, metavar="N", help="max workers (default 3)")
    p.add_argument("--idle-timeout", type=int, default=5, metavar="SECONDS", help="idle seconds before scale-down (default 5)")
    p.add_argument("--no-flashboot", dest="flashboot", action="store_false", help="turn FlashBoot off")
    p.add_argument("--network-volume", metavar="ID", help="network volume to attach (models)")
    p.add_argument("--disk", type=int, default=20, metavar="GB", help="container disk in GB (default 20)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="endpoint/template environment (repeatable)")
    p.add_argument("--registry-auth", metavar="ID", help="existing RunPod container registry auth id")
    p.add_argument("--models", choices=cachedmodels.PLACEMENTS, metavar="PLACEMENT",
                   help="v2: where the worker takes the models from, recorded in the endpoint's env (COMFY_MODELS): "
                        "cached (the Hugging Face cache RunPod fills; prints the repository to set as the endpoint's "
                        "cached model), volume or baked")


def _env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--env {pair.split('=')[0]!r}: expected KEY=VALUE with KEY a variable name")
        env[key] = value
    return env


def _locked_cuda(root, vid: str):
    uvlock = project.version_dir(root, vid) / "uv.lock"
    return pylock.locked_cuda(uvlock.read_text()) if uvlock.is_file() else None


def run(args) -> int:
    root = project.find_root()
    lock = lockfile.read(project.lock_path(root, args.version))
    if args.api == "v2":
        return _run_v2(args, root, lock)
    if args.test or args.staging or args.gpu_pool or args.models:
        raise UsageError("--test, --staging, --gpu-pool and --models are for REST API v2", hint="leave out --api v1")
    stale = deploy.stale_tag_warning(args.version, lock, args.image)
    if stale and not args.json:
        print(f"warning: {stale}", file=sys.stderr)
    api = deploy.RunPodREST()
    cuda = _locked_cuda(root, args.version)
    if args.create:
        spec = deploy.EndpointSpec(
            name=args.create, gpu_type_ids=args.gpu, gpu_count=args.gpu_count, workers_min=args.workers_min,
            workers_max=args.workers_max, idle_timeout=args.idle_timeout, flashboot=args.flashboot,
            network_volume_id=args.network_volume, container_disk_gb=args.disk, env=_env(args.env),
            allowed_cuda_versions=deploy.allowed_cuda_versions(lock.get("python", {}).get("torch"), cuda))
        result = deploy.create(api, args.image, spec, registry_auth_id=args.registry_auth)
    else:
        result = deploy.update_image(api, args.image, template_id=args.template, endpoint_id=args.endpoint,
                                     registry_auth_id=args.registry_auth)
    result["warnings"] = volume.deploy_warnings(lock, result.get("networkVolumeId"), api)
    if cuda:  # what the locked wheels need of a GPU host (the image's dev.comfyver.cuda/driver labels say the same)
        result["cuda"] = {"runtime": f"{cuda[0]}.{cuda[1]}", "driver": f">={pylock.driver_floor(cuda)}"}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for w in result["warnings"]:
            print(f"warning: {w}", file=sys.stderr)
        if args.create:
            print(f"created template {result['templateId']} and endpoint {result['endpointId']}")
        else:
            print(f"template {result['templateId']} now runs {result['image']} (RunPod rolls its workers)")
        if "cuda" in result:
            print(f"the locked wheels need CUDA {result['cuda']['runtime']} (NVIDIA driver {result['cuda']['driver']})")
        if result.get("endpointId"):
            print(f"submit jobs with: comfyver run --endpoint {result['endpointId']} WORKFLOW")
    return 0


def _run_v2(args, root, lock) -> int:
    from comfyver.cli.test import print_result
    from comfyver.ship import promote, versiontests

    if args.template:
        raise UsageError("--template: REST API v2 endpoints hold their image themselves, without a template",
                         hint="use --endpoint ID, or --api v1 --template ID for a v1 template")
    if args.gpu:
        raise UsageError("--gpu names GPU types for --api v1; v2 endpoints take GPU pools",
                         hint="--gpu-pool POOL (e.g. ADA_24; GET /v2/catalog/gpus gives each type's pool)")
    if args.staging and not args.test:
        raise UsageError("--staging is for --test")
    deploy.require_digest(args.image)
    stale = deploy.stale_tag_warning(args.version, lock, args.image)
    if stale and not args.json:
        print(f"warning: {stale}", file=sys.stderr)
    placement = _placement(args.models, lock)
    env = {**_env(args.env), **(placement[1] if placement else {})}  # the placement's keys win over --env
    spec = deploy.V2Spec(env=env, network_volume_id=args.network_volume, registry_auth_id=args.registry_auth,
                         gpu_pools=args.gpu_pool, gpu_count=args.gpu_count, workers_min=args.workers_min,
                         workers_max=args.workers_max, idle_timeout=args.idle_timeout, flashboot=args.flashboot,
                         container_disk_gb=args.disk)
    min_cuda = deploy.min_cuda_version(lock.get("python", {}).get("torch"), _locked_cuda(root, args.version))
    api = deploy.RunPodV2()
    if not args.test:
        done = deploy.deploy_v2(api, args.version, lock, args.image, endpoint_id=args.endpoint,
                                create_name=args.create, spec=spec, min_cuda=min_cuda)
        if args.json:
            print(json.dumps({**done.as_json(), **_placement_json(placement)}, indent=2))
        else:
            _print_deployed(done, "live")
            _print_placement(placement, args.version)
        return 0
    if not args.staging:
        raise UsageError("--test needs --staging ID: REST API v2 has no release that takes no traffic",
                         hint="create a second endpoint for staging (comfyver deploy ... --create NAME-staging)")
    tests = versiontests.load_tests(root, args.version)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="comfyver-test-"))
    quiet = args.json
    result = promote.deploy_tested(
        api, args.version, lock, args.image, tests, staging_id=args.staging, endpoint_id=args.endpoint,
        create_name=args.create, spec=spec, min_cuda=min_cuda, out_dir=out, poll=args.poll,
        on_staged=None if quiet else (lambda d: _print_deployed(d, "staging")),
        on_result=None if quiet else print_result)
    if args.json:
        print(json.dumps({**result.as_json(), **_placement_json(placement)}, indent=2))
    elif result.live is not None:
        _print_deployed(result.live, "live")
        _print_placement(placement, args.version)
        print(f"promoted: all {len(result.tests.results)} test(s) passed on staging {result.staging.endpoint_id}")
    else:
        failed = [r.name for r in result.tests.results if not r.passed]
        print(f"not promoted: {len(failed)} test(s) failed on staging ({', '.join(failed)}); "
              "the live endpoint is unchanged", file=sys.stderr)
    return 0 if result.promoted else 1


def _print_deployed(d: deploy.Deployed, role: str) -> None:
    for w in d.warnings:
        print(f"warning: {w}", file=sys.stderr)
    verb_ = "created" if d.created else "updated"
    print(f"{role} endpoint {d.endpoint_id} ({d.name}) {verb_}: release {d.release_id} (v{d.release_version}) runs "
          f"{d.image}")
    print(f"  version {d.version_id}, lock {d.lock_digest[:12]}..., minCudaVersion {d.min_cuda_version or 'none'}"
          + (f", network volume {', '.join(d.network_volumes)}" if d.network_volumes else ""))


def _placement(models: str | None, lock) -> tuple[cachedmodels.Plan | None, dict[str, str]] | None:
    """--models: the plan (for `cached`) and the env it records; the other placements clear the cached repo."""
    if models is None:
        return None
    if models == "cached":
        plan = cachedmodels.plan(lock)
        return plan, cachedmodels.env(plan)
    return None, {cachedmodels.ENV_PLACEMENT: models, cachedmodels.ENV_REPOS: ""}


def _placement_json(placement) -> dict:
    if placement is None:
        return {}
    plan, env = placement
    return {"models": plan.as_json() if plan else {"placement": env[cachedmodels.ENV_PLACEMENT]}}


def _print_placement(placement, vid: str) -> None:
    if placement is None:
        return
    plan, env = placement
    print(f"  models: {env[cachedmodels.ENV_PLACEMENT]} ({cachedmodels.ENV_PLACEMENT} in the endpoint's env)")
    if plan is not None:
        for line in cachedmodels.instructions(plan, vid):
            print(f"  cached models: {line}")
