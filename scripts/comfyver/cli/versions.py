"""Version verbs: new, add-node, add-model, clone, delete, list, show, diff, update, recheck."""

from __future__ import annotations

import json
import sys

from rich.table import Table

from comfyver.base import lockfile, project, ui
from comfyver.base.errors import UsageError
from comfyver.cli.args import verb
from comfyver.lock import versions
from comfyver.sources import resolve

T = ui.text  # names, ids, URLs and errors from locks, servers and the command line: never markup


class _Out:
    """Resolve the console at print time (stdout may be swapped, e.g. by tests)."""

    def print(self, *a, **k):
        ui.console().print(*a, **k)


out = _Out()


def _short(x: str | None) -> str:
    if not x:
        return "-"
    return x[:12] if len(x) == 40 or len(x) == 64 else x


def register(sub) -> None:
    def add(name, func, help, desc):
        return verb(sub, name, func, help=help, description=desc)  # every verb: --json

    def jobs(p):
        p.add_argument("--jobs", "-j", type=int, default=resolve.DEFAULT_JOBS, help="parallel resolutions (default %(default)s)")

    p = add("new", cmd_new, "create a version pinned to a ComfyUI ref",
            "Create versions/<id>/version.json with ComfyUI at REF (latest = newest release tag). "
            "Example: comfyver new sdxl --comfyui v0.3.75")
    p.add_argument("id")
    p.add_argument("--comfyui", default="latest", metavar="REF", help="latest | nightly | tag | branch | commit")
    p.add_argument("--comfyui-url", default=versions.DEFAULT_COMFYUI_URL, metavar="URL")
    jobs(p)

    p = add("add-node", cmd_add_node, "add a custom node (git URL or Comfy Registry id)",
            "Pin a custom node. Examples: comfyver add-node sdxl https://github.com/kijai/ComfyUI-KJNodes@latest ; "
            "comfyver add-node sdxl rgthree-comfy@1.0.2")
    p.add_argument("id")
    p.add_argument("spec", metavar="<git-url|registry-id>[@ref]")
    p.add_argument("--name", help="folder name under custom_nodes/ (default: from the URL or id)")
    p.add_argument("--submodules", action="store_true", help="check out git submodules too")
    p.add_argument("--replace", action="store_true", help="replace a node of the same name")

    p = add("add-model", cmd_add_model, "add a model file by source",
            "Pin a model at models/<folder>/<name>. Sources: hf://owner/repo[@rev]/path, civitai://<versionId>, "
            "civitai://sha256/<hex>, https://, http://, file://, gs://bucket/path. "
            "Example: comfyver add-model sdxl checkpoints/sd_xl_base_1.0.safetensors "
            "hf://stabilityai/stable-diffusion-xl-base-1.0/sd_xl_base_1.0.safetensors")
    p.add_argument("id")
    p.add_argument("path", metavar="<folder>/<name>")
    p.add_argument("source")
    p.add_argument("--sha256", help="expected sha256 (hex); resolution fails if the source differs")
    p.add_argument("--replace", action="store_true")

    p = add("clone", cmd_clone, "copy a version under a new id", "Example: comfyver clone sdxl sdxl-next")
    p.add_argument("src")
    p.add_argument("dst")

    p = add("delete", cmd_delete, "delete a version folder", "Example: comfyver delete sdxl-old --yes")
    p.add_argument("id")
    p.add_argument("--yes", action="store_true", help="do not ask")

    p = add("list", cmd_list, "list versions", "Example: comfyver list --json")

    p = add("show", cmd_show, "show a version's inputs", "Example: comfyver show sdxl")
    p.add_argument("id")

    p = add("diff", cmd_diff, "compare two versions",
            "Core rev, nodes added/removed/changed/moved, models, Python packages. Example: comfyver diff sdxl sdxl-next")
    p.add_argument("a")
    p.add_argument("b")

    p = add("update", cmd_update, "re-resolve inputs' originals",
            "Re-resolve what each input asked for (e.g. ref latest) and write what it resolves to now. "
            "Inputs: comfyui, node names, model paths; none = all. Example: comfyver update sdxl comfyui-kjnodes")
    p.add_argument("id")
    p.add_argument("inputs", nargs="*")
    jobs(p)

    p = add("recheck", cmd_recheck, "re-fetch locked inputs by their pins and re-hash them",
            "Fetch every locked input by its rev / URL alone and recompute its hash: finds edited locks, deleted "
            "commits, changed or vanished files. Exit 1 on any problem. Example: comfyver recheck sdxl")
    p.add_argument("id")
    p.add_argument("inputs", nargs="*")
    jobs(p)


