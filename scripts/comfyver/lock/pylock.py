"""The Python lock of a version: versions/<id>/pyproject.toml + `uv lock` -> uv.lock.

Requirements come from the locked ComfyUI's requirements.txt and every locked git
node's requirements.txt / pyproject.toml `[project].dependencies`, read straight
from the git cache at the locked commit. Rules:
- ComfyUI's own requirement for a package wins over any node's;
- the torch family (torch, torchvision, torchaudio) is ComfyUI's alone; the torch
  profile (`python.torch` in the lock) picks the build: `cu128`/`pypi` = what PyPI
  serves (CUDA on Linux x86_64), `cu126`/`cu124`/`cu121`/`cpu` = the PyTorch index;
- one OpenCV: every variant requested is replaced by a single headless one
  (contrib if any node asked for contrib) and the others are overridden away;
- no stray `comfy`/`comfyui` PyPI package (nodes sometimes list the host by name);
- packages the core imports without listing them (`requests` in app/frontend_management.py) are added;
- lines pip understands but a lock cannot (`-r`, `--extra-index-url`, `-e`, bare URLs) are
  dropped with a note.
A failing `uv lock` is reported with the nodes whose requirements name the packages uv
complains about.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from comfyver.base import project, uvtool
from comfyver.base.errors import ComfyverError
from comfyver.base.fsutil import atomic_write_json, atomic_write_text
from comfyver.base.lockfile import Lock, Platform, ZipLocked
from comfyver.lock import nodesource
from comfyver.lock.versions import PROJECT_NAME
from comfyver.sources import gitsource

TORCH_FAMILY = {"torch", "torchvision", "torchaudio"}
OPENCV = ["opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"]
STRAY = {"comfy", "comfyui"}
# packages the core imports but its requirements.txt does not list (ComfyUI 0.3.x: requests)
CORE_UNLISTED = {"requests": "app/frontend_management.py"}
TORCH_INDEX = {p: f"https://download.pytorch.org/whl/{p}" for p in ("cu126", "cu124", "cu121", "cpu")}
LINUX = "sys_platform == 'linux' and platform_machine == 'x86_64'"
MACOS = "sys_platform == 'darwin' and platform_machine == 'arm64'"
# python.platforms (lock --platform) -> the uv environment; a lock without the field keeps the old default
PLATFORMS: dict[Platform, str] = {"linux-x86_64": LINUX, "macos-arm64": MACOS}
PLATFORM_NAMES: dict[Platform, str] = {"linux-x86_64": "Linux x86_64", "macos-arm64": "macOS arm64"}
PLATFORM_MARK: dict[Platform, str] = {"linux-x86_64": "sys_platform == 'linux'",  # in uv's message
                                       "macos-arm64": "sys_platform == 'darwin'"}
CORE = "comfyui"
EXTRA = "python.extra (lock --pip)"  # who the version's declared extras are: they win over the core and every node


@dataclass
class Requirements:
    """Merged requirements: package -> [(who, Requirement)], in first-seen order, plus notes."""
    by_package: dict[str, list[tuple[str, Requirement]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, who: str, text: str, source: str) -> None:
        for raw in text.splitlines():
            line = raw.split(" #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith(("-", "git+", "http://", "https://", "file:")):
                self.notes.append(f"{who}: {source}: skipped {line!r} (not a package requirement a lock can use)")
                continue
            try:
                req = Requirement(line)
            except InvalidRequirement:
                self.notes.append(f"{who}: {source}: skipped unparseable {line!r}")
                continue
            self.by_package.setdefault(canonicalize_name(req.name), []).append((who, req))

    def who_requires(self, package: str) -> list[str]:
        return [f"{who} ({req})" for who, req in self.by_package.get(canonicalize_name(package), [])]


def _git_show(repo: Path, rev: str, path: str) -> str | None:
    p = gitsource.git("show", f"{rev}:{path}", cwd=repo, check=False)
    return p.stdout.decode("utf-8", errors="replace") if p.returncode == 0 else None


def _pyproject_deps(text: str) -> list[str]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return []
    deps = doc.get("project", {}).get("dependencies", [])
    return [d for d in deps if isinstance(d, str)]


def collect(lock: Lock) -> Requirements:
    """Every requirement of the locked core and git nodes (read from the git cache)."""
    reqs = Requirements()
    core = lock["comfyui"]["locked"]
    repo = gitsource.fetch(core["url"], core["rev"], f"comfyui ({lock['id']})")
    reqs.add(CORE, _git_show(repo, core["rev"], "requirements.txt") or "", "requirements.txt")
    for pkg, path in CORE_UNLISTED.items():
        if pkg not in reqs.by_package and re.search(rf"^\s*import {pkg}\b", _git_show(repo, core["rev"], path) or "", re.M):
            reqs.add(CORE, pkg, path)
            reqs.notes.append(f"comfyui: {path} imports {pkg!r} without listing it in requirements.txt: added")
    for name, n in sorted(lock.get("nodes", {}).items()):
        loc = n["locked"]
        texts: Mapping[str, str | None]
        if loc["type"] == "git":
            repo = gitsource.fetch(loc["url"], loc["rev"], f"node {name}")
            texts = {f: _git_show(repo, loc["rev"], f) for f in ("requirements.txt", "pyproject.toml")}
        else:
            texts = _zip_texts(loc, f"node {name}")
        if (listed := texts.get("requirements.txt")) is not None:
            reqs.add(name, listed, "requirements.txt")
        elif pyproject := texts.get("pyproject.toml"):
            reqs.add(name, "\n".join(_pyproject_deps(pyproject)), "pyproject.toml")
    if lock.get("python", {}).get("extra"):
        reqs.add(EXTRA, "\n".join(lock["python"]["extra"]), "version.json")
    return reqs


def _zip_texts(loc: ZipLocked, what: str) -> dict[str, str]:
    """Root requirements.txt / pyproject.toml of a locked registry archive, cached per hash."""
    cache = project.cache_dir() / "node-requirements" / f"{hashlib.sha256(loc['hash'].encode()).hexdigest()[:32]}.json"
    if cache.is_file():
        return cast("dict[str, str]", json.loads(cache.read_text()))  # written below
    files = nodesource.read_locked_zip(loc, what)
    out: dict[str, str] = {f: files[f] for f in ("requirements.txt", "pyproject.toml") if f in files}
    atomic_write_json(cache, out)
    return out


def merge(reqs: Requirements) -> tuple[list[str], list[str], list[str]]:
    """-> (dependencies, override-dependencies, notes) after the ecosystem's fix-ups."""
    deps: list[str] = []
    overrides: list[str] = []
    notes = list(reqs.notes)
    opencv_asked = [p for p in OPENCV if p in reqs.by_package and not _declared(reqs, p)]
    for pkg, entries in reqs.by_package.items():
        if pkg in STRAY:
            notes.append(f"dropped stray package {pkg!r} (required by {', '.join(w for w, _ in entries)}): "
                         "ComfyUI itself is not a PyPI dependency")
            continue
        extra = [r for w, r in entries if w == EXTRA]
        if extra:  # asked for by the user (`lock --pip`): kept as written, whoever else asks (the torch family too)
            pinned = _combine(pkg, extra)
            for w, r in entries:
                if w != EXTRA and str(r) != pinned:
                    notes.append(f"{'ComfyUI' if w == CORE else 'node ' + w}: asks for {r}; --pip {pinned} wins")
            deps.append(pinned)
            continue
        if pkg in OPENCV:
            continue
        core = [r for w, r in entries if w == CORE]
        if core:
            others = [(w, r) for w, r in entries if w != CORE and str(r.specifier) and r.specifier != core[0].specifier]
            for w, r in others:
                notes.append(f"node {w}: asks for {r}; ComfyUI's {core[0]} wins")
            deps.append(str(core[0]))
            continue
        if pkg in TORCH_FAMILY:
            notes.append(f"{pkg}: node requirement(s) {', '.join(str(r) for _, r in entries)} ignored; "
                         "the torch build comes from the version's torch profile")
            deps.append(pkg)
            continue
        deps.append(_combine(pkg, [r for _, r in entries]))
    if opencv_asked:
        chosen = "opencv-contrib-python-headless" if any("contrib" in p for p in opencv_asked) else "opencv-python-headless"
        specs = [r for p in opencv_asked for _, r in reqs.by_package[p]]
        spec = ",".join(sorted({str(s) for r in specs for s in r.specifier}))
        deps.append(chosen + spec)
        overrides += [f"{p}; sys_platform == 'never'" for p in OPENCV if p != chosen and not _declared(reqs, p)]
        if len(opencv_asked) > 1 or opencv_asked[0] != chosen:
            notes.append(f"OpenCV: {', '.join(opencv_asked)} requested; using {chosen} only")
    return sorted(deps, key=str.lower), overrides, notes


