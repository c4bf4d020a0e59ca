"""Point RunPod at an image.

REST API v2 (the default; https://api.runpod.io/v2, Bearer $RUNPOD_API_KEY, base overridable with
$RUNPOD_API_V2_URL): a serverless endpoint holds its image, env, GPU/CUDA settings and network volumes itself;
`deploy_v2` creates one (POST /v2/serverless) or updates one (PATCH /v2/serverless/{id}) with an image by
digest, `gpu.minCudaVersion` from the lock's CUDA (the same rule as v1's allowedCudaVersions: its floor), the
network volume and env. RunPod makes each such change a release; comfyver writes what it deployed into the
endpoint's env (`COMFYVER_RELEASE_*`: version id, lock digest, image by digest), which the release's diff keeps
(ship/releases.py reads it back).

REST API v1 (`--api v1`; https://rest.runpod.io/v1):
- update a serverless template's image (RunPod then rolls the endpoints that use it),
  found directly (`--template`) or through an endpoint (`--endpoint` -> its templateId);
- or create a serverless template + endpoint (GPU types, workers, idle timeout,
  FlashBoot, network volume, `allowedCudaVersions` from the lock's torch build),
  with a container registry auth for private images.

The v1 base URL is overridable with $RUNPOD_REST_URL (tests point it at a local
server). 429 and 5xx answers and connection errors are retried with backoff.
The API key and registry password are never printed.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

import requests

from comfyver.base import web
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.base.lockfile import Lock
from comfyver.ship.push import _COMPONENT, _HOST

DEFAULT_REST_URL = "https://rest.runpod.io/v1"
IMAGE_RE = re.compile(rf"^{_HOST}/{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
                      r"(?:@sha256:[0-9a-f]{64})?\Z")
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
# CUDA versions RunPod's API accepts in allowedCudaVersions (its CudaVersion enum)
RUNPOD_CUDA_VERSIONS = ["11.8", "12.0", "12.1", "12.2", "12.3", "12.4", "12.5", "12.6", "12.7", "12.8", "12.9",
                        "13.0"]
RETRY_STATUS = {429, 500, 502, 503, 504}


def rest_url() -> str:
    return os.environ.get("RUNPOD_REST_URL", DEFAULT_REST_URL).rstrip("/")


def check_image(ref: str) -> str:
    if not IMAGE_RE.match(ref or ""):
        raise UsageError(f"--image {ref!r} is not REGISTRY/IMAGE[:TAG][@sha256:DIGEST]",
                         hint="use the reference `comfyver push` printed, e.g. ghcr.io/acme/comfyui@sha256:...")
    return ref


def check_id(value: str, what: str) -> str:
    if not ID_RE.match(value or ""):
        raise UsageError(f"{what} {value!r} is not a RunPod id", hint="copy the id from the RunPod console or API")
    return value


def allowed_cuda_versions(torch: str | None, locked: tuple[int, int] | None = None) -> list[str] | None:
    """CUDA versions whose driver can run the locked build: the CUDA runtime the uv.lock pins (`locked`), else
    the profile's (`cu128` -> 12.8); None (no filter) for CPU. A runtime newer than every RunPod version of
    its major runs on that major's drivers (CUDA minor version compatibility): 13.2 -> 13.0 and newer."""
    from comfyver.lock.pylock import profile_cuda

    floor = locked or profile_cuda(torch or "")
    if floor is None:
        return None
    versions = [tuple(map(int, v.split("."))) for v in RUNPOD_CUDA_VERSIONS]
    if not any(v >= floor for v in versions) and any(v[0] == floor[0] for v in versions):
        floor = (floor[0], 0)
    allowed = [v for v in RUNPOD_CUDA_VERSIONS if tuple(map(int, v.split("."))) >= floor]
    if not allowed:
        raise ComfyverError(f"torch build {torch!r} needs CUDA {floor[0]}.{floor[1]}, newer than any RunPod offers "
                            f"({RUNPOD_CUDA_VERSIONS[-1]})", hint="lock a torch build for an older CUDA")
    return allowed


def stale_tag_warning(vid: str, lock: Lock, image: str) -> str | None:
    """A warning when the image's tag is a `comfyver push` default tag for another state of this version's lock."""
    from comfyver.ship.push import default_tag

    tag = image.split("@", 1)[0].rsplit("/", 1)[-1].partition(":")[2]
    want = default_tag(vid, lock)
    if re.fullmatch(rf"{re.escape(vid)}-[0-9a-f]{{12}}", tag) and tag != want:
        return (f"image tag {tag!r} was pushed from another lock of {vid!r} (the current lock's tag is {want!r}); "
                f"rebuild and `comfyver push {vid}` to deploy the current lock")
    return None