def _root():
    return project.find_root()


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def cmd_new(args) -> int:
    data = versions.create(_root(), args.id, args.comfyui, args.comfyui_url, jobs=args.jobs)
    if args.json:
        _print_json(data)
    else:
        lk = data["comfyui"]["locked"]
        out.print(f"created version [bold]{T(args.id)}[/]: "
                  + T(f"ComfyUI {lk.get('ref') or ''} @ {lk['rev'][:12]}  {lk['hash']}"))
    return 0


def cmd_add_node(args) -> int:
    name, entry = versions.add_node(_root(), args.id, args.spec, args.name, args.submodules, args.replace)
    if args.json:
        _print_json({"name": name, **entry})
    else:
        lk = entry["locked"]
        out.print(f"{T(args.id)}: node [bold]{T(name)}[/] "
                  + T(f"-> {_short(lk['rev'] if lk['type'] == 'git' else lk.get('version'))}  {lk['hash']}"))
    return 0


def cmd_add_model(args) -> int:
    entry = versions.add_model(_root(), args.id, args.path, args.source, args.sha256, args.replace)
    if args.json:
        _print_json({"path": args.path, **entry})
    else:
        lk = entry["locked"]
        out.print(f"{T(args.id)}: model [bold]{T(args.path)}[/] sha256 {T(lk['sha256'])} ({lk['size']:,} bytes)")
    return 0


def cmd_clone(args) -> int:
    data = versions.clone(_root(), args.src, args.dst)
    if args.json:
        _print_json({"from": args.src, **data})
    else:
        out.print(f"cloned {T(args.src)} -> {T(args.dst)}")
    return 0


def cmd_delete(args) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"refusing to delete version {args.id!r} without --yes (no terminal to ask)")
        print(f"delete versions/{args.id}? [y/N] ", end="", file=sys.stderr, flush=True)  # stdout is for --json
        if input().strip().lower() not in ("y", "yes"):
            if args.json:
                _print_json({"id": args.id, "deleted": False})
            return 1
    versions.delete(_root(), args.id)
    if args.json:
        _print_json({"id": args.id, "deleted": True})
    else:
        out.print(f"deleted {T(args.id)}")
    return 0


def _summary(root, vid) -> dict:
    try:
        d = versions.load(root, vid)
    except lockfile.LockError as exc:
        return {"id": vid, "error": exc.message}
    return {"id": vid, "comfyui": d["comfyui"]["locked"]["rev"], "comfyui_ref": d["comfyui"]["locked"].get("ref"),
            "nodes": len(d["nodes"]), "models": len(d["models"]), "workflows": len(d["workflows"]),
            "model_bytes": sum(m["locked"]["size"] for m in d["models"].values())}


def cmd_list(args) -> int:
    root = _root()
    rows = [_summary(root, v) for v in project.version_ids(root)]
    if args.json:
        _print_json(rows)
        return 1 if any("error" in r for r in rows) else 0
    t = Table("id", "ComfyUI", "nodes", "models", "model size", "workflows")
    for r in rows:
        if "error" in r:
            t.add_row(T(r["id"]), f"[red]invalid: {T(r['error'].splitlines()[-1])}[/]", "", "", "", "")
        else:
            t.add_row(T(r["id"]), T(f"{r['comfyui_ref'] or ''} {r['comfyui'][:12]}"), str(r["nodes"]), str(r["models"]),
                      f"{r['model_bytes'] / 1e9:.2f} GB", str(r["workflows"]))
    out.print(t if rows else "no versions yet: `comfyver new <id>` creates one")
    return 1 if any("error" in r for r in rows) else 0