def _declared(reqs: Requirements, pkg: str) -> bool:
    return any(w == EXTRA for w, _ in reqs.by_package.get(pkg, []))


def _combine(pkg: str, reqs: list[Requirement]) -> str:
    first = reqs[0]
    extras = sorted({e for r in reqs for e in r.extras})
    spec = ",".join(sorted({str(s) for r in reqs for s in r.specifier}))
    url = next((r.url for r in reqs if r.url), None)
    out = first.name + (f"[{','.join(extras)}]" if extras else "")
    if url:
        out += f" @ {url}"
    else:
        out += spec
    markers = {str(r.marker) for r in reqs if r.marker}
    if len(markers) == 1 and all(r.marker for r in reqs):
        out += f"; {markers.pop()}"
    return out


def render(lock: Lock, deps: list[str], overrides: list[str]) -> str:
    py = lock["python"]
    profile = py["torch"]
    lines = [
        "# Generated by `comfyver lock` from the locked ComfyUI and nodes; do not edit by hand.",
        "[project]",
        f'name = "{PROJECT_NAME}"',
        'version = "0"',
        f'requires-python = "{py["requires"]}"',
        "dependencies = [",
        *[f"  {_q(d)}," for d in deps],
        "]",
        "",
        "[tool.uv]",
        "package = false",
        "environments = [" + ", ".join(_q(e) for e in environments(profile, py.get("platforms"))) + "]",
    ]
    if overrides:
        lines += ["override-dependencies = [", *[f"  {_q(o)}," for o in overrides], "]"]
    if py.get("constraints"):  # versions uv picks where a requirement admits them (an imported install's venv)
        lines += ["constraint-dependencies = [", *[f"  {_q(c)}," for c in py["constraints"]], "]"]
    # its own workspace root: uv must not wander up into the project's pyproject.toml
    lines += ["", "[tool.uv.workspace]", "members = []"]
    if profile in TORCH_INDEX:
        lines += ["", "[[tool.uv.index]]", f'name = "pytorch-{profile}"', f'url = "{TORCH_INDEX[profile]}"',
                  "explicit = true", "", "[tool.uv.sources]"]
        lines += [f'{p} = {{ index = "pytorch-{profile}" }}' for p in sorted(TORCH_FAMILY)]
    return "\n".join(lines) + "\n"


