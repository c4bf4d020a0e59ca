"""Model source search: where to get a model file a workflow names but gives no source for.

Asked only for a model nothing else gives a source for (not the workflow's `models` entries, not ComfyUI-Manager's
model list, not the lock, not `--model`), and only by file name (and the workflow's sha256 where it has one):

- Civitai by hash: `GET {CIVITAI_ENDPOINT}/api/v1/model-versions/by-hash/<SHA256>` (the workflow carries a hash);
  a file whose SHA256 is that hash is the model, whatever its name -> `civitai://<versionId>?file=<name>`;
- Hugging Face by name: `GET {HF_ENDPOINT}/api/models?search=<stem>&full=true` (each repository with its files,
  `siblings[].rfilename`, and its commit `sha`), then the tree API of a matching file's folder for its LFS
  sha256 and size -> `hf://<owner>/<repo>@<commit>/<path>`;
- Civitai by name: `GET {CIVITAI_ENDPOINT}/api/v1/models?query=<stem>`, `items[].modelVersions[].files[].name`
  -> `civitai://<versionId>?file=<name>`.

A candidate is exact when its file name equals the workflow's (else it differs in case only; never picked). A
candidate whose sha256 differs from the workflow's hash is dropped. Picked: the best candidate whose sha256 is
the workflow's hash, else the one exact file name match; several exact matches are listed (best first: hash,
exact, downloads, shallower path), never picked. The picked source is then locked by its scheme (schemes.py), as
a source the workflow named (untrusted: its name came from workflow content).

Polite and safe: a few requests per model (1 search + HF_TREES tree reads on Hugging Face, 2 on Civitai), at
most MAX_MODELS models a run, TIMEOUT seconds each, no retries; a service that cannot be reached (or refuses) is
not asked again in the run, and says so once in the notes. Answers are cached CACHE_TTL seconds in
`<cache>/model-search.json` (written atomically, under a file lock). Tokens go to their own host only
(web.auth_headers). Workflow names are URL-encoded in queries; answers are validated: repository ids, commits,
paths inside the repository (no `..`, no URL metacharacters), version ids.
COMFYVER_MODEL_SEARCH=0 (or `lock --no-search`) turns it off.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from filelock import FileLock

from comfyver.base import lockfile, project, web
from comfyver.base.errors import ComfyverError, Reason
from comfyver.base.fsutil import atomic_write_bytes

ENV = "COMFYVER_MODEL_SEARCH"
HF, CIVITAI = "Hugging Face", "Civitai"
ORIGINS = {HF: "huggingface search", CIVITAI: "civitai search"}  # a report model's `source` when search found it
TIMEOUT = 8.0            # seconds, each request
HF_REPOS = 10            # repositories one Hugging Face search lists
HF_TREES = 3             # tree reads (LFS sha256 and size) per model
CIVITAI_MODELS = 10      # models one Civitai search lists
MAX_MODELS = 32          # models searched in one run
MAX_ANSWER = 4 << 20     # bytes of one answer
SHOWN = 5                # candidates a problem row lists
CACHE_TTL = 24 * 3600    # seconds an answer is reused
CACHE_ENTRIES = 512
CACHE_FILE = "model-search.json"

_REPO_RE = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f?#%\\]")  # control characters and URL metacharacters, in paths and names


def enabled() -> bool:
    """Whether search is on (COMFYVER_MODEL_SEARCH is not 0/false/no/off)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@dataclass(frozen=True)
class Candidate:
    """A file a service has that may be the model."""
    source: str              # hf://owner/repo@commit/path | civitai://<versionId>?file=<name>
    service: str             # HF | CIVITAI
    where: str               # owner/repo, or the Civitai model's name and version
    path: str                # the file's path in the repository (Civitai: its name)
    exact: bool              # its file name is the wanted one exactly (else: equal ignoring case)
    sha256: str | None = None
    size: int | None = None
    downloads: int = 0
    hash_match: bool = False  # its sha256 is the workflow's hash for the model

    def rank(self) -> tuple[bool, bool, int, int, str]:
        return not self.hash_match, not self.exact, -self.downloads, self.path.count("/"), self.source

    def describe(self) -> str:
        facts = [f"{self.service} {self.where}"]
        if self.size is not None:
            facts.append(f"{self.size} bytes")
        facts.append(f"{self.downloads} downloads")
        if not self.exact:
            facts.append(f"named {self.path.rsplit('/', 1)[-1]!r}")
        return f"{self.source} ({', '.join(facts)})"


@dataclass(frozen=True)
class Result:
    """What the search found for one model: the pick (None: not decided), every candidate best first, and why."""
    picked: Candidate | None
    candidates: tuple[Candidate, ...]
    evidence: str