class RunPodREST:
    url_env = "RUNPOD_REST_URL"  # the variable that overrides the base URL

    def __init__(self, api_key: str | None = None, base: str | None = None, retries: int = 4, backoff: float = 0.5):
        self.api_key = api_key or os.environ.get("RUNPOD_API_KEY")
        if not self.api_key:
            raise UsageError("RUNPOD_API_KEY is not set", hint="create a key at RunPod (Settings > API Keys) and export it")
        self.base = (base or rest_url()).rstrip("/")
        web.check_scheme(self.base, ("https", "http"), "RunPod REST URL")
        self.retries, self.backoff = retries, backoff
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {self.api_key}", "User-Agent": web.USER_AGENT})

    def call(self, method: str, path: str, what: str, body: dict | None = None):
        url = f"{self.base}{path}"
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                r = self.session.request(method, url, json=body, timeout=60)
            except requests.RequestException as exc:
                if attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
                    continue
                raise ComfyverError(f"{what}: cannot reach RunPod at {web.redact(url)}: {type(exc).__name__}",
                                    hint=f"check your network (or ${self.url_env})") from None
            if r.status_code in RETRY_STATUS and attempt < self.retries:
                retry_after = r.headers.get("Retry-After", "")
                time.sleep(min(float(retry_after), 30) if retry_after.isdigit() else delay)
                delay *= 2
                continue
            if r.status_code >= 400:
                raise self._error(r, what)
            try:
                return r.json() if r.content else {}
            except ValueError:
                raise ComfyverError(f"{what}: RunPod answered HTTP {r.status_code} without JSON") from None
        raise AssertionError("unreachable")

    @staticmethod
    def _error(r: requests.Response, what: str) -> ComfyverError:
        try:
            detail = r.json()
            if isinstance(detail, dict):  # v1: {"error"} or {"message"}; v2: ErrorResponse {title, status, detail, errors}
                errors = detail.get("errors")
                detail = detail.get("error") or detail.get("message") or detail.get("detail") or detail
                if isinstance(errors, list) and errors:
                    detail = f"{detail} ({'; '.join(str(e) for e in errors[:5])})"
        except ValueError:
            detail = r.text[:300]
        detail = web.redact(str(detail))
        hints = {401: "RunPod refused the API key: set RUNPOD_API_KEY to a valid key",
                 403: "the API key may not do this: give it read/write access to serverless",
                 404: "no such id on this account: check the id in the RunPod console",
                 429: "RunPod is rate-limiting this key: wait a minute and run the command again"}
        hint = hints.get(r.status_code) or ("RunPod had a server error: try again later" if r.status_code >= 500
                                            else "RunPod rejected the request; see its message")
        return ComfyverError(f"{what}: RunPod answered HTTP {r.status_code}: {detail}", hint=hint)

    # --- the calls (https://docs.runpod.io/api-reference) ---
    def get_endpoint(self, endpoint_id: str) -> dict:
        return self.call("GET", f"/endpoints/{check_id(endpoint_id, 'endpoint')}", f"endpoint {endpoint_id}")

    def get_network_volume(self, volume_id: str) -> dict:
        return self.call("GET", f"/networkvolumes/{check_id(volume_id, 'network volume')}",
                         f"network volume {volume_id}")

    def update_template(self, template_id: str, changes: dict) -> dict:
        return self.call("PATCH", f"/templates/{check_id(template_id, 'template')}", f"template {template_id}", changes)

    def create_template(self, body: dict) -> dict:
        return self.call("POST", "/templates", f"template {body.get('name')!r}", body)

    def create_endpoint(self, body: dict) -> dict:
        return self.call("POST", "/endpoints", f"endpoint {body.get('name')!r}", body)

    def create_registry_auth(self, name: str, username: str, password: str) -> dict:
        return self.call("POST", "/containerregistryauth", f"registry auth {name!r}",
                         {"name": name, "username": username, "password": password})


@dataclass
class EndpointSpec:
    name: str
    gpu_type_ids: list[str]
    workers_min: int = 0
    workers_max: int = 3
    idle_timeout: int = 5
    flashboot: bool = True
    gpu_count: int = 1
    network_volume_id: str | None = None
    allowed_cuda_versions: list[str] | None = None
    container_disk_gb: int = 20
    env: dict[str, str] = field(default_factory=dict)


