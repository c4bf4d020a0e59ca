"""Model placement `cached`: the Hugging Face models of a version come from the cache RunPod fills on the host
before a worker starts (an endpoint's "cached model", whose download is not billed).

RunPod mounts that cache at `/runpod-volume/huggingface-cache/hub` in the Hugging Face cache layout
(`models--ORG--NAME/snapshots/<commit>/<path>`, `refs/<branch>` holding a commit). An endpoint caches one
repository at a time, and REST API v2 has no field for it (it is the console's Model field), so:

- `hf_models(lock)` splits a lock into the models Hugging Face serves (repo, revision, file) and the others;
- `plan(lock)` picks the repository the endpoint should cache (the one with the most bytes of the version) and
  says which models must come another way (a network volume or an image with the models baked in);
- `ENV_PLACEMENT` / `ENV_REPOS` are what `comfyver deploy --models cached` writes into the endpoint's env, and
  what the worker (handler/hfcache.py) reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from comfyver.base.lockfile import Lock, Model

ENV_PLACEMENT = "COMFY_MODELS"             # `cached`: the worker links the version's HF models from the cache
ENV_REPOS = "COMFY_HF_CACHED_MODEL"        # the repository (or repositories, comma-separated) the endpoint caches
ENV_ROOT = "COMFY_HF_CACHE"                # the cache root (default DEFAULT_ROOT)
DEFAULT_ROOT = "/runpod-volume/huggingface-cache/hub"
PLACEMENTS = ("baked", "volume", "cached")


@dataclass(frozen=True)
class HFModel:
    key: str     # <folder>/<name>: where ComfyUI finds it (models/<key>)
    repo: str    # ORG/NAME
    rev: str     # the locked commit (a branch or tag only for an original without a locked commit)
    path: str    # the file inside the repository
    sha256: str
    size: int


def hf_source(model: Model) -> tuple[str, str, str] | None:
    """(repo, revision, path) of a model Hugging Face serves: its locked URL
    (`https://huggingface.co/ORG/NAME/resolve/<commit>/<path>`), else its original `hf://ORG/NAME[@rev]/path`."""
    from comfyver.sources.modelsource import hf_path_for_url
    from comfyver.sources.schemes import HF_RE

    for url in (hf_path_for_url(model["locked"]["url"]), model["original"]["url"]):
        m = HF_RE.match(url or "")
        if m:
            return m["repo"], m["rev"] or "main", m["path"]
    return None


def hf_models(lock: Lock) -> tuple[list[HFModel], list[str]]:
    """The lock's Hugging Face models, and the keys of every other model (sorted by key)."""
    hf, others = [], []
    for key, m in sorted(lock["models"].items()):
        src = hf_source(m)
        if src is None:
            others.append(key)
        else:
            hf.append(HFModel(key, src[0], src[1], src[2], m["locked"]["sha256"], m["locked"]["size"]))
    return hf, others


def repo_folder_name(repo: str) -> str:
    """The cache's folder of a repository: `models--ORG--NAME`."""
    return "models--" + repo.replace("/", "--")


@dataclass
class Plan:
    """What an endpoint with placement `cached` needs: the repository to cache, and what must come another way."""
    repo: str | None                                   # the one repository the endpoint caches (None: no HF model)
    revisions: list[str] = field(default_factory=list)  # the commits of `repo` the lock names
    cached: list[str] = field(default_factory=list)     # keys of the models that repository serves
    cached_bytes: int = 0
    elsewhere: list[str] = field(default_factory=list)  # keys of the models that need a volume or a baked image
    gated: bool = False                                  # a model of `repo` was locked with `auth: hf`

    def as_json(self) -> dict[str, object]:
        return {"placement": "cached", "model": self.repo, "revisions": self.revisions, "cached": self.cached,
                "cachedBytes": self.cached_bytes, "elsewhere": self.elsewhere}


def plan(lock: Lock) -> Plan:
    """The repository to cache is the one holding most of the version's bytes (RunPod caches one per endpoint);
    the other repositories' models and the models not on Hugging Face go elsewhere."""
    hf, others = hf_models(lock)
    by_repo: dict[str, list[HFModel]] = {}
    for m in hf:
        by_repo.setdefault(m.repo, []).append(m)
    if not by_repo:
        return Plan(repo=None, elsewhere=others)
    repo = max(sorted(by_repo), key=lambda r: sum(m.size for m in by_repo[r]))
    chosen = by_repo[repo]
    elsewhere = sorted(others + [m.key for m in hf if m.repo != repo])
    return Plan(repo=repo, revisions=sorted({m.rev for m in chosen}), cached=[m.key for m in chosen],
                cached_bytes=sum(m.size for m in chosen), elsewhere=elsewhere,
                gated=any(lock["models"][m.key]["locked"].get("auth") == "hf" for m in chosen))


def env(p: Plan) -> dict[str, str]:
    """The endpoint env a `--models cached` deploy sets."""
    out = {ENV_PLACEMENT: "cached"}
    if p.repo:
        out[ENV_REPOS] = p.repo
    return out


def instructions(p: Plan, vid: str) -> list[str]:
    """What the user must do in RunPod's console (the API cannot set an endpoint's cached model)."""
    if p.repo is None:
        return [f"version {vid} has no model on Hugging Face: nothing to cache; place its models on a network volume "
                "or bake them into the image"]
    lines = [f"set the endpoint's cached model in RunPod's console (Manage > Edit Endpoint > Model): {p.repo} "
             f"(revision {', '.join(r[:12] for r in p.revisions)}; {len(p.cached)} model(s), {p.cached_bytes} bytes); "
             "REST API v2 has no field for it"]
    if p.gated:
        lines.append("the repository needs a Hugging Face token: give it in the same console step")
    if p.elsewhere:
        lines.append("RunPod caches one model per endpoint: these must come another way (a network volume, "
                     f"`comfyver models sync {vid} --to runpod://<volume>` and --network-volume, or the image with "
                     f"models baked in): {', '.join(p.elsewhere)}")
    return lines