def cmd_show(args) -> int:
    d = versions.load(_root(), args.id)
    if args.json:
        _print_json(d)
        return 0
    c = d["comfyui"]
    out.print(f"[bold]{T(d['id'])}[/]  python {T(d['python']['requires'])} torch {T(d['python']['torch'])}")
    out.print(T(f"ComfyUI  {c['original'].get('ref', '')} -> {c['locked']['rev']}  {c['locked']['hash']}  "
                f"({c['locked']['url']})"))
    t = Table("node", "asked", "locked", "hash", title="custom nodes")
    for name, n in d["nodes"].items():
        o, lk = n["original"], n["locked"]
        asked = (f"local {o['path']} (as it was on disk)" if o["type"] == "local"
                 else f"{o.get('url', o.get('id'))} @ {o.get('ref', o.get('version', ''))}")
        t.add_row(T(name), T(asked), T(_short(lk["rev"] if lk["type"] == "git" else lk.get("version"))), T(lk["hash"]))
    out.print(t)
    t = Table("model", "source", "sha256", "size", title="models")
    for path, m in d["models"].items():
        t.add_row(T(path), T(m["original"]["url"]), T(m["locked"]["sha256"][:16]), f"{m['locked']['size']:,}")
    out.print(t)
    if d["workflows"]:
        out.print("workflows: " + T(", ".join(d["workflows"])))
    return 0


def cmd_diff(args) -> int:
    res = versions.diff(_root(), args.a, args.b)
    if args.json:
        _print_json(res)
        return 0
    t = Table("what", "name", "change", title=T(f"{args.a} -> {args.b}"))
    if res["comfyui"]:
        t.add_row("comfyui", "", T(f"{_short(res['comfyui']['from'])} -> {_short(res['comfyui']['to'])}"))
    for sect in ("nodes", "models", "python"):
        s = res[sect]
        for k in s["added"]:
            t.add_row(sect, T(k), "[green]added[/]")
        for k in s["removed"]:
            t.add_row(sect, T(k), "[red]removed[/]")
        for k, ch in s["changed"].items():
            t.add_row(sect, T(k), T(f"{_short(ch['from'])} -> {_short(ch['to'])}"))
        for k, ch in s.get("moved", {}).items():
            t.add_row(sect, T(k), T(f"moved {ch['from']} -> {ch['to']}"))
        if "profile" in s:
            t.add_row(sect, "profile", T(f"{s['profile']['from']} -> {s['profile']['to']}"))
    out.print(t if t.row_count else T(f"{args.a} and {args.b} pin the same inputs"))
    return 0


def cmd_update(args) -> int:
    changes = versions.update(_root(), args.id, args.inputs or None, jobs=args.jobs)
    if args.json:
        _print_json({"id": args.id, "changed": changes})
    elif changes:
        for k, ch in changes.items():
            out.print(T(f"{k}: {_short(ch['from'])} -> {_short(ch['to'])}"))
    else:
        out.print(f"{T(args.id)}: every input still resolves to its locked value")
    return 0


def cmd_recheck(args) -> int:
    problems = versions.recheck(_root(), args.id, args.inputs or None, jobs=args.jobs)
    if args.json:
        _print_json({"id": args.id, "ok": not problems, "problems": problems})
    elif problems:
        t = Table("input", "problem", title=f"{T(args.id)}: {len(problems)} problem(s)")
        for k, v in sorted(problems.items()):
            t.add_row(T(k), T(v))
        out.print(t)
    else:
        out.print(f"{T(args.id)}: every locked input fetched and matched its hash")
    return 1 if problems else 0
