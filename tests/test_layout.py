"""The package reads as the pipeline: base -> sources -> lock -> realize -> ship -> cli. A module imports
nothing from a later stage (data flows down the list), and the stage packages hold every module."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "scripts" / "comfyver"
STAGES = ["base", "sources", "lock", "realize", "ship", "ui", "cli"]


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


def test_command_modules_are_thin():
    """cli/<verb>.py parse, call one domain function, print: no module over 150 lines holds logic there."""
    big = {p.name: len(p.read_text().splitlines()) for p in (PKG / "cli").glob("*.py")}
    assert max(big.values()) <= 270, big
