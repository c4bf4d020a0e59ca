"""An endpoint's releases (REST API v2) and going back to one.

RunPod keeps an endpoint's release history (GET /v2/serverless/{id}/releases, newest first): each release
has an id, the configuration version it produced, when, how many workers run it, and a `diff` of the fields
it changed with their old and new values. The full settings of a release are not listed, so they are
rebuilt: the endpoint's current settings are those of its live release, and each older release's are found
by undoing, newest first, the diffs of the releases after it. comfyver reads the image, the env (which holds
what each deploy recorded: `COMFYVER_RELEASE_*`), the CUDA constraints and the network volumes that way.

A rollback is a PATCH of the endpoint back to a release's image and settings; RunPod records it as a new
release, and comfyver's note in its env says which release it went back to.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from comfyver.base.errors import ComfyverError
from comfyver.ship import deploy
from comfyver.ship.deploy import RunPodV2

# the diff's field name -> ReleaseState's attribute (the document's names first, then plain Endpoint names)
DIFF_FIELDS = {"template.imageName": "image", "image": "image", "template.env": "env", "env": "env",
               "gpu.minCudaVersion": "min_cuda", "minCudaVersion": "min_cuda",
               "gpu.allowedCudaVersions": "allowed_cuda", "allowedCudaVersions": "allowed_cuda",
               "networkVolumes": "network_volumes"}
NOTE_KEYS = (deploy.ENV_NOTE, deploy.ENV_AT)  # differ between two deploys of the same thing


@dataclass
class ReleaseState:
    """What a release runs, as far as comfyver sets it."""
    image: str | None
    env: dict[str, str] = field(default_factory=dict)
    min_cuda: str | None = None
    allowed_cuda: list[str] = field(default_factory=list)
    network_volumes: list[str] = field(default_factory=list)

    @classmethod
    def of_endpoint(cls, ep: dict) -> ReleaseState:
        gpu = ep.get("gpu") or {}
        return cls(image=ep.get("image"), env=dict(ep.get("env") or {}), min_cuda=gpu.get("minCudaVersion") or None,
                   allowed_cuda=list(gpu.get("allowedCudaVersions") or []),
                   network_volumes=list(ep.get("networkVolumes") or []))

    def undo(self, diff: list) -> ReleaseState:
        """The state before a release with this diff."""
        before = copy.deepcopy(self)
        for entry in diff:
            attr = DIFF_FIELDS.get(str(entry.get("field"))) if isinstance(entry, dict) else None
            if attr is None:
                continue
            old = entry.get("old")
            if attr in ("env",):
                old = {str(k): str(v) for k, v in old.items()} if isinstance(old, dict) else {}
            elif attr in ("allowed_cuda", "network_volumes"):
                old = [str(v) for v in old] if isinstance(old, list) else []
            elif old is not None:
                old = str(old) or None
            setattr(before, attr, old)
        return before

    def settings(self) -> tuple:
        """What two releases must share to run the same thing (the deploy's note and time aside)."""
        env = tuple(sorted((k, v) for k, v in self.env.items() if k not in NOTE_KEYS))
        return self.image, env, self.min_cuda, tuple(self.allowed_cuda), tuple(self.network_volumes)

    @property
    def version_id(self) -> str | None:
        return self.env.get(deploy.ENV_VERSION_ID)

    @property
    def lock_digest(self) -> str | None:
        return self.env.get(deploy.ENV_LOCK_DIGEST)

    @property
    def image_digest(self) -> str | None:
        return deploy.image_digest(self.image or "") or deploy.image_digest(self.env.get(deploy.ENV_IMAGE, ""))


@dataclass
class Release:
    id: str
    version: int | None
    created_at: str
    source: str
    worker_count: int
    live: bool
    changed: list[str]
    state: ReleaseState

    def as_json(self) -> dict:
        s = self.state
        return {"id": self.id, "version": self.version, "createdAt": self.created_at, "live": self.live,
                "source": self.source, "workerCount": self.worker_count, "image": s.image,
                "imageDigest": s.image_digest, "versionId": s.version_id, "lockDigest": s.lock_digest,
                "note": s.env.get(deploy.ENV_NOTE), "changed": self.changed}


@dataclass
class History:
    endpoint_id: str
    name: str
    endpoint_version: int | None
    releases: list[Release]  # newest first
    has_gpu: bool = True

    @property
    def live(self) -> Release | None:
        return next((r for r in self.releases if r.live), None)

    def find(self, ref: str) -> Release:
        """A release by its id, or by its configuration version (`4` or `v4`)."""
        for r in self.releases:
            if ref == r.id or (r.version is not None and ref.lower().lstrip("v") == str(r.version)):
                return r
        known = ", ".join(f"{r.id} (v{r.version})" for r in self.releases[:10]) or "none"
        raise ComfyverError(f"endpoint {self.endpoint_id} has no release {ref!r}",
                            hint=f"its releases, newest first: {known}; `comfyver releases {self.endpoint_id}` lists them")

    def as_json(self) -> dict:
        live = self.live
        return {"endpointId": self.endpoint_id, "name": self.name, "endpointVersion": self.endpoint_version,
                "live": live.id if live else None, "releases": [r.as_json() for r in self.releases]}


def history(api: RunPodV2, endpoint_id: str) -> History:
    """The endpoint's releases, newest first, each with the settings it ran."""
    ep = api.get_endpoint(endpoint_id)
    listing = api.list_releases(endpoint_id)
    raw = [r for r in listing.get("releases") or [] if isinstance(r, dict) and r.get("id")]
    current = listing.get("endpointVersion")
    live_id = next((r["id"] for r in raw if current is not None and r.get("version") == current),
                   raw[0]["id"] if raw else None)
    state = ReleaseState.of_endpoint(ep)
    releases = []
    for r in raw:  # newest first: the endpoint's settings are the newest release's; undo each diff going back
        diff: list = r["diff"] if isinstance(r.get("diff"), list) else []
        releases.append(Release(id=str(r["id"]), version=r.get("version"), created_at=str(r.get("createdAt") or ""),
                                source=str(r.get("source") or ""), worker_count=int(r.get("workerCount") or 0),
                                live=r["id"] == live_id, state=state,
                                changed=[str(d.get("field")) for d in diff if isinstance(d, dict)]))
        state = state.undo(diff)
    return History(endpoint_id=endpoint_id, name=str(ep.get("name") or ""),
                   endpoint_version=current if isinstance(current, int) else None, releases=releases,
                   has_gpu=ep.get("gpu") is not None)


@dataclass
class RolledBack:
    endpoint_id: str
    previous: Release  # the release that was live
    target: Release  # the release gone back to
    release: Release | None  # the new release the rollback made

    def as_json(self) -> dict:
        return {"endpointId": self.endpoint_id, "from": self.previous.as_json(), "to": self.target.as_json(),
                "release": self.release.as_json() if self.release else None}


def pick_target(h: History, to: str | None) -> tuple[Release, Release]:
    """(live release, release to go back to): `to`, else the newest release before the live one that runs
    something else."""
    live = h.live
    if live is None:
        raise ComfyverError(f"endpoint {h.endpoint_id} has no releases", hint="deploy to it first")
    if to is not None:
        target = h.find(to)
        if target.id == live.id:
            raise ComfyverError(f"release {target.id} is the live release of endpoint {h.endpoint_id}",
                                hint="name an older release (`comfyver releases` lists them)")
    else:
        older = h.releases[h.releases.index(live) + 1:]
        candidate = next((r for r in older if r.state.settings() != live.state.settings()), None)
        if candidate is None:
            raise ComfyverError(f"nothing to roll back to: endpoint {h.endpoint_id} has no earlier release with "
                                "another image or settings than the live one", hint="deploy the image you want instead")
        target = candidate
    if target.state.settings() == live.state.settings():
        raise ComfyverError(f"release {target.id} runs the same image and settings as the live release {live.id}",
                            hint="nothing would change; name another release with --to")
    if not target.state.image:
        raise ComfyverError(f"release {target.id}: RunPod's release history does not say which image it ran",
                            hint="deploy its image with `comfyver deploy ... --image REF`")
    return live, target


def rollback(api: RunPodV2, endpoint_id: str, to: str | None = None) -> RolledBack:
    """Put the endpoint back on a release's image and settings (a new release, noted as a rollback)."""
    h = history(api, endpoint_id)
    live, target = pick_target(h, to)
    t, cur = target.state, live.state
    assert t.image is not None
    body: dict = {"image": t.image,
                  "env": {**t.env, deploy.ENV_NOTE: f"rollback to {target.id}", deploy.ENV_AT: deploy.now()}}
    if h.has_gpu and (t.min_cuda, t.allowed_cuda) != (cur.min_cuda, cur.allowed_cuda):
        body["gpu"] = {"minCudaVersion": t.min_cuda or "", "allowedCudaVersions": t.allowed_cuda}
    if t.network_volumes != cur.network_volumes:
        body["networkVolumes"] = t.network_volumes
    api.update_endpoint(endpoint_id, body)
    after = history(api, endpoint_id)
    return RolledBack(endpoint_id=endpoint_id, previous=live, target=target, release=after.live)