class _Unavailable(Exception):
    """A service that cannot be asked now (no connection, refused, a bad answer): not asked again this run."""


@dataclass
class Search:
    """One run's search: the models it skips (`skip`: lock keys locked already or given with --model), which
    services it asks, and what it learned (unreachable services, cached answers)."""
    skip: frozenset[str] = frozenset()
    services: tuple[str, ...] = (HF, CIVITAI)
    down: dict[str, str] = field(default_factory=dict)     # service -> why it is not asked again
    searched: int = 0
    _cache: dict[str, Any] | None = None
    _fresh: dict[str, Any] = field(default_factory=dict)   # answers to write into the cache

    # ------------------------------------------------------------ the report's hook

    def apply(self, models: dict[str, dict[str, Any]]) -> list[str]:
        """Search a source for each demanded model of a report (analyze.Report.models) that has none: a pick
        becomes its `url` (`source`: ORIGINS, `evidence`: why), undecided candidates go to its `search`
        (`problem`, `fix`, `candidates`) for the lock's problem row. Returns the notes."""
        notes: list[str] = []
        for key, e in models.items():
            if (not e.get("active") or "url" in e or e.get("candidates") or e.get("folder") is None
                    or key in self.skip):
                continue
            try:
                lockfile.check_model_path(key)
            except ValueError:
                continue  # a name escaping models/: the lock's problem row says so, nothing is asked
            if self.searched >= MAX_MODELS:
                notes.append(f"model search: stopped after {MAX_MODELS} models; give the others with --model")
                break
            self.searched += 1
            sha = e.get("sha256") if isinstance(e.get("sha256"), str) else None
            r = self.find(str(e["name"]).replace("\\", "/").rsplit("/", 1)[-1], sha)
            if r.picked is not None:
                e.update(url=r.picked.source, source=ORIGINS[r.picked.service], evidence=r.evidence)
                notes.append(f"model {key}: source found by {r.picked.service} search ({r.picked.where}, "
                             f"{r.evidence}): {r.picked.source}")
            elif r.candidates:
                e["search"] = _undecided(key, r)
        self.flush()
        notes += [f"model search: could not reach {s} ({why}); models without a source were not searched there"
                  for s, why in sorted(self.down.items())]
        return [web.redact(n) for n in notes]

    # ------------------------------------------------------------ one model

    def find(self, name: str, sha256: str | None = None) -> Result:
        """Candidates for file `name` (and its sha256, if the workflow has one), ranked, and the pick."""
        sha = sha256.lower() if sha256 and _SHA256_RE.fullmatch(sha256) else None
        found: list[Candidate] = []
        if sha:
            found += self._ask(CIVITAI, lambda: self._civitai_by_hash(name, sha))
        if not any(c.hash_match for c in found):
            found += self._ask(HF, lambda: self._hf(name, sha))
            found += self._ask(CIVITAI, lambda: self._civitai_by_name(name, sha))
        unique = {c.source: c for c in found if not (sha and c.sha256 and c.sha256 != sha)}
        ranked = tuple(sorted(unique.values(), key=Candidate.rank))
        by_hash = [c for c in ranked if c.hash_match]
        exact = [c for c in ranked if c.exact]
        if by_hash:
            return Result(by_hash[0], ranked, "its sha256 is the workflow's hash for the model")
        if len(exact) == 1:
            return Result(exact[0], ranked, "the only exact file name match")
        if exact:
            return Result(None, ranked, f"{len(exact)} exact file name matches")
        return Result(None, ranked, "no exact file name match" if ranked else "nothing found")

    def _ask(self, service: str, how: Callable[[], list[Candidate]]) -> list[Candidate]:
        if service not in self.services or service in self.down:
            return []
        try:
            return how()
        except _Unavailable as exc:
            self.down[service] = str(exc)
            return []

    # ------------------------------------------------------------ Hugging Face

    def _hf(self, name: str, sha: str | None) -> list[Candidate]:
        base = web.hf_endpoint()
        q = urlencode({"search": _stem(name), "limit": HF_REPOS, "full": "true", "sort": "downloads",
                       "direction": "-1"})
        items = self._get(HF, f"{base}/api/models?{q}")
        out: list[Candidate] = []
        trees = HF_TREES
        for it in items[:HF_REPOS] if isinstance(items, list) else []:
            repo = it.get("id") or it.get("modelId") if isinstance(it, dict) else None
            if not isinstance(repo, str) or not _REPO_RE.fullmatch(repo) or ".." in repo:
                continue
            commit = it["sha"] if isinstance(it.get("sha"), str) and _COMMIT_RE.fullmatch(it["sha"]) else None
            rev = commit or "main"
            downloads = _count(it.get("downloads"))
            siblings = it.get("siblings")
            trees_of: dict[str, dict[str, dict[str, Any]]] = {}  # folder -> its files (path -> tree entry)
            if isinstance(siblings, list):
                paths = [s["rfilename"] for s in siblings if isinstance(s, dict) and isinstance(s.get("rfilename"), str)]
            else:  # a listing without its files: the repository's whole tree, when the budget allows
                if trees <= 0:
                    continue
                trees -= 1
                whole = self._hf_tree(base, repo, rev, "", recursive=True)
                paths = list(whole)
                for p, entry in whole.items():
                    trees_of.setdefault(p.rsplit("/", 1)[0] if "/" in p else "", {})[p] = entry
            for path in paths:
                if (not _safe_path(path) or any(ch.isspace() for ch in path)  # the lock's URLs hold no spaces
                        or path.rsplit("/", 1)[-1].casefold() != name.casefold()):
                    continue
                folder = path.rsplit("/", 1)[0] if "/" in path else ""
                if folder not in trees_of and trees > 0 and isinstance(siblings, list):
                    trees -= 1
                    trees_of[folder] = self._hf_tree(base, repo, rev, folder)
                files = trees_of.get(folder)
                if files is not None and path not in files:
                    continue  # listed, but not a file of that commit
                fsha, size = _lfs(files.get(path) if files is not None else None)
                out.append(Candidate(f"hf://{repo}@{rev}/{path}" if commit else f"hf://{repo}/{path}", HF, repo, path,
                                     path.rsplit("/", 1)[-1] == name, fsha, size, downloads,
                                     hash_match=bool(sha and fsha == sha)))
        return out

    def _hf_tree(self, base: str, repo: str, rev: str, folder: str, recursive: bool = False) -> dict[str, dict[str, Any]]:
        """The files of `folder` in `repo`@`rev` (path -> tree entry)."""
        url = f"{base}/api/models/{repo}/tree/{quote(rev, safe='')}" + (f"/{quote(folder)}" if folder else "")
        entries = self._get(HF, url + ("?recursive=true" if recursive else ""))
        return {e["path"]: e for e in entries if isinstance(e, dict) and e.get("type") == "file"
                and isinstance(e.get("path"), str)} if isinstance(entries, list) else {}

    # ------------------------------------------------------------ Civitai

    def _civitai_by_hash(self, name: str, sha: str) -> list[Candidate]:
        info = self._get(CIVITAI, f"{web.civitai_endpoint()}/api/v1/model-versions/by-hash/{sha.upper()}")
        if not isinstance(info, dict):
            return []
        model = _dict(info.get("model"))
        where = f"{_text(model.get('name'))} / {_text(info.get('name'))}"
        downloads = _count(_dict(info.get("stats")).get("downloadCount"))
        return [c for c in _civitai_files(info, name, sha, where, downloads) if c.hash_match]

    def _civitai_by_name(self, name: str, sha: str | None) -> list[Candidate]:
        q = urlencode({"query": _stem(name), "limit": CIVITAI_MODELS})
        answer = self._get(CIVITAI, f"{web.civitai_endpoint()}/api/v1/models?{q}")
        items = answer.get("items") if isinstance(answer, dict) else None
        out: list[Candidate] = []
        for it in items[:CIVITAI_MODELS] if isinstance(items, list) else []:
            if not isinstance(it, dict) or not isinstance(it.get("modelVersions"), list):
                continue
            stats = _dict(it.get("stats"))
            for v in it["modelVersions"]:
                if isinstance(v, dict):
                    out += _civitai_files(v, name, sha, f"{_text(it.get('name'))} / {_text(v.get('name'))}",
                                          _count(stats.get("downloadCount")))
        return out

    # ------------------------------------------------------------ HTTP and the cache

    def _get(self, service: str, url: str) -> Any:
        """The JSON answer of `url` (None: 404), from the cache when fresh; raises _Unavailable."""
        cache = self._load()
        hit = cache.get(url)
        if isinstance(hit, dict) and isinstance(hit.get("at"), (int, float)) and time.time() - hit["at"] < CACHE_TTL:
            return hit.get("data")
        try:
            r = web.get(url, what=f"model search ({service})", retries=0, timeout=TIMEOUT, stream=True, allow=(404,))
        except ComfyverError as exc:
            if exc.reason is Reason.UNREACHABLE:
                raise _Unavailable(f"{web.redact(url.split('/api/', 1)[0])} does not answer") from None
            raise _Unavailable(web.redact(exc.message)) from None
        with r:
            data = None
            if r.status_code != 404:
                body = bytearray()
                try:
                    for chunk in r.iter_content(65536):
                        body += chunk
                        if len(body) > MAX_ANSWER:
                            raise _Unavailable(f"{web.redact(url)}: an answer over {MAX_ANSWER} bytes")
                    data = json.loads(body)
                except (OSError, ValueError) as exc:  # requests' read errors are OSErrors; bad JSON a ValueError
                    raise _Unavailable(f"{web.redact(url)}: no JSON answer ({type(exc).__name__})") from None
        self._fresh[url] = cache[url] = {"at": time.time(), "data": data}
        return data

    def _load(self) -> dict[str, Any]:
        if self._cache is None:
            self._cache = _read_cache(_cache_path())
        return self._cache

    def flush(self) -> None:
        """The new answers merged into the cache file (atomically, under its lock); a cache that cannot be
        written only makes the next run ask again."""
        if not self._fresh:
            return
        path = _cache_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(path) + ".lock", timeout=10):
                now = time.time()
                merged = {k: v for k, v in _read_cache(path).items() if now - v.get("at", 0) < CACHE_TTL}
                merged.update(self._fresh)
                keep = sorted(merged.items(), key=lambda kv: kv[1].get("at", 0))[-CACHE_ENTRIES:]
                atomic_write_bytes(path, json.dumps({"version": 1, "answers": dict(keep)}).encode())
        except (OSError, TimeoutError):
            pass
        self._fresh.clear()


