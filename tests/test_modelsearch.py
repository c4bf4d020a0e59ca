"""Model source search (sources/modelsearch.py): a model no workflow or ComfyUI-Manager entry gives a source for is
searched on Hugging Face and Civitai, here local stand-ins answering with those APIs' documented shapes."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from comfyver.lock import pipeline
from comfyver.sources import modelsearch

from tests.test_lock_workflow import base_args, env, run  # noqa: F401  (fixture)

UNREACHABLE = "http://127.0.0.1:9"


class StandIn:
    """A JSON API on 127.0.0.1: `answer(path, query) -> (status, body)`; every request is recorded."""

    def __init__(self, answer):
        outer = self
        self.answer, self.requests = answer, []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                outer.requests.append({"path": parts.path, "raw": self.path, "query": parse_qs(parts.query),
                                       "headers": dict(self.headers)})
                status, body = outer.answer(unquote(parts.path), parse_qs(parts.query))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def commit_of(repo: str) -> str:
    return hashlib.sha1(repo.encode()).hexdigest()


class HFHub:
    """The Hub's model listing (`/api/models?search=&full=true`: id, sha, downloads, siblings[].rfilename), revision
    and tree APIs (`type`, `path`, `size`, `oid`, `lfs: {oid, size, pointerSize}`) for `repos`:
    repo -> {"downloads": n, "files": {path: bytes}}."""

    def __init__(self, repos: dict[str, dict], everything: bool = False):
        self.repos, self.everything = repos, everything  # everything: a hostile hub lists every repo for any term

    def __call__(self, path: str, query: dict) -> tuple[int, object]:
        if path == "/api/models":
            term = query.get("search", [""])[0].casefold()
            hits = [r for r in self.repos if term in r.casefold() or self.everything]
            hits.sort(key=lambda r: -self.repos[r].get("downloads", 0))
            limit = int(query.get("limit", ["1000"])[0])
            return 200, [self.info(r) for r in hits[:limit]]
        for repo, spec in self.repos.items():
            prefix = f"/api/models/{repo}/"
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            if rest.startswith("revision/"):
                return 200, self.info(repo)
            if rest.startswith(f"tree/{commit_of(repo)}"):
                folder = rest[len(f"tree/{commit_of(repo)}"):].strip("/")
                out = []
                for p, data in spec["files"].items():
                    parent = p.rsplit("/", 1)[0] if "/" in p else ""
                    if parent == folder or ("recursive" in query and p.startswith(folder)):
                        out.append({"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data),
                                    "path": p, "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                                       "pointerSize": 134}})
                return 200, out
        return 404, {"error": "Repository not found"}

    def info(self, repo: str) -> dict:
        spec = self.repos[repo]
        return {"_id": commit_of(repo)[:24], "id": repo, "modelId": repo, "sha": commit_of(repo),
                "downloads": spec.get("downloads", 0), "likes": 0, "private": False, "tags": [],
                "siblings": [{"rfilename": p} for p in spec["files"]]}


class Civitai:
    """Civitai's `/api/v1/models?query=` (items[].modelVersions[].files[]) and `/api/v1/model-versions/by-hash/`.
    `models`: [{"id", "name", "downloads", "versions": [{"id", "name", "files": {name: bytes}}]}]."""

    def __init__(self, models: list[dict], everything: bool = False):
        self.models, self.everything = models, everything

    def version(self, m: dict, v: dict) -> dict:
        return {"id": v["id"], "modelId": m["id"], "name": v["name"], "model": {"name": m["name"], "type": "LORA"},
                "stats": {"downloadCount": m.get("downloads", 0)},
                "files": [{"id": i, "name": n, "sizeKB": len(d) / 1024, "type": "Model", "primary": i == 0,
                           "hashes": {"SHA256": hashlib.sha256(d).hexdigest().upper()},
                           "downloadUrl": f"https://civitai.example/api/download/models/{v['id']}"}
                          for i, (n, d) in enumerate(v["files"].items())]}

    def __call__(self, path: str, query: dict) -> tuple[int, object]:
        if path.startswith("/api/v1/model-versions/by-hash/"):
            h = path.rsplit("/", 1)[1].lower()
            for m in self.models:
                for v in m["versions"]:
                    if any(hashlib.sha256(d).hexdigest() == h for d in v["files"].values()):
                        return 200, self.version(m, v)
            return 404, {"error": "Model not found"}
        if path == "/api/v1/models":
            term = query.get("query", [""])[0].casefold()
            items = [{"id": m["id"], "name": m["name"], "type": "LORA", "stats": {"downloadCount": m.get("downloads", 0)},
                      "modelVersions": [self.version(m, v) for v in m["versions"]]}
                     for m in self.models if term in m["name"].casefold() or self.everything]
            return 200, {"items": items, "metadata": {"totalItems": len(items)}}
        return 404, {"error": "not found"}


@pytest.fixture
def servers(monkeypatch):
    """Start stand-ins: servers(hf=HFHub(...) | None, civitai=Civitai(...) | None); a service given None points
    at a port nothing listens on."""
    started: list[StandIn] = []
    monkeypatch.setenv(modelsearch.ENV, "1")

    def start(hf=None, civitai=None):
        out = []
        for var, app in (("HF_ENDPOINT", hf), ("CIVITAI_ENDPOINT", civitai)):
            srv = StandIn(app) if app is not None else None
            if srv:
                started.append(srv)
            monkeypatch.setenv(var, srv.url if srv else UNREACHABLE)
            out.append(srv)
        return out

    yield start
    for s in started:
        s.close()


def model(folder: str, name: str, **extra) -> dict[str, dict]:
    return {f"{folder}/{name}": {"folder": folder, "name": name, "used_by": [f"w.json#1 L.{folder}"], "active": True,
                                 **extra}}


# ---------------------------------------------------------------- unit: one search against the stand-ins


def test_a_unique_exact_file_name_match_is_picked_with_its_evidence_and_cached(servers, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf-secret-token")
    monkeypatch.setenv("CIVITAI_TOKEN", "civitai-secret-token")
    hf, civ = servers(hf=HFHub({
        "alice/x-lora": {"downloads": 50, "files": {"README.md": b"hi", "x.safetensors": b"X" * 100}},
        "bob/x-lora-upper": {"downloads": 900, "files": {"X.safetensors": b"Y" * 10}},  # case differs: never picked
        "carol/unrelated": {"files": {"y.safetensors": b"z"}},
    }), civitai=Civitai([]))
    models = model("loras", "x.safetensors")
    notes = modelsearch.Search().apply(models)
    e = models["loras/x.safetensors"]
    assert e["url"] == f"hf://alice/x-lora@{commit_of('alice/x-lora')}/x.safetensors"
    assert e["source"] == "huggingface search" and e["evidence"] == "the only exact file name match"
    assert any(n.startswith("model loras/x.safetensors: source found by Hugging Face search "
                            "(alice/x-lora, the only exact file name match)") for n in notes), notes
    # the query named the stem; a few requests only; each token went to its own host only, and no note shows one
    assert hf.requests[0]["query"]["search"] == ["x"] and len(hf.requests) <= 1 + modelsearch.HF_TREES
    assert all(r["headers"].get("Authorization") == "Bearer hf-secret-token" for r in hf.requests)
    assert civ.requests and all(r["headers"].get("Authorization") == "Bearer civitai-secret-token" for r in civ.requests)
    assert not any("secret" in n for n in notes)
    # a second run answers from the cache (<cache>/model-search.json): nothing is asked again
    asked = len(hf.requests) + len(civ.requests)
    again = model("loras", "x.safetensors")
    modelsearch.Search().apply(again)
    assert again["loras/x.safetensors"]["url"] == e["url"]
    assert len(hf.requests) + len(civ.requests) == asked


def test_two_exact_matches_are_not_picked_and_the_problem_lists_both_best_first(servers):
    servers(hf=HFHub({"alice/detail": {"downloads": 10, "files": {"loras/detail.safetensors": b"a" * 10}}}),
            civitai=Civitai([{"id": 7, "name": "Detail tweaker", "downloads": 5000,
                              "versions": [{"id": 701, "name": "v1", "files": {"detail.safetensors": b"b" * 20}}]}]))
    models = model("loras", "detail.safetensors")
    modelsearch.Search().apply(models)
    e = models["loras/detail.safetensors"]
    assert "url" not in e
    hf_src = f"hf://alice/detail@{commit_of('alice/detail')}/loras/detail.safetensors"
    assert e["search"]["candidates"] == ["civitai://701?file=detail.safetensors", hf_src]  # most downloads first
    [prob] = pipeline._model_problems(models, "v")
    assert prob.item == "model loras/detail.safetensors" and "2 exact file name matches" in prob.problem
    assert prob.fix.startswith("--model 'loras/detail.safetensors=<one of these>'")
    assert prob.fix.index("civitai://701?file=detail.safetensors") < prob.fix.index(hf_src)


def test_civitai_by_hash_when_the_workflow_carries_one(servers):
    data = b"the lora bytes" * 50
    sha = hashlib.sha256(data).hexdigest()
    hf, civ = servers(hf=HFHub({"alice/x": {"files": {"x.safetensors": b"other bytes"}}}),
                      civitai=Civitai([{"id": 3, "name": "Some LoRA", "versions": [
                          {"id": 31, "name": "v2", "files": {"some_lora_v2.safetensors": data, "cfg.yaml": b"c"}}]}]))
    models = model("loras", "x.safetensors", sha256=sha)
    notes = modelsearch.Search().apply(models)
    e = models["loras/x.safetensors"]
    assert e["url"] == "civitai://31?file=some_lora_v2.safetensors" and e["source"] == "civitai search"
    assert any("source found by Civitai search (Some LoRA / v2, its sha256 is the workflow's hash" in n for n in notes)
    assert civ.requests[0]["path"] == f"/api/v1/model-versions/by-hash/{sha.upper()}"
    assert hf.requests == []  # the hash decided: nothing searched by name

    # no Civitai hit: the Hugging Face file of that name whose LFS sha256 differs from the hash is not the model
    models = model("loras", "x.safetensors", sha256="0" * 64)
    modelsearch.Search().apply(models)
    assert "url" not in models["loras/x.safetensors"] and "search" not in models["loras/x.safetensors"]


def test_an_unreachable_service_finds_nothing_fast_and_says_so_once(servers):
    servers()  # both at 127.0.0.1:9
    models = {}
    for i in range(6):
        models.update(model("loras", f"m{i}.safetensors", sha256=f"{i:x}" * 64))
    t0 = time.monotonic()
    notes = modelsearch.Search().apply(models)
    assert time.monotonic() - t0 < 3
    assert all("url" not in m and "search" not in m for m in models.values())
    assert sorted(n for n in notes if n.startswith("model search: could not reach")) == [
        f"model search: could not reach Civitai ({UNREACHABLE} does not answer); models without a source were not "
        "searched there",
        f"model search: could not reach Hugging Face ({UNREACHABLE} does not answer); models without a source were "
        "not searched there"]
    [prob] = pipeline._model_problems(model("loras", "m0.safetensors"), "v")  # the usual row stays
    assert prob.problem.startswith("no download source in the workflow")


def test_hostile_names_are_encoded_and_hostile_answers_dropped(servers):
    hostile = "a&search=evil?b=1#c d%2e.safetensors"
    hf, civ = servers(hf=HFHub({"mallory/a": {"files": {f"sub/{hostile}": b"4"}}}, everything=True),
                      civitai=Civitai([{"id": 9, "name": "m", "versions": [{"id": 91, "name": "v", "files": {hostile: b"6"}}]}],
                                      everything=True))
    models = model("loras", hostile)
    models.update(model("loras", "../../etc/x.safetensors"))  # escapes models/: never searched
    modelsearch.Search().apply(models)
    # the name went out as one URL-encoded parameter, the whole stem; the answers' files named with URL
    # metacharacters are not candidates
    first = hf.requests[0]
    assert first["query"]["search"] == [hostile.rsplit(".", 1)[0]] and first["raw"].count("search=") == 1
    assert "#" not in first["raw"] and " " not in first["raw"] and "?b=" not in first["raw"]
    assert civ.requests[0]["query"]["query"] == [hostile.rsplit(".", 1)[0]]
    assert all("url" not in m and "search" not in m for m in models.values())
    assert not any("etc" in r["raw"] for r in hf.requests + civ.requests)


def test_answers_naming_files_outside_a_repository_are_dropped(servers):
    servers(hf=HFHub({
        "mallory/x": {"downloads": 10**6, "files": {"../../x.safetensors": b"1", "/x.safetensors": b"2",
                                                    "dir/../x.safetensors": b"3", "./x.safetensors": b"4"}},
        "../x": {"downloads": 10**6, "files": {"x.safetensors": b"5"}},
        "good/x": {"downloads": 1, "files": {"x.safetensors": b"6"}},
    }), civitai=Civitai([{"id": 9, "name": "x", "downloads": 10**6, "versions": [
        {"id": "12; rm", "name": "v", "files": {"x.safetensors": b"7"}},
        {"id": 13, "name": "v", "files": {"../x.safetensors": b"8", "x.safetensors\n": b"9"}}]}]))
    models = model("loras", "x.safetensors")
    notes = modelsearch.Search().apply(models)
    assert models["loras/x.safetensors"]["url"] == f"hf://good/x@{commit_of('good/x')}/x.safetensors", notes


# ---------------------------------------------------------------- end to end: `comfyver lock`


def test_lock_locks_a_model_with_no_other_source_from_the_hugging_face_search(env, servers, capsys):
    data = (env.http.files_root / "sam_b.pth").read_bytes()
    _, sam_sha = env.files["sam_b.pth"]
    repo = "carol/sam_b-mirror"
    servers(hf=HFHub({repo: {"downloads": 3, "files": {"weights/sam_b.pth": data, "README.md": b"# sam"}}}))
    args = [*base_args(env), "--choose", "SharedText=comfyui-b"]

    rc, out, _ = run(capsys, *args, "--no-search")  # off: the usual problem row
    assert rc == 1 and [p["item"] for p in json.loads(out)["problems"]] == ["model sams/sam_b.pth"]

    rc, out, err = run(capsys, *args)
    assert rc == 0, out + err
    res = json.loads(out)
    src = f"hf://{repo}@{commit_of(repo)}/weights/sam_b.pth"
    placed = {p["model"]: p for p in res["placed"]}
    assert placed["sams/sam_b.pth"]["source"] == "huggingface search"
    assert any(n.startswith(f"model sams/sam_b.pth: source found by Hugging Face search ({repo}, the only exact "
                            "file name match)") for n in res["notes"]), res["notes"]
    assert any(n.startswith("model search: could not reach Civitai") for n in res["notes"])
    lock = json.loads((env.root / "versions" / "demo" / "version.json").read_text())
    m = lock["models"]["sams/sam_b.pth"]
    assert m["original"] == {"url": src} and m["from"] == "workflow"  # found from a workflow's name: untrusted
    assert m["locked"]["sha256"] == sam_sha and m["locked"]["size"] == len(data)
    assert m["locked"]["url"].endswith(f"/{repo}/resolve/{commit_of(repo)}/weights/sam_b.pth")
