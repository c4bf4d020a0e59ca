"""The proof environment: `comfyver lock` proves a draft in the version's own Python environment, not in comfyver's.

`make(lock, seed, what)`:
1. the draft's pyproject.toml (pylock.generate) locked by `uv lock` in a scratch folder, seeded with the version's
   uv.lock so unchanged pins stay (pylock.uv_lock: the torch family paired, a conflict named with its packs);
2. `<cache>/proof-envs/<digest of the packages uv.lock installs>/.venv`: `uv venv` + `uv sync --frozen
   --no-install-project`, exactly what `comfyver realize` installs (uv checks every wheel's hash; wheels come from
   uv's cache, hard-linked), made at a temporary name beside it and renamed only when complete, under a file lock.
   An environment already there for the same packages is reused: a warm lock makes nothing.
It returns the environment's python, and the pyproject.toml and uv.lock it was made from: `write` keeps exactly
those, so the lock is proven with the packages it ships. No models are needed (the proof lists a loader's
options from the draft's model names, lock/proof.py).

`COMFYVER_PROOF_ENV=0` turns it off (as COMFYVER_MODEL_SEARCH=0 turns off the model search): the lock then proves
only with `--probe PYTHON`; the test suite sets it and the tests of this module set it back.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from comfyver.base import project, uvtool
from comfyver.base.lockfile import Lock
from comfyver.lock import pylock

ENV_VAR = "COMFYVER_PROOF_ENV"
FOLDER = "proof-envs"


@dataclass(frozen=True)
class ProofEnv:
    """A made (or reused) proof environment and what it was made from."""
    python: str         # <cache>/proof-envs/<key>/.venv/bin/python
    source: str         # pylock.generate's pyproject.toml for the draft (what `write` compares with its own)
    pyproject: str      # the pyproject.toml uv locked (the torch family's pins, where pairing added them)
    uv_lock: str
    notes: list[str]    # pylock.generate's notes
    cached: bool        # the environment was there already
    lock_seconds: float  # uv lock (the Python lock the version needs anyway, made here first)
    env_seconds: float   # uv venv + uv sync (or finding it made)


def enabled() -> bool:
    return os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


def root() -> Path:
    return project.cache_dir() / FOLDER


def key(lock: Lock, uv_lock: str) -> str:
    """The environment's name: the digest of the packages uv.lock installs (not its manifest: a re-lock that drops
    the torch family's pins, the seed keeping the same releases, installs the same) and the Python it is made for."""
    packages = tomllib.loads(uv_lock).get("package", [])
    text = json.dumps([lock["python"]["requires"], packages], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def make(lock: Lock, seed: Path | None, what: str) -> ProofEnv:
    """The draft `lock`'s environment (see the module docstring); `seed`: the version's uv.lock, if any."""
    t0 = time.perf_counter()
    source, reqs, notes = pylock.generate(lock)
    with tempfile.TemporaryDirectory(prefix="comfyver-proofenv-") as tmp:
        scratch = Path(tmp) / "project"
        scratch.mkdir()
        if seed is not None and seed.is_file():
            shutil.copy2(seed, scratch / "uv.lock")
        pylock.uv_lock(scratch, source, reqs, what)
        pyproject, uv_lock = (scratch / "pyproject.toml").read_text(), (scratch / "uv.lock").read_text()
        t1 = time.perf_counter()
        python, cached = _environment(scratch, lock, uv_lock, what)
    return ProofEnv(str(python), source, pyproject, uv_lock, notes, cached, round(t1 - t0, 3),
                    round(time.perf_counter() - t1, 3))


def _environment(project_dir: Path, lock: Lock, uv_lock: str, what: str) -> tuple[Path, bool]:
    base = root()
    name = key(lock, uv_lock)
    final = base / name
    python = final / ".venv" / "bin" / "python"
    if python.exists():
        return python, True
    base.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base / f".{name}.lock")):
        if python.exists():  # another lock made it meanwhile
            return python, True
        for old in base.glob(f".{name}.tmp-*"):  # a killed run's
            shutil.rmtree(old, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=base))
        try:
            uvtool.make_venv(tmp / ".venv", uvtool.choose_python(lock["python"]["requires"], what), what)
            uvtool.sync(project_dir, tmp / ".venv", f"{what}: the proof environment")
            (tmp / "uv.lock").write_text(uv_lock)  # what it holds, for a person looking
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return python, False
