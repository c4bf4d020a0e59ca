"""RunPod's REST API v2 (serverless endpoints, their releases, network volumes) on 127.0.0.1, in memory.

Written from RunPod's published OpenAPI document (`../shared/data/runpod-api/api-reference-v2_openapi.json`,
"Runpod public REST API — v2"), which it also reads at run time: every request body is validated against the
document's own request schema (CreateEndpointRequest, UpdateEndpointRequest), so a body the real API would
refuse with 422 is refused here too. What the document states in prose is coded by hand:

- `Authorization: Bearer <key>` on every route, else 401 (ErrorResponse: title, status, detail);
- unknown endpoint or volume ids: 404; a body that is not JSON, exactly-one-of `gpu`/`cpu` broken, a non-empty
  `allowedCudaVersions` beside `minCudaVersion`, `gpu` on a CPU endpoint: 400; schema failures: 422 with `errors`;
- POST /v2/serverless answers 201 with the Endpoint; PATCH is partial (`env` replaces the endpoint's env, a
  `gpu.pools` without `excludedTypes` clears them, `minCudaVersion: ""` clears the floor, `[]` clears the set);
- container-affecting changes (image, env, args, disk, ports, registry, gpu, volumes, data centers, flashboot)
  make a new release (the endpoint's configuration version + 1) whose `diff` lists each changed field with its
  old and new value (field names as the document's examples: `template.imageName`, `template.env`,
  `workers.max` ...); `workers`, `scaling`, `timeout` and `name` apply without a release, as the document says;
- GET /v2/serverless/{id}/releases: newest first, `endpointVersion`, and a rollout summary.

Not here: pods, clusters, templates, registries, catalog, billing, logs, workers (comfyver does not call them).
Every request is recorded (`requests`: method, path, headers, parsed body).
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema

OPENAPI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "runpod-api" / "api-reference-v2_openapi.json"

# fields whose change makes a release, keyed by the Endpoint's own path; the value is the diff's field name
RELEASE_FIELDS = {
    ("image",): "template.imageName", ("env",): "template.env", ("args",): "template.args",
    ("disk",): "template.containerDiskInGb", ("ports",): "template.ports", ("registry",): "template.registry",
    ("gpu", "pools"): "gpu.pools", ("gpu", "excludedTypes"): "gpu.excludedTypes", ("gpu", "count"): "gpu.count",
    ("gpu", "minCudaVersion"): "gpu.minCudaVersion", ("gpu", "allowedCudaVersions"): "gpu.allowedCudaVersions",
    ("networkVolumes",): "networkVolumes", ("dataCenterIds",): "dataCenterIds", ("flashboot",): "flashboot",
}


def load_document(path: Path = OPENAPI) -> dict[str, Any]:
    return json.loads(path.read_text())


def validator(doc: dict[str, Any], schema_name: str) -> jsonschema.Draft202012Validator:
    """A JSON Schema 2020-12 validator (OpenAPI 3.1's dialect) for one of the document's component schemas."""
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{schema_name}",
                                            "components": doc["components"]})


def schema_errors(doc: dict[str, Any], schema_name: str, obj: Any) -> list[str]:
    return [f"${''.join(f'.{p}' for p in e.absolute_path)}: {e.message}"
            for e in validator(doc, schema_name).iter_errors(obj)]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class Problem(Exception):
    def __init__(self, status: int, detail: str, errors: list[str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.errors = status, detail, errors


TITLES = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
          422: "Unprocessable Entity"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _get(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)  # type: ignore[assignment]
    return obj


class RunPodV2:
    def __init__(self, key: str, document: Path = OPENAPI):
        self.key = key
        self.doc = load_document(document)
        self.lock = threading.Lock()
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.releases: dict[str, list[dict[str, Any]]] = {}  # oldest first
        self.versions: dict[str, int] = {}
        self.volumes: dict[str, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        api = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _serve(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                status, obj = api.handle(self.command, urlsplit(self.path).path, dict(self.headers.items()), raw)
                body = json.dumps(obj).encode() if obj is not None else b""
                self.send_response(status)
                ctype = "application/problem+json" if status >= 400 else "application/json"
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------------ state
    def add_volume(self, volume_id: str, data_center: str = "EU-RO-1", size: int = 100) -> dict[str, Any]:
        vol = {"id": volume_id, "name": f"vol-{volume_id}", "size": size, "dataCenter": data_center,
               "type": "STANDARD"}
        self.volumes[volume_id] = vol
        return vol

    def live_release(self, endpoint_id: str) -> dict[str, Any]:
        return self.releases[endpoint_id][-1]

    def requests_to(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    # ------------------------------------------------------------------ routing
    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        body: Any = None
        parse_error = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                parse_error = str(exc)
        with self.lock:
            self.requests.append(Recorded(method, path, headers, body))
            try:
                auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
                if not auth.startswith("Bearer "):
                    raise Problem(401, "missing bearer token")
                if not secrets.compare_digest(auth[len("Bearer "):], self.key):
                    raise Problem(401, "invalid bearer token")
                if parse_error is not None:
                    raise Problem(400, f"request body is not JSON: {parse_error}")
                return self.route(method, path.rstrip("/").split("/")[1:], body)
            except Problem as p:
                err: dict[str, Any] = {"title": TITLES.get(p.status, "Error"), "status": p.status, "detail": p.detail}
                if p.errors:
                    err["errors"] = p.errors
                return p.status, err

    def route(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        if parts[:2] == ["v2", "serverless"]:
            rest = parts[2:]
            if not rest:
                if method == "GET":
                    return 200, {"endpoints": [copy.deepcopy(e) for e in self.endpoints.values()]}
                if method == "POST":
                    return 201, self.create(body)
            elif len(rest) == 1:
                ep = self._endpoint(rest[0])
                if method == "GET":
                    return 200, copy.deepcopy(ep)
                if method == "PATCH":
                    return 200, self.update(ep, body)
                if method == "DELETE":
                    del self.endpoints[ep["id"]]
                    return 204, None
            elif rest[1:] == ["releases"] and len(rest) == 2:
                ep = self._endpoint(rest[0])
                if method == "GET":
                    return 200, self.release_list(ep)
            else:
                raise Problem(404, "resource not found")
            raise Problem(405, f"{method} is not allowed here")
        if parts[:2] == ["v2", "network-volumes"] and len(parts) == 3:
            if method != "GET":
                raise Problem(405, f"{method} is not allowed here")
            vol = self.volumes.get(parts[2])
            if vol is None:
                raise Problem(404, "network volume not found")
            return 200, dict(vol)
        raise Problem(404, "resource not found")

    def _endpoint(self, endpoint_id: str) -> dict[str, Any]:
        ep = self.endpoints.get(endpoint_id)
        if ep is None:
            raise Problem(404, "endpoint not found")
        return ep

    def _validate(self, schema_name: str, body: Any) -> None:
        if body is None:
            raise Problem(400, "request body is required")
        errors = schema_errors(self.doc, schema_name, body)
        if errors:
            raise Problem(422, "Request validation failed.", errors)

    def _check_cuda(self, gpu: dict[str, Any] | None) -> None:
        if gpu and gpu.get("minCudaVersion") and gpu.get("allowedCudaVersions"):
            raise Problem(400, "gpu.allowedCudaVersions and gpu.minCudaVersion are mutually exclusive")

    def _check_volumes(self, volumes: list[str] | None) -> None:
        for vid in volumes or []:
            if vid not in self.volumes:
                raise Problem(400, f"network volume {vid} does not exist")

    # ------------------------------------------------------------------ operations
    def create(self, body: Any) -> dict[str, Any]:
        self._validate("CreateEndpointRequest", body)
        if ("gpu" in body) == ("cpu" in body):
            raise Problem(400, "exactly one of gpu or cpu is required")
        if "templateId" in body:
            raise Problem(404, "template not found")  # this stand-in keeps no templates
        self._check_cuda(body.get("gpu"))
        self._check_volumes(body.get("networkVolumes"))
        eid = secrets.token_hex(4)
        base = f"https://api.runpod.ai/v2/{eid}"
        workers = {"min": 0, "max": 3, "idleTimeout": 10, **body.get("workers", {})}
        ep: dict[str, Any] = {
            "id": eid, "name": body["name"], "type": body["type"],
            "requestUrls": {"run": f"{base}/run", "runSync": f"{base}/runsync", "status": f"{base}/status/{{job_id}}",
                            "stream": f"{base}/stream/{{job_id}}", "cancel": f"{base}/cancel/{{job_id}}",
                            "retry": f"{base}/retry/{{job_id}}", "purgeQueue": f"{base}/purge-queue",
                            "health": f"{base}/health"},
            "image": body["image"], "args": body.get("args", ""), "disk": body.get("disk", 20),
            "ports": body.get("ports", []), "env": dict(body.get("env", {})), "registry": body.get("registry"),
            "workers": workers, "scaling": body["scaling"], "dataCenterIds": body.get("dataCenterIds", []),
            "networkVolumes": body.get("networkVolumes", []), "timeout": body.get("timeout", 300000),
            "flashboot": body.get("flashboot", "OFF"), "createdAt": _now(),
        }
        if "gpu" in body:
            g = body["gpu"]
            ep["gpu"] = {"pools": g["pools"], "count": g.get("count", 1),
                         "allowedCudaVersions": g.get("allowedCudaVersions", []),
                         "minCudaVersion": g.get("minCudaVersion")}
            if "excludedTypes" in g:
                ep["gpu"]["excludedTypes"] = g["excludedTypes"]
        else:
            ep["cpu"] = body["cpu"]
        self.endpoints[eid] = ep
        self.releases[eid] = []
        self.versions[eid] = 0
        self._release(ep, {path: None for path in RELEASE_FIELDS})
        return copy.deepcopy(ep)

    def update(self, ep: dict[str, Any], body: Any) -> dict[str, Any]:
        self._validate("UpdateEndpointRequest", body)
        if "cpu" in body and "gpu" in body:
            raise Problem(400, "gpu and cpu cannot both be given")
        if "gpu" in body and "gpu" not in ep:
            raise Problem(400, "gpu on a CPU endpoint: the compute family cannot change")
        if "cpu" in body and "cpu" not in ep:
            raise Problem(400, "cpu on a GPU endpoint: the compute family cannot change")
        self._check_cuda(body.get("gpu"))
        self._check_volumes(body.get("networkVolumes"))
        if "templateId" in body:
            raise Problem(404, "template not found")
        before = {path: copy.deepcopy(_get(ep, path)) for path in RELEASE_FIELDS}
        for key in ("image", "args", "disk", "ports", "registry", "name", "dataCenterIds", "networkVolumes",
                    "timeout", "flashboot", "scaling", "cpu"):
            if key in body:
                ep[key] = copy.deepcopy(body[key])
        if "env" in body:
            ep["env"] = dict(body["env"])  # replaces the endpoint's env
        if "workers" in body:
            ep["workers"] = {**ep["workers"], **body["workers"]}
        if "gpu" in body:
            g, cur = body["gpu"], ep["gpu"]
            if "pools" in g:
                cur["pools"] = list(g["pools"])
                if "excludedTypes" in g:
                    cur["excludedTypes"] = list(g["excludedTypes"])
                else:
                    cur.pop("excludedTypes", None)
            if "count" in g:
                cur["count"] = g["count"]
            if "allowedCudaVersions" in g:
                cur["allowedCudaVersions"] = list(g["allowedCudaVersions"])
            if "minCudaVersion" in g:
                cur["minCudaVersion"] = g["minCudaVersion"] or None
        self._release(ep, before)
        return copy.deepcopy(ep)

    def _release(self, ep: dict[str, Any], before: dict[tuple[str, ...], Any]) -> None:
        diff = [{"field": name, "old": before[path], "new": copy.deepcopy(_get(ep, path))}
                for path, name in RELEASE_FIELDS.items() if before[path] != _get(ep, path)]
        if not diff:
            return
        eid = ep["id"]
        self.versions[eid] += 1
        self.releases[eid].append({"id": f"rel_{secrets.token_hex(4)}", "version": self.versions[eid],
                                   "source": "MANUAL", "buildId": None, "createdByUserId": "user_standin",
                                   "workerCount": 0, "createdAt": _now(), "diff": diff})

    def release_list(self, ep: dict[str, Any]) -> dict[str, Any]:
        eid = ep["id"]
        total = int(ep["workers"].get("min", 0))
        releases = [dict(r, workerCount=total if r["version"] == self.versions[eid] else 0)
                    for r in reversed(self.releases[eid])]
        return {"endpointVersion": self.versions[eid],
                "rollout": {"inProgress": False, "workersOnLatest": total, "workersTotal": total,
                            "percentOnLatest": 100 if total else 0},
                "releases": copy.deepcopy(releases)}
