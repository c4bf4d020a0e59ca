"""`comfyver deploy <id> --image REF (--template ID | --endpoint ID | --create NAME)`."""

from __future__ import annotations

import json
import sys

from comfyver.base import lockfile, project
from comfyver.base.errors import UsageError
from comfyver.cli.args import verb
from comfyver.lock import pylock
from comfyver.ship import deploy, volume


def register(sub) -> None:
    p = verb(sub, "deploy", run, help="point a RunPod serverless template/endpoint at an image, or create one",
        description="Update a RunPod template's image (RunPod then rolls the endpoint's workers), found by "
                    "--template or --endpoint, or --create a serverless template + endpoint for the image. "
                    "allowedCudaVersions follows the lock's torch build (cu128 -> CUDA 12.8 and newer). "
                    "Needs $RUNPOD_API_KEY; private images: --registry-auth ID, or $REGISTRY_USERNAME and "
                    "$REGISTRY_PASSWORD to create one. Example: comfyver deploy sdxl-base --image "
                    "ghcr.io/acme/comfyui@sha256:... --create sdxl-prod --gpu 'NVIDIA GeForce RTX 4090'")
    p.add_argument("version", metavar="ID", help="version id (its lock gives the CUDA floor)")
    p.add_argument("--image", required=True, metavar="REF", help="image reference (as printed by comfyver push)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--template", metavar="ID", help="update this template's image")
    target.add_argument("--endpoint", metavar="ID", help="update the image of this endpoint's template")
    target.add_argument("--create", metavar="NAME", help="create a template and an endpoint with this name")
    p.add_argument("--gpu", action="append", default=[], metavar="TYPE", help="GPU type id (repeatable; --create)")
    p.add_argument("--gpu-count", type=int, default=1, metavar="N", help="GPUs per worker (default 1)")
    p.add_argument("--workers-min", type=int, default=0, metavar="N", help="always-on workers (default 0)")
    p.add_argument("--workers-max", type=int, default=3, metavar="N", help="max workers (default 3)")
    p.add_argument("--idle-timeout", type=int, default=5, metavar="SECONDS", help="idle seconds before scale-down (default 5)")
    p.add_argument("--no-flashboot", dest="flashboot", action="store_false", help="turn FlashBoot off")
    p.add_argument("--network-volume", metavar="ID", help="network volume to attach (models)")
    p.add_argument("--disk", type=int, default=20, metavar="GB", help="container disk in GB (default 20)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="template environment (repeatable)")
    p.add_argument("--registry-auth", metavar="ID", help="existing RunPod container registry auth id")


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