# ---------------------------------------------------------------- helpers


def _undecided(key: str, r: Result) -> dict[str, Any]:
    """The problem row's text for a model search found several (or only similar) files for."""
    shown = r.candidates[:SHOWN]
    more = f"; and {len(r.candidates) - SHOWN} more" if len(r.candidates) > SHOWN else ""
    listed = "; ".join(c.describe() for c in shown) + more
    return {"candidates": [c.source for c in r.candidates],
            "problem": f"no download source in the workflow or ComfyUI-Manager's model list; model search found "
                       f"{r.evidence}, not picked",
            "fix": f"--model '{key}=<one of these>', best first: {listed}"}


def _civitai_files(version: dict[str, Any], name: str, sha: str | None, where: str, downloads: int) -> list[Candidate]:
    vid = version.get("id")
    files = version.get("files")
    if not isinstance(vid, int) or isinstance(vid, bool) or vid <= 0 or not isinstance(files, list):
        return []
    out = []
    for f in files:
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not _safe_name(f["name"]):
            continue
        fname: str = f["name"]
        hashes = _dict(f.get("hashes"))
        fsha = hashes.get("SHA256")
        fsha = fsha.lower() if isinstance(fsha, str) and _SHA256_RE.fullmatch(fsha) else None
        hit = bool(sha and fsha == sha)
        if not hit and fname.casefold() != name.casefold():
            continue
        kb = f.get("sizeKB")
        size = round(float(kb) * 1024) if isinstance(kb, (int, float)) and not isinstance(kb, bool) and kb >= 0 else None
        out.append(Candidate(f"civitai://{vid}?file={quote(fname, safe='')}", CIVITAI, where, fname, fname == name,
                             fsha, size, downloads, hash_match=hit))
    return out


