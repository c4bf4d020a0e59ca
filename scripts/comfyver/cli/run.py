"""`comfyver run`: submit a workflow to a RunPod endpoint / local handler, or start a realized ComfyUI.

- `comfyver run --endpoint ID WORKFLOW ...` / `comfyver run --local URL WORKFLOW ...`: submit a job,
  show its progress, cancel on Ctrl-C, save every output into --out.
- `comfyver run <id> [--into DIR] [-- comfyui args]`: start the realized ComfyUI of a version
  (comfyver.realize.localrun).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from comfyver.base import project, web
from comfyver.base.errors import UsageError
from comfyver.cli.args import verb
from comfyver.ship import jobclient


def register(sub) -> None:
    p = verb(sub, "run", run, help="submit a workflow to a RunPod endpoint or local handler, or start a version's ComfyUI",
        description="Submit WORKFLOW (API or UI JSON) as a job, follow its progress, save every output into "
                    "--out. With --endpoint the job goes to RunPod (needs $RUNPOD_API_KEY); with --local to "
                    "`python -m handler --rp_serve_api`. Exit 0 completed, 1 failed, 124 timed out, "
                    "130 cancelled (Ctrl-C cancels the job). Without --endpoint/--local, start the realized "
                    "ComfyUI of version ID. Examples: comfyver run --endpoint abc123 workflows/sdxl.json "
                    "--set 6.inputs.text='a red fox' --out out/ ; comfyver run sdxl-base -- --port 8190")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--endpoint", metavar="ID", help="RunPod serverless endpoint id")
    target.add_argument("--local", metavar="URL", help="local handler API, e.g. http://127.0.0.1:8000")
    p.add_argument("version_or_workflow", metavar="WORKFLOW|ID", nargs="?",
                   help="workflow JSON file (with --endpoint/--local), else the version id to start")
    p.add_argument("--image", action="append", default=[], type=Path, metavar="FILE",
                   help="input image sent with the job (repeatable); nodes refer to it by file name")
    p.add_argument("--set", action="append", default=[], metavar="NODE.inputs.FIELD=VALUE",
                   help="override an input (VALUE is JSON if it parses, else text; repeatable)")
    p.add_argument("--out", type=Path, default=Path("outputs"), metavar="DIR", help="where outputs go (default ./outputs)")
    p.add_argument("--version", dest="workflow_version", metavar="ID",
                   help="the version the job is for: sent as version_id (the worker refuses a job for another "
                        "version); WORKFLOW may then be a name in versions/<ID>/workflows/")
    p.add_argument("--output-mode", choices=["gcs", "s3", "base64"], help="how the handler returns outputs")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="cancel the job if not done by then")
    p.add_argument("--poll", type=float, default=1.0, metavar="SECONDS", help=argparse.SUPPRESS)
    p.add_argument("--into", type=Path, default=None, metavar="DIR", help="(start form) realized folder to run")
    p.add_argument("--at", type=Path, default=None, metavar="PATH",
                   help="(start form, no ID) run the version `comfyver switch` put at PATH; a later switch restarts "
                        "ComfyUI on the new version")
    p.set_defaults(comfy_args=[])
    # this subparser's own parse_known_args (argparse calls it for the `run` words): an override of one instance
    p.parse_known_args = _after_dashdash(p.parse_known_args)  # type: ignore[method-assign]


def _after_dashdash(parse):
    """Everything after the first `--` goes to ComfyUI (args.comfy_args), wherever the options stand."""

    def parse_known_args(args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        tail = []
        if "--" in args:
            i = args.index("--")
            args, tail = args[:i], args[i + 1:]
        ns, extra = parse(args, namespace)
        ns.comfy_args = tail
        return ns, extra

    return parse_known_args


def run(args) -> int:
    comfy_args = args.comfy_args
    if args.at is not None:
        if args.endpoint or args.local or args.into or args.version_or_workflow:
            raise UsageError("--at PATH runs the version switched there: no ID, --into, --endpoint or --local with it",
                             hint="comfyver run --at /workspace/ComfyUI -- --listen")
        from comfyver.realize import switch

        return switch.run_at(project.find_root(), args.at, comfy_args)
    if not args.version_or_workflow:
        raise UsageError("give a WORKFLOW (with --endpoint/--local) or the version ID to start",
                         hint="comfyver run sdxl-base, or comfyver run --local http://127.0.0.1:8000 flow.json")
    if not (args.endpoint or args.local):
        from comfyver.realize.localrun import run_local

        return run_local(project.find_root(), args.version_or_workflow, args.into, comfy_args)
    if comfy_args:
        raise UsageError(f"unexpected arguments {' '.join(comfy_args)!r}", hint="ComfyUI arguments only go with `run <id>`")
    job_input = jobclient.build_input(jobclient.workflow_path(args.version_or_workflow, args.workflow_version), args.image,
                                      args.set, args.output_mode, args.workflow_version)
    backend = jobclient.RunPodBackend(args.endpoint) if args.endpoint else jobclient.LocalBackend(args.local)
    if args.json:
        result = jobclient.run_job(backend, job_input, args.out, timeout=args.timeout, poll=args.poll)
        print(json.dumps(result.as_json(), indent=2))
        return result.exit_code
    return _run_human(backend, job_input, args)


def _run_human(backend, job_input: dict, args) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from comfyver.base import ui

    console = ui.console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[note]}"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(f"submitting to {ui.text(backend.where)}", total=None, note="")

        def on_submit(job_id):
            # the id, to cancel later; it and the worker's progress text are printed as they are, never as markup
            console.print(f"submitted job {ui.text(job_id)} to {ui.text(backend.where)}")
            bar.update(task, description=f"job {ui.text(job_id)}")

        def on_progress(p: jobclient.Progress):
            bar.update(task, completed=p.completed or 0, total=p.total, note=ui.text(web.redact(p.text)[:60]))

        result = jobclient.run_job(backend, job_input, args.out, timeout=args.timeout, poll=args.poll,
                                   on_submit=on_submit, on_progress=on_progress)
    print(f"job {result.job_id}: {result.status} in {result.elapsed:.1f} s")
    for f in result.files:
        print(f"  {f['kind']:<6} node {f['node_id']}: {f['path']} ({f['bytes']} bytes)")
    if result.error:
        print(f"error: {jobclient.describe_error(result.error)}", file=sys.stderr)
    return result.exit_code