def environments(profile: str, platforms: Sequence[str] | None = None) -> list[str]:
    """The uv environments of `python.platforms`; a lock without them (written before the field): Linux x86_64
    always (RunPod, images), macOS arm64 too when torch comes from PyPI."""
    if platforms:
        return [PLATFORMS[p] for p in PLATFORMS if p in platforms]
    return [LINUX] if profile in TORCH_INDEX else [LINUX, MACOS]


def default_platforms(profile: str) -> list[Platform]:
    """What a new lock targets: a CUDA or CPU profile locks Linux x86_64 only (RunPod, images: a pack needing a
    Linux-only package such as onnxruntime-gpu locks); `pypi` adds macOS arm64 (realize on a laptop).
    `lock --platform` asks for others."""
    return ["linux-x86_64", "macos-arm64"] if profile == "pypi" else ["linux-x86_64"]


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def generate(lock: Lock) -> tuple[str, Requirements, list[str]]:
    """The pyproject.toml text for a lock, the collected requirements and the notes."""
    reqs = collect(lock)
    deps, overrides, notes = merge(reqs)
    return render(lock, deps, overrides), reqs, notes


def uv_lock(vdir: Path, pyproject: str, reqs: Requirements, what: str, timeout: float = 600) -> None:
    """Write pyproject.toml and run `uv lock` in a scratch copy; move both in only on success."""
    uv = uvtool.uv_bin()
    vdir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{vdir.name}.pylock-", dir=vdir.parent))  # private to this run
    try:
        (scratch / "pyproject.toml").write_text(pyproject)
        if (vdir / "uv.lock").exists():
            shutil.copy2(vdir / "uv.lock", scratch / "uv.lock")  # keep unchanged pins stable
        env = {**os.environ, "UV_NO_PROGRESS": "1"}

        def lock_scratch() -> subprocess.CompletedProcess[str]:
            try:
                return subprocess.run([uv, "lock", "--no-progress", "--directory", str(scratch)],
                                      capture_output=True, text=True, env=env, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise ComfyverError(f"{what}: `uv lock` took longer than {timeout:.0f}s") from None

        p = lock_scratch()
        if p.returncode:
            raise ComfyverError(f"{what}: the Python requirements cannot be locked:\n{_attribute(p.stderr, reqs)}",
                                hint=_failure_hint(p.stderr, reqs, pyproject))
        pyproject = _pair_family(scratch, pyproject, lock_scratch, what)
        vdir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(vdir / "uv.lock", (scratch / "uv.lock").read_text())
        atomic_write_text(vdir / "pyproject.toml", pyproject)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _pair_family(scratch: Path, pyproject: str, lock_scratch: Callable[[], subprocess.CompletedProcess[str]],
                 what: str) -> str:
    """torchvision/torchaudio built for another torch than the one locked (release, patch or CUDA build): lock
    again with the family pinned to one release (family_candidates, best first) until the uv.lock agrees; the
    pyproject.toml that did it. None does: a ComfyverError naming the members and the `--pip` fix."""
    first = (scratch / "uv.lock").read_text()
    problem = family_problem(first)
    if problem is None:
        return pyproject
    last = ""
    for pins in family_candidates(first):
        text = with_family_pins(pyproject, pins)
        (scratch / "pyproject.toml").write_text(text)
        p = lock_scratch()
        if p.returncode:
            last = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"uv lock exited {p.returncode}"
            continue
        if (still := family_problem((scratch / "uv.lock").read_text())) is None:
            return text
        last = still
    raise ComfyverError(f"{what}: the torch family does not pair: {problem}; no release of all of them could be "
                        f"locked ({last})", hint=family_fix(first))


def _named(stderr: str, reqs: Requirements) -> list[str]:
    """The requirements' packages uv's message names, in first-seen order."""
    text = stderr.strip()
    return [pkg for pkg in reqs.by_package if re.search(rf"(?<![\w-]){re.escape(pkg)}(?![\w-])", text, re.I)]


def _failure_hint(stderr: str, reqs: Requirements, pyproject: str) -> str:
    """What to do about a failed `uv lock`: the packs that asked for what uv names and, when the failure is one
    platform's (uv resolves each target environment: `split (markers: ...)`, no `...-compatible wheels`), the
    platform lever."""
    general = "pin or drop the conflicting node (`comfyver lock <id> --node URL@ref`), or change ComfyUI's version"
    asked = [f"{pkg} (asked for by {', '.join(dict.fromkeys(w for w, _ in reqs.by_package[pkg]))})"
             for pkg in _named(stderr, reqs)]
    envs = tomllib.loads(pyproject).get("tool", {}).get("uv", {}).get("environments", [])
    targets = [name for key, name in PLATFORM_NAMES.items() if PLATFORMS[key] in envs]
    failed = [name for key, name in PLATFORM_NAMES.items() if PLATFORM_MARK[key] in stderr]
    who = "; ".join(asked)
    if failed and len(targets) > 1:
        others = [k for k, name in PLATFORM_NAMES.items() if name in targets and name not in failed]
        lever = " ".join(f"--platform {k}" for k in others)
        return (f"{who + ': ' if who else ''}cannot be locked for {', '.join(failed)}, which this lock targets "
                f"besides {', '.join(t for t in targets if t not in failed)}: lock for "
                f"{', '.join(PLATFORM_NAMES[k] for k in others)} only with `comfyver lock <id> {lever}` (CUDA torch "
                f"profiles, `--torch cu128` and the PyTorch-index ones, lock Linux x86_64 only unless --platform asks "
                f"for more); or {general}")
    return (f"{who}: " if who else "") + general


def _attribute(stderr: str, reqs: Requirements) -> str:
    """uv's message, then who asked for each package it names."""
    text = stderr.strip()
    named = []
    for pkg in reqs.by_package:
        if re.search(rf"(?<![\w-]){re.escape(pkg)}(?![\w-])", text, re.I) and pkg not in named:
            named.append(pkg)
    lines = [text]
    for pkg in named:
        lines.append(f"  {pkg} is required by: {'; '.join(reqs.who_requires(pkg))}")
    return "\n".join(lines)


def locked_requires(uv_lock_text: str, project_name: str) -> list[str] | None:
    """The root project's requirement list as recorded in uv.lock (None if absent)."""
    try:
        doc = tomllib.loads(uv_lock_text)
    except tomllib.TOMLDecodeError:
        return None
    for pkg in doc.get("package", []):
        if pkg.get("name") == canonicalize_name(project_name):
            return sorted(_req_str(r) for r in pkg.get("metadata", {}).get("requires-dist", []))
    return None


def _norm(text: str) -> str:
    req = Requirement(text)
    req.name = canonicalize_name(req.name)
    return str(req)


def _req_str(r: dict[str, Any]) -> str:  # a requires-dist entry of uv.lock
    return _norm(r["name"] + (f"[{','.join(r['extras'])}]" if r.get("extras") else "")
                 + (f" @ {r['url']}" if r.get("url") else r.get("specifier", ""))
                 + (f"; {r['marker']}" if r.get("marker") else ""))


# the environments two markers are compared in (`requires_key`): every platform and Python a lock may target
_MARKER_GRID = [{"sys_platform": plat, "platform_system": system, "os_name": os_name, "platform_machine": machine,
                 "python_version": f"3.{minor}", "python_full_version": f"3.{minor}.0", "implementation_name": "cpython",
                 "platform_python_implementation": "CPython", "extra": ""}
                for plat, system, os_name in (("linux", "Linux", "posix"), ("darwin", "Darwin", "posix"),
                                              ("win32", "Windows", "nt"))
                for machine in ("x86_64", "arm64", "aarch64", "AMD64") for minor in range(9, 15)]


def requires_key(requires: list[str]) -> list[tuple[str, tuple[bool, ...]]]:
    """Requirements compared by meaning: each one without its marker, and the marker's truth in every environment
    of the grid. uv writes a marker's terms in its own order (`platform_machine == 'x86_64' and sys_platform !=
    'darwin'` for the other way round), so two texts of one requirement must compare equal."""
    out = []
    for text in requires:
        req = Requirement(text)
        marker, req.marker = req.marker, None
        out.append((str(req), tuple(marker.evaluate(env) for env in _MARKER_GRID) if marker else ()))
    return sorted(out)


def project_requires(pyproject_text: str) -> tuple[str, list[str]]:
    doc = tomllib.loads(pyproject_text)
    return doc["project"]["name"], sorted(_norm(d) for d in doc["project"].get("dependencies", []))


# -- what CUDA the lock really holds ---------------------------------------------------------------

CUDA_RUNTIME = re.compile(r"^nvidia-cuda-runtime(-cu\d+)?\Z")


def locked_cuda(uv_lock_text: str) -> tuple[int, int] | None:
    """(major, minor) of the CUDA runtime wheel the uv.lock pins (nvidia-cuda-runtime[-cuXX]), None for CPU."""
    for pkg in tomllib.loads(uv_lock_text).get("package", []):
        if CUDA_RUNTIME.match(pkg.get("name", "")):
            major, minor = (pkg["version"].split(".") + ["0"])[:2]
            return int(major), int(minor)
    return None


# -- the torch family: torchvision and torchaudio are built for one torch -------------------------------------

# PyTorch's release pairing, as the wheels' own metadata states it where it states it (torchvision 0.20.1 requires
# torch==2.5.1, torchaudio 2.5.1 requires torch==2.5.1; torchaudio 2.11.x requires no torch or any torch, which is
# how uv pairs torch 2.11.0 with torchaudio 2.11.1 and libtorchaudio.so fails with an undefined symbol):
# torchaudio X.Y.Z is built for torch X.Y.Z (since 2.1), torchvision 0.(m + 15).p for torch 2.m.p (since 0.16), and
# the three come from one CUDA build (the same local label: +cu128). Before 2.1 the patch levels drifted
# (torch 2.0.1 / torchvision 0.15.2 / torchaudio 2.0.2): there only the minor is compared.
# nix/python.nix checks the minor pairing at evaluation.
FAMILY_MARK = "# torch family pinned to one torch by `comfyver lock` (torchvision/torchaudio are built for one)"
TORCHVISION_OFFSET = 15        # torchvision 0.(m + 15) <-> torch 2.m
PATCH_PAIRED_FROM = 1          # torch 2.1 onwards: the patch level pairs too
MAX_FAMILY_TRIES = 6           # `uv lock` runs spent looking for one release of all three


@dataclass(frozen=True)
class _Built:
    """The torch release a family member is built for: (minor, patch) of torch 2.x (patch None: minor only),
    and its CUDA build (the local version label, '' for none)."""
    minor: int
    patch: int | None
    local: str

    def torch(self) -> str:
        return f"2.{self.minor}" + (f".{self.patch}" if self.patch is not None else "")


def _built_for(name: str, version: str) -> _Built | None:
    try:
        v = Version(version)
    except InvalidVersion:
        return None
    rel = (*v.release, 0, 0)
    local = v.local or ""
    if name == "torchvision" and rel[0] == 0 and rel[1] >= TORCHVISION_OFFSET:
        minor = rel[1] - TORCHVISION_OFFSET
    elif name in ("torch", "torchaudio") and rel[0] == 2:
        minor = rel[1]
    else:
        return None
    return _Built(minor, rel[2] if minor >= PATCH_PAIRED_FROM else None, local)


def _member_version(name: str, minor: int, patch: int, local: str) -> str:
    base = f"0.{minor + TORCHVISION_OFFSET}.{patch}" if name == "torchvision" else f"2.{minor}.{patch}"
    return base + (f"+{local}" if local else "")


def family(uv_lock_text: str) -> dict[str, str]:
    """name -> locked version of torch, torchvision, torchaudio (those the uv.lock holds)."""
    return {p["name"]: p["version"] for p in tomllib.loads(uv_lock_text).get("package", [])
            if p.get("name") in TORCH_FAMILY and "version" in p}


def _mismatched(fam: dict[str, str]) -> list[tuple[str, str, _Built]]:
    """(name, version, built-for) of each member not built for the locked torch ([] when they agree)."""
    torch = _built_for("torch", fam["torch"]) if "torch" in fam else None
    if torch is None:
        return []
    bad = []
    for n, v in sorted(fam.items()):
        b = _built_for(n, v)
        if n == "torch" or b is None:
            continue
        same_release = b.minor == torch.minor and (b.patch is None or torch.patch is None or b.patch == torch.patch)
        if not same_release or b.local != torch.local:
            bad.append((n, v, b))
    return bad


def family_problem(uv_lock_text: str) -> str | None:
    """Why the locked torchvision/torchaudio were not built for the locked torch (None when they were)."""
    fam = family(uv_lock_text)
    bad = _mismatched(fam)
    torch = _built_for("torch", fam.get("torch", ""))
    if not bad or torch is None:
        return None
    why = []
    for n, v, b in bad:
        if b.minor == torch.minor and (b.patch is None or torch.patch is None or b.patch == torch.patch):
            why.append(f"{n} {v} is a {b.local or 'default (no local label)'} build")
        else:
            why.append(f"{n} {v} is built for torch {b.torch()}")
    return f"{'; '.join(why)}, but torch is {fam['torch']}"


def family_fix(uv_lock_text: str) -> str:
    """The `--pip` pins that pair the family with the locked torch (or torch with the member's release)."""
    fam = family(uv_lock_text)
    torch = _built_for("torch", fam.get("torch", ""))
    if torch is None:
        return ""
    patch = torch.patch or 0
    to_torch = " ".join(f"--pip '{n}=={_member_version(n, torch.minor, patch, torch.local)}'"
                        for n, _, _ in _mismatched(fam))
    to_member = " ".join(f"--pip 'torch=={_member_version('torch', b.minor, b.patch or 0, b.local)}'"
                         for _, _, b in _mismatched(fam)[:1])
    return (f"lock again with {to_torch} (built for torch {fam['torch']}), or {to_member} (the torch the other "
            "was built for); a pack that pins a family member is overruled by --pip")


def family_candidates(uv_lock_text: str) -> list[list[str]]:
    """Exact pins of one release of the family to try, best first: the locked torch's release, then the
    releases the other members were built for (newest first), each followed by its earlier patch levels; all of
    torch's CUDA build. ([] when the family agrees.)"""
    fam = family(uv_lock_text)
    torch = _built_for("torch", fam.get("torch", ""))
    if torch is None or not _mismatched(fam):
        return []
    built = [b for n, v in fam.items() if (b := _built_for(n, v)) is not None]
    releases = sorted({(b.minor, b.patch or 0) for b in built}, reverse=True)
    steps = sorted({(m, p) for m, top in releases for p in range(top, -1, -1)}, reverse=True)
    own = (torch.minor, torch.patch or 0)
    targets = [own] + [t for t in steps if t != own]
    return [[f"{n}=={_member_version(n, minor, patch, torch.local)}" for n in sorted(fam)]
            for minor, patch in targets[:MAX_FAMILY_TRIES]]


def family_pins(uv_lock_text: str) -> list[str]:
    """The first pins `family_candidates` offers ([] if the family agrees)."""
    return next(iter(family_candidates(uv_lock_text)), [])


PIN_TAG = "# torch family (comfyver lock)"


def with_family_pins(pyproject: str, pins: list[str]) -> str:
    """The pyproject with the torch family pinned: into the version's own constraint-dependencies when it has
    them (python.constraints: TOML allows one such key), each pin tagged; else a block of their own."""
    base = without_family_pins(pyproject)
    tagged = [f"  {_q(c)},  {PIN_TAG}" for c in pins]
    own = "\nconstraint-dependencies = [\n"
    if own in base:
        return base.replace(own, own + "".join(t + "\n" for t in tagged), 1)
    block = "\n".join([FAMILY_MARK, "constraint-dependencies = [", *tagged, "]"]) + "\n"
    return base.replace("\n\n[tool.uv.workspace]", "\n" + block + "\n[tool.uv.workspace]", 1)


def without_family_pins(pyproject: str) -> str:
    """The pyproject.toml as `generate` writes it (the family pins are added by uv_lock when needed)."""
    text = re.sub(re.escape(FAMILY_MARK) + r"\nconstraint-dependencies = \[\n(?:  .*\n)*\]\n", "", pyproject)
    return re.sub(r"(?m)^  .*,  " + re.escape(PIN_TAG) + r"\n", "", text)


# The NVIDIA driver a CUDA major's minor-version compatibility needs (nix/python.nix driverFloor says the same).
DRIVER_FLOOR = {12: "525", 13: "580"}


def driver_floor(cuda: tuple[int, int] | None) -> str | None:
    return DRIVER_FLOOR.get(cuda[0]) if cuda else None


def profile_cuda(profile: str) -> tuple[int, int] | None:
    """The CUDA a profile name claims: cu128 -> (12, 8); pypi and cpu claim none."""
    m = re.fullmatch(r"cu(\d+)(\d)", profile or "")
    return (int(m[1]), int(m[2])) if m else None


def _misnames(profile: str, held: tuple[int, int] | None, has_torch: bool = False) -> bool:
    """Does the profile name claim another CUDA major than the locked runtime, CUDA for a torch without one, or
    CPU for a CUDA lock? (nix/python.nix checkProfile refuses the same at evaluation.)"""
    claimed = profile_cuda(profile)
    if held is None:
        return claimed is not None and has_torch
    return profile == "cpu" or (claimed is not None and claimed[0] != held[0])


def profile_problem(lock: Lock, uv_lock_text: str) -> str | None:
    """Why python.torch misnames what uv.lock holds (None when it is honest)."""
    profile, held = lock["python"]["torch"], locked_cuda(uv_lock_text)
    if not _misnames(profile, held, "torch" in family(uv_lock_text)):
        return None
    claimed = profile_cuda(profile)
    cuda = f"CUDA {claimed[0]}.{claimed[1]}" if claimed else "no CUDA"  # a profile that misnames claims one
    if held is None:
        return f"python.torch is {profile!r} ({cuda}) but uv.lock's torch has no CUDA wheels"
    if profile == "cpu":
        return f"python.torch is 'cpu' but uv.lock pins CUDA {held[0]}.{held[1]} wheels"
    return (f"python.torch is {profile!r} ({cuda}) but uv.lock pins CUDA "
            f"{held[0]}.{held[1]} wheels (nvidia-cuda-runtime)")


def settle_profile(lock: Lock, vdir: Path) -> str | None:
    """After `uv lock`: a PyPI profile named for one CUDA (`cu128`, the default) that resolved to another
    (PyPI's torch moved to cu13 wheels) is renamed `pypi`, which builds the same; returns a note saying so.
    The PyTorch-index profiles are left alone (`comfyver check` reports a mismatch there)."""
    uvlock = vdir / "uv.lock"
    if lock["python"]["torch"] != "cu128" or not uvlock.is_file():
        return None
    held = locked_cuda(uvlock.read_text())
    if held is None or not _misnames("cu128", held):
        return None
    lock["python"]["torch"] = "pypi"
    return (f"python.torch: PyPI's torch is a CUDA {held[0]}.{held[1]} build now, not 12.8; the lock names it "
            "\"pypi\" (use --torch cu126/cu124/cu121 for an older CUDA from the PyTorch index)")