def _lfs(entry: dict[str, Any] | None) -> tuple[str | None, int | None]:
    """A tree entry's LFS sha256 and size (a plain git file: no sha256, its size)."""
    if entry is None:
        return None, None
    lfs = _dict(entry.get("lfs"))
    oid = lfs.get("oid")
    size = lfs.get("size", entry.get("size"))
    sha = oid if isinstance(oid, str) and re.fullmatch(r"[0-9a-f]{64}", oid) else None
    return sha, size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


def _safe_path(path: str) -> bool:
    """A path inside a repository: relative, no `.`/`..`/empty parts, no control or URL metacharacters."""
    return (0 < len(path) <= 512 and not path.startswith("/") and not _UNSAFE.search(path)
            and all(p not in ("", ".", "..") for p in path.split("/")))


def _safe_name(name: str) -> bool:
    return _safe_path(name) and "/" not in name


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name.strip(".") else name


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _count(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def _text(v: Any) -> str:
    """A name a server gave, for display: printable, at most 80 characters."""
    s = "".join(ch for ch in v if ch.isprintable()) if isinstance(v, str) else "?"
    return s[:77] + "..." if len(s) > 80 else s or "?"


def _cache_path() -> Path:
    return project.cache_dir() / CACHE_FILE


def _read_cache(path: Path) -> dict[str, Any]:
    """The cached answers (url -> {at, data}); a missing or unreadable cache is empty, never an error."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    answers = data.get("answers") if isinstance(data, dict) and data.get("version") == 1 else None
    return {k: v for k, v in answers.items() if isinstance(v, dict)} if isinstance(answers, dict) else {}
