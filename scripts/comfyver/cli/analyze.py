"""`comfyver analyze WORKFLOW...`: which node packs and models workflows need."""

from __future__ import annotations

import json

from comfyver.cli.args import verb
from comfyver.lock import pipeline


def register(sub) -> None:
    p = verb(sub, "analyze", run, help="list the node packs and models that workflows need",
                       description="Read ComfyUI workflows (UI or API format) and report the node packs, "
                                   "built-in classes and model files they need, what could not be resolved and "
                                   "what is ambiguous. Example: comfyver analyze flux.json --version flux-dev --json")
    p.add_argument("workflows", nargs="+", metavar="WORKFLOW", help="workflow JSON file (UI or API format)")
    p.add_argument("--version", dest="vid", metavar="ID",
                   help="judge against this version's locked core, nodes, choices and overrides")
    p.add_argument("--comfyui", metavar="DIR", help="scan a local ComfyUI checkout for its built-in classes")
    p.add_argument("--offline", action="store_true", help="do not ask the Comfy Registry about unknown classes")


def run(args) -> int:
    rep = pipeline.analyze_workflows(args.workflows, args.vid, args.comfyui, registry=not args.offline)
    bad = any(e["active"] for e in rep.unresolved.values()) or any(e["active"] for e in rep.ambiguous.values())
    if args.json:
        print(json.dumps(rep.to_json(), indent=2))
    else:
        print_human(rep)
    return 1 if bad else 0


def print_human(rep) -> None:
    from rich.table import Table

    from comfyver.base import ui

    t_ = ui.text  # every name, URL and note comes from a workflow, a registry or a node list: never markup
    con = ui.console()
    con.print(f"[bold]{len(rep.workflows)} workflow(s)[/]: {len(rep.core)} built-in classes, "
              f"{len(rep.packs)} node pack(s), {len(rep.models)} model(s)")
    if rep.packs:
        t = Table("node", "source", "version", "classes", "found by", title="node packs")
        for name, p in rep.packs.items():
            t.add_row(t_(name + ("" if p["active"] else " (inactive)")), t_(p["url"] or f"registry:{p['registry_id']}"),
                      t_(p["version"] or "latest"),
                      t_(", ".join(p["classes"][:4]) + (" ..." if len(p["classes"]) > 4 else "")), t_(p["via"]))
        con.print(t)
    if rep.models:
        t = Table("model", "source", "sha256", title="models")
        for key, m in rep.models.items():
            t.add_row(t_(key + ("" if m["active"] else " (inactive)")),
                      t_(m["url"]) if m.get("url") else "[red]unknown[/]", t_((m.get("sha256") or "")[:12]))
        con.print(t)
    if rep.unresolved:
        t = Table("class", "why", "fix", title="[red]unresolved classes[/]")
        for c, e in rep.unresolved.items():
            t.add_row(t_(c + ("" if e["active"] else " (inactive)")), t_(e["why"]),
                      t_(f"--node <git-url|registry-id> providing it, or overrides.json classes[{c!r}]"))
        con.print(t)
    if rep.ambiguous:
        t = Table("class", "candidates", "fix", title="[yellow]ambiguous classes[/]")
        for c, e in rep.ambiguous.items():
            t.add_row(t_(c), t_("\n".join(e["candidates"])), t_(f"--choose '{c}=<node>'"))
        con.print(t)
    for n in rep.notes:
        con.print(f"note: {t_(n)}")
