"""`comfyver ui <id> --endpoint ID | --local URL`: the version's ComfyUI page here, its jobs on the endpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from comfyver.base import project
from comfyver.cli.args import verb
from comfyver.realize import realize
from comfyver.ship import jobclient


def register(sub) -> None:
    p = verb(sub, "ui", run, help="ComfyUI's page for a version here; Queue runs on the endpoint",
             description="Realize the version without its models, start its ComfyUI on the CPU on 127.0.0.1 and "
                         "print the page's address. The page shows exactly the version's nodes and, in every model "
                         "list, its models; Queue validates the workflow here and runs it on the endpoint (the "
                         "version id and lock digest go with it), with progress and outputs back in the page. "
                         "Nothing runs on this machine. The API key stays in this process (RUNPOD_API_KEY). The page "
                         "answers only at its own address and to a browser that opened the printed one (it carries "
                         "a key made at each start). "
                         "Example: comfyver ui sdxl --endpoint abc123xyz")
    p.add_argument("id", help="version id")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--endpoint", metavar="ID", help="RunPod serverless endpoint id")
    target.add_argument("--local", metavar="URL", help="a handler served with the SDK's --rp_serve_api")
    p.add_argument("--port", type=int, default=8188, help="the page's port on 127.0.0.1 (default %(default)s)")
    p.add_argument("--into", type=Path, metavar="DIR", help="realized folder (default <cache>/ui/<id>)")
    p.add_argument("--system-site-packages", action="store_true",
                   help="let the realized venv see this Python's packages (as `realize --system-site-packages`)")


def run(args) -> int:
    from comfyver.ui.serve import Page

    backend = jobclient.RunPodBackend(args.endpoint) if args.endpoint else jobclient.LocalBackend(args.local)
    page = Page(project.find_root(), args.id, backend, into=args.into, port=args.port,
                system_site_packages=args.system_site_packages, reporter=realize.Reporter(quiet=args.json))
    if args.json:
        print(json.dumps({"id": args.id, "url": page.address, "origin": page.url, "target": backend.where,
                          "log": str(page.log)}), flush=True)
    else:
        print(f"ComfyUI for version {args.id}: {page.address}\n  (open this address: it carries this start's key; "
              f"Queue runs on {backend.where}; Ctrl-C stops)", flush=True)
    sys.stdout.flush()
    return page.wait()
