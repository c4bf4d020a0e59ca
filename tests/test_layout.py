"""The package reads as the pipeline: base -> sources -> lock -> realize -> ship -> cli. A module imports
nothing from a later stage (data flows down the list), and the stage packages hold every module."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "scripts" / "comfyver"
HANDLER = Path(__file__).resolve().parents[1] / "handler"
STAGES = ["base", "sources", "lock", "realize", "ship", "ui", "cli"]
# inside a stage, lowest first: a module imports only modules earlier in its list (no circle can form)
LOCK_ORDER = ["__init__", "probe_main", "nodescan", "placement", "versions", "nodesource", "probe", "submodules", "fit",
              "pylock", "proofenv", "installsteps", "nodemap", "analyze", "proof", "importers", "install", "installpython",
              "check", "pipeline"]
HANDLER_ORDER = ["__init__", "errors", "settings", "outputs", "comfy_client", "workflow", "fetch", "storage",
                 "hfcache", "jobmodels", "comfy_process", "preflight", "worker", "__main__"]
# what the RunPod worker may use of comfyver: the base modules, sources (the model store's verified hashing, the
# lock's Hugging Face models) and realize (its run-time realize, ComfyUI's state)
HANDLER_MAY_IMPORT = ("comfyver.base", "comfyver.sources", "comfyver.realize")


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("comfyver.")}


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def test_every_module_lives_in_a_stage_package():
    loose = sorted(p.name for p in PKG.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert loose == []
    for stage in STAGES:
        doc = ast.get_docstring(ast.parse((PKG / stage / "__init__.py").read_text()))
        assert doc, f"comfyver/{stage}/__init__.py says what the stage owns and may import"


def test_no_module_imports_from_a_later_stage():
    wrong = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if len(rel.parts) < 2:
            continue
        here = STAGES.index(rel.parts[0])
        for mod in imported_modules(path):
            there = stage_of(mod)
            if there is not None and STAGES.index(there) > here:
                wrong.append(f"{rel} imports {mod} ({there} comes after {rel.parts[0]})")
    assert wrong == []


def test_the_direction_check_catches_a_violation(tmp_path):
    """The check itself can fail: a base module importing the lock stage is named."""
    bad = tmp_path / "x.py"
    bad.write_text("from comfyver.lock import versions\nfrom comfyver.base import project\n")
    assert {stage_of(m) for m in imported_modules(bad)} >= {"lock", "base"}
    assert STAGES.index("lock") > STAGES.index("base")


def order_violations(pkg_dir: Path, pkg: str, order: list[str]) -> list[str]:
    """Each module of the package `pkg` (folder `pkg_dir`) against `order`: a module missing from the list,
    or one importing a module of the package that is not earlier in it, is named."""
    wrong = []
    for path in sorted(pkg_dir.glob("*.py")):
        me = path.stem
        if me not in order:
            wrong.append(f"{pkg}/{path.name} is not in the package's order")
            continue
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                mods = [n.module, *(f"{n.module}.{a.name}" for a in n.names)]
            elif isinstance(n, ast.Import):
                mods = [a.name for a in n.names]
            else:
                continue
            for m in mods:
                parts = m.split(".")
                depth = len(pkg.split("."))
                if parts[:depth] != pkg.split(".") or len(parts) <= depth:
                    continue
                there = parts[depth]
                if there == me or not (pkg_dir / f"{there}.py").is_file():
                    continue
                if there not in order or order.index(there) > order.index(me):
                    wrong.append(f"{pkg}/{path.name} imports {m} ({there} comes after {me})")
    return sorted(set(wrong))


def test_lock_and_handler_modules_import_in_their_order():
    """No circle inside the lock stage or the handler: each imports only modules earlier in its order."""
    assert order_violations(PKG / "lock", "comfyver.lock", LOCK_ORDER) == []
    assert order_violations(HANDLER, "handler", HANDLER_ORDER) == []
    outside = sorted(f"handler/{p.name} imports {m}" for p in HANDLER.glob("*.py") for m in imported_modules(p)
                     if not any(m == ok or m.startswith(ok + ".") for ok in HANDLER_MAY_IMPORT))
    assert outside == []


def test_the_order_check_catches_a_circle(tmp_path):
    """The check itself can fail: a lower module importing a higher one (the old nodemap -> analyze) is named,
    and so is a module the order does not list."""
    pkg = tmp_path / "lock"
    pkg.mkdir()
    (pkg / "nodemap.py").write_text("from comfyver.lock.analyze import VIRTUAL_CLASSES\n")
    (pkg / "analyze.py").write_text("from comfyver.lock import nodemap\n")
    (pkg / "extra.py").write_text("")
    wrong = order_violations(pkg, "comfyver.lock", ["nodemap", "analyze"])
    assert wrong == ["comfyver.lock/extra.py is not in the package's order",
                     "comfyver.lock/nodemap.py imports comfyver.lock.analyze (analyze comes after nodemap)",
                     "comfyver.lock/nodemap.py imports comfyver.lock.analyze.VIRTUAL_CLASSES "
                     "(analyze comes after nodemap)"]
    assert order_violations(pkg, "comfyver.lock", ["extra", "analyze", "nodemap"]) == [
        "comfyver.lock/analyze.py imports comfyver.lock.nodemap (nodemap comes after analyze)"]  # a circle: no order
    (pkg / "nodemap.py").write_text("VIRTUAL_CLASSES = set()\n")  # the circle broken as lock/ breaks it
    assert order_violations(pkg, "comfyver.lock", ["extra", "nodemap", "analyze"]) == []


def test_command_modules_are_thin():
    """cli/<verb>.py parse, call one domain function, print: no module over 150 lines holds logic there."""
    big = {p.name: len(p.read_text().splitlines()) for p in (PKG / "cli").glob("*.py")}
    assert max(big.values()) <= 270, big
