"""`comfyver releases <endpoint>`: an endpoint's releases (REST API v2), newest first."""

from __future__ import annotations

import json

from comfyver.cli.args import verb
from comfyver.ship import deploy, releases


def register(sub) -> None:
    p = verb(sub, "releases", run, help="list a RunPod endpoint's releases: version, lock, image, when, which is live",
             description="An endpoint's release history from RunPod's REST API v2, newest first: each release's id "
                         "and configuration version, when it was made, the version id, lock digest and image digest "
                         "that comfyver deploy recorded in it, and which release is live. Needs $RUNPOD_API_KEY. "
                         "Example: comfyver releases abc123")
    p.add_argument("endpoint", metavar="ENDPOINT", help="serverless endpoint id")


def _short(value: str | None, n: int = 12) -> str:
    return (value.removeprefix("sha256:")[:n] if value else "-")


def run(args) -> int:
    h = releases.history(deploy.RunPodV2(), args.endpoint)
    if args.json:
        print(json.dumps(h.as_json(), indent=2))
        return 0
    print(f"endpoint {h.endpoint_id} ({h.name}): {len(h.releases)} release(s), newest first")
    rows = [("", "RELEASE", "VER", "WHEN", "VERSION", "LOCK", "IMAGE", "NOTE")]
    for r in h.releases:
        s = r.state
        rows.append(("*" if r.live else "", r.id, f"v{r.version}" if r.version is not None else "-",
                     r.created_at[:19].replace("T", " "), s.version_id or "-", _short(s.lock_digest),
                     _short(s.image_digest), s.env.get(deploy.ENV_NOTE, "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    print("* live")
    return 0