def registry_auth_from_env(api: RunPodREST, name: str) -> str | None:
    """Create a RunPod registry auth from $REGISTRY_USERNAME/$REGISTRY_PASSWORD, if both are set."""
    user, password = os.environ.get("REGISTRY_USERNAME"), os.environ.get("REGISTRY_PASSWORD")
    if not (user and password):
        return None
    return api.create_registry_auth(f"{name}-registry", user, password)["id"]


def update_image(api: RunPodREST, image: str, *, template_id: str | None = None, endpoint_id: str | None = None,
                 registry_auth_id: str | None = None) -> dict:
    """Set a template's imageName (directly or via an endpoint's templateId); RunPod rolls its workers."""
    check_image(image)
    volume_id = None
    if endpoint_id:
        info = api.get_endpoint(endpoint_id)
        template_id, volume_id = info.get("templateId"), info.get("networkVolumeId")
        if not template_id:
            raise ComfyverError(f"endpoint {endpoint_id}: RunPod returned no templateId",
                                hint="use --template ID with the endpoint's template id instead")
    if not template_id:
        raise UsageError("deploy --api v1 needs --template ID or --endpoint ID")
    changes = {"imageName": image}
    if registry_auth_id:
        changes["containerRegistryAuthId"] = check_id(registry_auth_id, "registry auth")
    tpl = api.update_template(template_id, changes)
    return {"templateId": template_id, "endpointId": endpoint_id, "image": tpl.get("imageName", image),
            "networkVolumeId": volume_id}


def create(api: RunPodREST, image: str, spec: EndpointSpec, *, registry_auth_id: str | None = None) -> dict:
    """Create a serverless template for `image`, then an endpoint on it."""
    check_image(image)
    if spec.workers_min < 0 or spec.workers_max < max(1, spec.workers_min):
        raise UsageError(f"workers {spec.workers_min}..{spec.workers_max}: need 0 <= min <= max and max >= 1")
    if not spec.gpu_type_ids:
        raise UsageError("--gpu is required with --create", hint='e.g. --gpu "NVIDIA GeForce RTX 4090"')
    auth_id = registry_auth_id or registry_auth_from_env(api, spec.name)
    template = {"name": spec.name, "imageName": image, "isServerless": True,
                "containerDiskInGb": spec.container_disk_gb, "env": dict(spec.env)}
    if auth_id:
        template["containerRegistryAuthId"] = auth_id
    tpl = api.create_template(template)
    endpoint = {"name": spec.name, "templateId": tpl["id"], "computeType": "GPU", "gpuTypeIds": spec.gpu_type_ids,
                "gpuCount": spec.gpu_count, "workersMin": spec.workers_min, "workersMax": spec.workers_max,
                "idleTimeout": spec.idle_timeout, "flashboot": spec.flashboot}
    if spec.network_volume_id:
        endpoint["networkVolumeId"] = check_id(spec.network_volume_id, "network volume")
    if spec.allowed_cuda_versions:
        endpoint["allowedCudaVersions"] = spec.allowed_cuda_versions
    ep = api.create_endpoint(endpoint)
    return {"templateId": tpl["id"], "endpointId": ep["id"], "image": image, "registryAuthId": auth_id,
            "networkVolumeId": spec.network_volume_id}


# ================================================================ REST API v2
DEFAULT_V2_URL = "https://api.runpod.io"
DIGEST_RE = re.compile(r"@(sha256:[0-9a-f]{64})\Z")

# What comfyver writes into an endpoint's env at each deploy. The env is part of every release RunPod keeps (its
# diff's `template.env`), so a release names what it runs. Not COMFYVER_VERSION_ID / COMFYVER_LOCK_DIGEST: the
# worker checks jobs against those, and they must stay what the image itself was built with.
ENV_VERSION_ID = "COMFYVER_RELEASE_VERSION_ID"
ENV_LOCK_DIGEST = "COMFYVER_RELEASE_LOCK_DIGEST"
ENV_IMAGE = "COMFYVER_RELEASE_IMAGE"
ENV_NOTE = "COMFYVER_RELEASE_NOTE"
ENV_AT = "COMFYVER_RELEASE_AT"  # a new value at each deploy: every deploy changes the env, so each is a release
RELEASE_ENV = (ENV_VERSION_ID, ENV_LOCK_DIGEST, ENV_IMAGE, ENV_NOTE, ENV_AT)


