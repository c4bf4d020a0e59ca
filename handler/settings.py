"""Worker settings, read once from the environment (every variable is listed in docs/handler.md)."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from comfyver.realize import comfystate
from comfyver.realize.comfystate import given

# Model folders ComfyUI knows; MODELS_DIR/<folder> is added to each through an extra_model_paths.yaml (and the
# per-job models' folder, handler/jobmodels.py).
MODEL_FOLDERS = ("checkpoints", "clip", "clip_vision", "configs", "controlnet", "diffusers", "diffusion_models",
                 "embeddings", "gligen", "hypernetworks", "loras", "photomaker", "style_models", "text_encoders",
                 "unet", "upscale_models", "vae", "vae_approx", "model_patches", "audio_encoders", "latent_upscale_models")


def _bool(name: str, default: bool = False) -> bool:
    v = os.environ.get(name)
    if v is None or v.strip() == "":
        return default
    return v.strip().lower() in ("1", "true", "yes", "on")


def _num(name: str, default: float, kind=float):
    v = os.environ.get(name)
    if v is None or v.strip() == "":
        return default
    try:
        return kind(v)
    except ValueError:
        raise SystemExit(f"handler: environment variable {name}={v!r} is not a number; unset it or give a number") from None


def _interpreter(v: str | None) -> str | None:
    """COMFY_PYTHON as given; a relative path (./env/bin/python) made absolute, since ComfyUI runs in COMFY_HOME."""
    return os.path.abspath(v) if v and os.sep in v else (v or None)


def _opt_path(name: str) -> Path | None:
    return _abs(os.environ.get(name))


def _abs(v: str | None) -> Path | None:
    return Path(v).absolute() if v else None  # ComfyUI runs with cwd=COMFY_HOME: relative paths would break


def _default_output_mode() -> str:
    """OUTPUT_MODE, else what the configured storage implies: s3 with BUCKET_ENDPOINT_URL (worker-comfyui's
    variables), gcs with GCS_BUCKET, else base64 (so an environment without storage still works)."""
    if os.environ.get("OUTPUT_MODE"):
        return os.environ["OUTPUT_MODE"].lower()
    if os.environ.get("BUCKET_ENDPOINT_URL"):
        return "s3"
    return "gcs" if os.environ.get("GCS_BUCKET") else "base64"


@dataclass
class Settings:
    comfy_home: Path | None = field(default_factory=lambda: _opt_path("COMFY_HOME"))
    comfy_url: str | None = field(default_factory=lambda: os.environ.get("COMFY_URL") or None)
    comfy_port: int = field(default_factory=lambda: _num("COMFY_PORT", 8188, int))
    comfy_args: list[str] = field(default_factory=lambda: shlex.split(os.environ.get("COMFY_ARGS", "")))
    comfy_python: str | None = field(default_factory=lambda: _interpreter(os.environ.get("COMFY_PYTHON")))
    # where ComfyUI writes (input, output, temp, user, its database): never COMFY_HOME itself
    # COMFYUI_STATE_DIR (the Nix launchers' and images' name), else the deprecated COMFY_STATE_DIR
    comfy_state_dir: Path | None = field(default_factory=lambda: _abs(comfystate.state_dir_from_env()))
    comfy_start_timeout: float = field(default_factory=lambda: _num("COMFY_START_TIMEOUT", 300.0))
    models_dir: Path | None = field(default_factory=lambda: _opt_path("MODELS_DIR"))
    log_tail_lines: int = field(default_factory=lambda: _num("LOG_TAIL_LINES", 40, int))
    job_timeout: float = field(default_factory=lambda: _num("JOB_TIMEOUT", 0.0))
    # seconds without a word from ComfyUI during a job before /system_stats is asked whether it is hung
    hang_check: float = field(default_factory=lambda: _num("COMFY_HANG_CHECK", 30.0))
    # seconds a SIGTERM leaves running jobs before ComfyUI is stopped and the worker exits
    stop_grace: float = field(default_factory=lambda: _num("COMFY_STOP_GRACE", 20.0))
    # the GPU pre-flight (handler/preflight.py), a RunPod fitness check; the smallest GPU memory a worker may have
    # (off with COMFY_GPU_CHECK=0, or RUNPOD_SKIP_GPU_CHECK=true: the SDK's own switch for its GPU check)
    gpu_check: bool = field(default_factory=lambda: os.environ.get("COMFY_GPU_CHECK", "1").strip().lower()
                            not in ("0", "false", "no", "off")
                            and os.environ.get("RUNPOD_SKIP_GPU_CHECK", "").strip().lower() != "true")
    min_vram_gb: float = field(default_factory=lambda: _num("COMFY_MIN_VRAM_GB", 0.0))
    # a job (or a workflow) run once before the worker takes jobs: the first real job finds its models loaded
    warmup: Path | None = field(default_factory=lambda: _opt_path("COMFY_WARMUP"))
    # the version's own warm-up (its versions/<id>/warmup.json): the image's copy, named by its launcher
    version_warmup: Path | None = field(default_factory=lambda: _opt_path("COMFYVER_WARMUP"))

    output_mode: str = field(default_factory=lambda: _default_output_mode())
    # "comfyver" (outputs[...]) or "worker-comfyui" (its images[{filename, type, data}] as well; docs/handler.md)
    output_format: str = field(default_factory=lambda: (os.environ.get("OUTPUT_FORMAT") or "comfyver").lower())
    gcs_bucket: str | None = field(default_factory=lambda: os.environ.get("GCS_BUCKET") or None)
    gcs_project: str | None = field(default_factory=lambda: os.environ.get("GCS_PROJECT") or None)
    gcs_prefix: str = field(default_factory=lambda: os.environ.get("GCS_PREFIX", "comfy/outputs"))
    gcs_retries: int = field(default_factory=lambda: _num("GCS_RETRIES", 3, int))
    gcs_retry_base_sleep: float = field(default_factory=lambda: _num("GCS_RETRY_BASE_SLEEP", 0.5))
    gcs_public: bool = field(default_factory=lambda: _bool("GCS_PUBLIC"))
    gcs_signed_url_ttl: int = field(default_factory=lambda: _num("GCS_SIGNED_URL_TTL", 0, int))
    gcs_validate: bool = field(default_factory=lambda: _bool("GCS_VALIDATE"))

    s3_endpoint_url: str | None = field(default_factory=lambda: os.environ.get("BUCKET_ENDPOINT_URL") or None)
    s3_access_key_id: str | None = field(default_factory=lambda: os.environ.get("BUCKET_ACCESS_KEY_ID") or None)
    s3_secret_access_key: str | None = field(default_factory=lambda: os.environ.get("BUCKET_SECRET_ACCESS_KEY") or None)
    s3_bucket: str | None = field(default_factory=lambda: os.environ.get("BUCKET_NAME") or None)
    s3_signed_url_ttl: int = field(default_factory=lambda: _num("BUCKET_SIGNED_URL_TTL", 604800, int))

    base64_max_bytes: int = field(default_factory=lambda: _num("BASE64_MAX_BYTES", 20_000_000, int))
    max_input_bytes: int = field(default_factory=lambda: _num("MAX_INPUT_BYTES", 100_000_000, int))
    allowed_fetch_hosts: list[str] = field(default_factory=lambda: [
        h.strip() for h in os.environ.get("ALLOWED_FETCH_HOSTS", "").split(",") if h.strip()])
    # per-job models (job input `models`, handler/jobmodels.py): their store (default: on the network volume when one
    # is mounted, else in the state folder) and its size bound, least recently used evicted first
    job_models_dir: Path | None = field(default_factory=lambda: _opt_path("COMFY_JOB_MODELS_DIR"))
    job_models_max_gb: float = field(default_factory=lambda: _num("COMFY_JOB_MODELS_MAX_GB", 20.0))

    version_id: str | None = field(default_factory=lambda: os.environ.get("COMFYVER_VERSION_ID") or None)
    # sha256 of the version's lock (comfyver's lock digest): a job naming another lock_digest is refused
    lock_digest: str | None = field(default_factory=lambda: os.environ.get("COMFYVER_LOCK_DIGEST") or None)
    versions_root: Path | None = field(default_factory=lambda: _opt_path("COMFYVER_ROOT"))
    realize: bool = field(default_factory=lambda: _bool("COMFYVER_REALIZE"))
    realize_dir: Path | None = field(default_factory=lambda: _opt_path("COMFYVER_REALIZE_DIR"))
    # realized .venvs may see the image's own packages (a preinstalled torch shared by every version)
    realize_system_site_packages: bool = field(default_factory=lambda: _bool("COMFYVER_REALIZE_SYSTEM_SITE_PACKAGES"))
    # model placement (handler/hfcache.py): `cached` links the lock's Hugging Face models from RunPod's HF cache
    models_placement: str = field(default_factory=lambda: (os.environ.get("COMFY_MODELS") or "").strip().lower())
    hf_cache_dir: Path = field(default_factory=lambda: _abs(os.environ.get("COMFY_HF_CACHE"))
                               or Path("/runpod-volume/huggingface-cache/hub"))
    hf_cached_repos: list[str] = field(default_factory=lambda: [
        r.strip() for r in os.environ.get("COMFY_HF_CACHED_MODEL", "").split(",") if r.strip()])
    lock_file: Path | None = field(default_factory=lambda: _opt_path("COMFYVER_LOCK"))  # the version's version.json

    def __post_init__(self):
        if self.output_format not in ("comfyver", "worker-comfyui"):
            raise SystemExit(f"handler: OUTPUT_FORMAT={self.output_format!r}: use comfyver or worker-comfyui")
        if self.models_placement not in ("", "baked", "volume", "cached"):
            raise SystemExit(f"handler: COMFY_MODELS={self.models_placement!r}: use cached, volume or baked (or unset)")
        if self.comfy_state_dir is None:  # fixed once: COMFYUI_STATE_DIR, else the XDG state folder per port
            base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
            self.comfy_state_dir = Path(base).absolute() / "comfyver" / f"handler-{self.comfy_port}"

    def warmup_job(self) -> tuple[str, Path] | None:
        """The warm-up job file the worker runs before taking jobs, named as errors name it: COMFY_WARMUP, else the
        version's warmup.json (the image's, COMFYVER_WARMUP; else versions/<id>/warmup.json under COMFYVER_ROOT
        when that file is there), else None."""
        if self.warmup is not None:
            return f"COMFY_WARMUP={self.warmup}", self.warmup
        if self.version_warmup is not None:
            return f"COMFYVER_WARMUP={self.version_warmup}", self.version_warmup
        vid = self.version_id
        if self.versions_root is not None and vid and vid == Path(vid).name and vid not in (".", ".."):
            path = self.versions_root / "versions" / vid / "warmup.json"
            if path.is_file():
                return f"the version's warm-up {path}", path
        return None

    @property
    def state_dir(self) -> Path:
        assert self.comfy_state_dir is not None  # __post_init__ sets it
        return self.comfy_state_dir

    def comfy_dir_arg(self, flag: str, default: str) -> Path | None:
        """A ComfyUI directory (input/output) as ComfyUI will use it, if known on this machine:
        the flag in COMFY_ARGS, else the state folder's (a ComfyUI the worker starts), else COMFY_HOME's own
        folder (an external ComfyUI at COMFY_URL), else unknown."""
        v = given(self.comfy_args, flag)
        if v is not None:
            return Path(v)
        if self.comfy_url:
            return self.comfy_home / default if self.comfy_home else None
        return self.state_dir / default if self.comfy_home else None

    @property
    def input_dir(self) -> Path | None:
        return self.comfy_dir_arg("--input-directory", "input")

    @property
    def output_dir(self) -> Path | None:
        return self.comfy_dir_arg("--output-directory", "output")