def v2_url() -> str:
    return os.environ.get("RUNPOD_API_V2_URL", DEFAULT_V2_URL).rstrip("/")


def image_digest(ref: str) -> str | None:
    m = DIGEST_RE.search(ref or "")
    return m.group(1) if m else None


def require_digest(ref: str) -> str:
    """The `sha256:...` digest `ref` names; a tag alone is refused (a release must name one exact image)."""
    check_image(ref)
    digest = image_digest(ref)
    if digest is None:
        raise UsageError(f"--image {ref!r} names a tag, not a digest: a release must name one exact image "
                         "(a tag can move, and RunPod may keep serving what it cached under it)",
                         hint="deploy the reference `comfyver push` printed (REGISTRY/IMAGE@sha256:...); "
                              "for an image pushed otherwise, `skopeo inspect docker://REF` gives its digest")
    return digest


def min_cuda_version(torch: str | None, locked: tuple[int, int] | None = None) -> str | None:
    """v2's `gpu.minCudaVersion`: the floor of allowed_cuda_versions (one rule for both APIs); None for CPU."""
    allowed = allowed_cuda_versions(torch, locked)
    return allowed[0] if allowed else None


def now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def release_env(version_id: str, lock_digest: str, image: str, note: str) -> dict[str, str]:
    return {ENV_VERSION_ID: version_id, ENV_LOCK_DIGEST: lock_digest, ENV_IMAGE: image, ENV_NOTE: note,
            ENV_AT: now()}


class RunPodV2(RunPodREST):
    """RunPod's REST API v2 (api-reference-v2/openapi.json): serverless endpoints, their releases, volumes."""

    url_env = "RUNPOD_API_V2_URL"

    def __init__(self, api_key: str | None = None, base: str | None = None, retries: int = 4, backoff: float = 0.5):
        super().__init__(api_key, base or v2_url(), retries, backoff)

    def get_endpoint(self, endpoint_id: str) -> dict:
        return self.call("GET", f"/v2/serverless/{check_id(endpoint_id, 'endpoint')}", f"endpoint {endpoint_id}")

    def create_endpoint(self, body: dict) -> dict:
        return self.call("POST", "/v2/serverless", f"endpoint {body.get('name')!r}", body)

    def update_endpoint(self, endpoint_id: str, body: dict) -> dict:
        return self.call("PATCH", f"/v2/serverless/{check_id(endpoint_id, 'endpoint')}", f"endpoint {endpoint_id}",
                         body)

    def list_releases(self, endpoint_id: str) -> dict:
        return self.call("GET", f"/v2/serverless/{check_id(endpoint_id, 'endpoint')}/releases",
                         f"releases of endpoint {endpoint_id}")

    def get_network_volume(self, volume_id: str) -> dict:
        info = self.call("GET", f"/v2/network-volumes/{check_id(volume_id, 'network volume')}",
                         f"network volume {volume_id}")
        # v2 names the datacenter `dataCenter`; volume.open_volume reads v1's `dataCenterId`
        return {**info, "dataCenterId": info.get("dataCenter")} if isinstance(info, dict) else info


@dataclass
class V2Spec:
    """What a v2 deploy sets besides the image and the CUDA floor. The GPU pools, workers, idle timeout,
    FlashBoot and disk are used when creating an endpoint; an update keeps the endpoint's own."""
    env: dict[str, str] = field(default_factory=dict)
    network_volume_id: str | None = None
    registry_auth_id: str | None = None
    gpu_pools: list[str] = field(default_factory=list)
    gpu_count: int = 1
    workers_min: int = 0
    workers_max: int = 3
    idle_timeout: int = 5
    flashboot: bool = True
    container_disk_gb: int = 20


@dataclass
class Deployed:
    """One v2 deploy: the endpoint and the release it made."""
    endpoint_id: str
    name: str
    image: str
    image_digest: str
    version_id: str
    lock_digest: str
    min_cuda_version: str | None
    network_volumes: list[str]
    created: bool
    release_id: str | None = None
    release_version: int | None = None
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"api": "v2", "endpointId": self.endpoint_id, "name": self.name, "created": self.created,
                "image": self.image, "imageDigest": self.image_digest, "versionId": self.version_id,
                "lockDigest": self.lock_digest, "minCudaVersion": self.min_cuda_version,
                "networkVolumes": self.network_volumes,
                "release": ({"id": self.release_id, "version": self.release_version} if self.release_id else None),
                "warnings": self.warnings}


def _create_body(name: str, image: str, spec: V2Spec, env: dict[str, str], min_cuda: str | None) -> dict:
    if spec.workers_min < 0 or spec.workers_max < max(1, spec.workers_min):
        raise UsageError(f"workers {spec.workers_min}..{spec.workers_max}: need 0 <= min <= max and max >= 1")
    if not spec.gpu_pools:
        raise UsageError("--gpu-pool is required with --create", hint="a serverless GPU pool id, e.g. --gpu-pool ADA_24 "
                         "(GET /v2/catalog/gpus lists each GPU type's pool)")
    gpu: dict = {"pools": spec.gpu_pools, "count": spec.gpu_count}
    if min_cuda:
        gpu["minCudaVersion"] = min_cuda
    body: dict = {"name": name, "type": "QUEUE", "image": image, "env": env, "gpu": gpu,
                  "workers": {"min": spec.workers_min, "max": spec.workers_max, "idleTimeout": spec.idle_timeout},
                  "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4}, "disk": spec.container_disk_gb,
                  "flashboot": "FLASHBOOT" if spec.flashboot else "OFF"}
    if spec.network_volume_id:
        body["networkVolumes"] = [check_id(spec.network_volume_id, "network volume")]
    if spec.registry_auth_id:
        body["registry"] = check_id(spec.registry_auth_id, "registry auth")
    return body


def _update_body(current: dict, image: str, spec: V2Spec, env: dict[str, str], min_cuda: str | None) -> dict:
    # PATCH replaces the endpoint's env: keep what it has, then the deploy's own keys
    body: dict = {"image": image, "env": {**(current.get("env") or {}), **env}}
    if min_cuda and current.get("gpu") is not None:  # a floor; a set left from before would clash with it
        body["gpu"] = {"minCudaVersion": min_cuda, "allowedCudaVersions": []}
    volumes = current.get("networkVolumes") or []
    if spec.network_volume_id and spec.network_volume_id not in volumes:
        body["networkVolumes"] = [check_id(spec.network_volume_id, "network volume")]
    if spec.registry_auth_id:
        body["registry"] = check_id(spec.registry_auth_id, "registry auth")
    return body


def newest_release(api: RunPodV2, endpoint_id: str) -> tuple[str | None, int | None]:
    """(id, version) of the endpoint's live release: the one of its current configuration version."""
    listing = api.list_releases(endpoint_id)
    releases = listing.get("releases") or []
    live = next((r for r in releases if r.get("version") is not None
                 and r.get("version") == listing.get("endpointVersion")), releases[0] if releases else None)
    return (live.get("id"), live.get("version")) if live else (None, None)


def deploy_v2(api: RunPodV2, version_id: str, lock: Lock, image: str, *, endpoint_id: str | None = None,
              create_name: str | None = None, spec: V2Spec | None = None, min_cuda: str | None = None,
              note: str = "deploy") -> Deployed:
    """Create (`create_name`) or update (`endpoint_id`) a v2 endpoint to run `image` (by digest); RunPod records
    the change as a release, whose env names the version, lock digest and image."""
    from comfyver.base.lockfile import lock_digest
    from comfyver.ship import volume

    digest = require_digest(image)
    spec = spec or V2Spec()
    ldigest = lock_digest(lock)
    env = {**spec.env, **release_env(version_id, ldigest, image, note)}
    if create_name:
        ep = api.create_endpoint(_create_body(create_name, image, spec, env, min_cuda))
    elif endpoint_id:
        ep = api.update_endpoint(endpoint_id, _update_body(api.get_endpoint(endpoint_id), image, spec, env, min_cuda))
    else:
        raise UsageError("deploy needs --endpoint ID or --create NAME")
    eid = ep.get("id") or endpoint_id
    if not isinstance(eid, str):
        raise ComfyverError("RunPod returned no endpoint id", hint="see the endpoint in the RunPod console")
    rel_id, rel_version = newest_release(api, eid)
    volumes = [v for v in ep.get("networkVolumes") or [] if isinstance(v, str)]
    warnings = volume.deploy_warnings(lock, volumes[0], api) if volumes else []
    return Deployed(endpoint_id=eid, name=str(ep.get("name") or create_name or ""), image=image, image_digest=digest,
                    version_id=version_id, lock_digest=ldigest,
                    min_cuda_version=((ep.get("gpu") or {}).get("minCudaVersion") or None),
                    network_volumes=volumes, created=bool(create_name), release_id=rel_id,
                    release_version=rel_version, warnings=warnings)
