"""Benchmark: workflow analysis and workflow locking.

    python bench/analyze.py

1. Analyze every template workflow of the installed comfyui-workflow-templates packages
   against ComfyUI 0.3.75's scanned classes (target: < 2 s warm, for all of them).
2. Lock a 15-node, 6-model workflow from local git and HTTP servers (real `git http-backend`,
   real downloads), cold (empty comfyver cache) vs warm (same cache, a new version id).
Figures are measured side by side in one run and printed with their ratios.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from comfyver.lock import analyze, nodemap  # noqa: E402

from tests.support import comfyui as comfyui_support  # noqa: E402
from tests.support.gitserver import GitServer, make_repo  # noqa: E402
from tests.support.httpserver import HTTPServer  # noqa: E402

TEMPLATE_PACKAGES = ("comfyui_workflow_templates_core", "comfyui_workflow_templates_media_api",
                     "comfyui_workflow_templates_media_image", "comfyui_workflow_templates_media_other",
                     "comfyui_workflow_templates_media_video")


def templates() -> list[Path]:
    out = []
    for pkg in TEMPLATE_PACKAGES:
        spec = importlib.util.find_spec(pkg)
        if spec and spec.submodule_search_locations:
            out += sorted(p for p in (Path(spec.submodule_search_locations[0]) / "templates").glob("*.json")
                          if not p.name.startswith("index"))
    return out


def bench_templates() -> None:
    files = templates()
    t0 = time.perf_counter()
    core = nodemap.scan_tree(comfyui_support.source(), core=True)
    t_scan = time.perf_counter() - t0

    def once() -> float:
        t = time.perf_counter()
        mgr = nodemap.manager()
        nm = nodemap.NodeMap(core_classes=core, manager_data=mgr)
        for f in files:
            analyze.report([analyze.load(f)], nm, core, mgr)
        return time.perf_counter() - t

    nodemap.manager.cache_clear()
    cold = once()  # includes reading ComfyUI-Manager's data
    warm = min(once() for _ in range(3))
    print(f"templates: {len(files)} workflows")
    print(f"  core scan (ComfyUI 0.3.75 source, {len(core)} classes): {t_scan:.3f} s (cached per commit afterwards)")
    print(f"  analyze all, cold (+ manager data load): {cold:.3f} s")
    print(f"  analyze all, warm:                        {warm:.3f} s   target < 2 s: {'ok' if warm < 2 else 'MISSED'}")
    print(f"  cold/warm ratio: {cold / warm:.1f}x; per workflow warm: {warm / len(files) * 1000:.2f} ms")


def bench_lock() -> None:
    from comfyver.lock.pipeline import lock_version

    with tempfile.TemporaryDirectory(prefix="comfyver-bench-") as tmp:
        tmp = Path(tmp)
        git_srv, http_root = GitServer(tmp / "git"), tmp / "files"
        http_root.mkdir()
        http_srv = HTTPServer(http_root)
        http_srv.files_root = http_root
        try:
            core_files = {"nodes.py": "class A: pass\nNODE_CLASS_MAPPINGS = {'KSampler': A, 'SaveImage': A}\n",
                          "requirements.txt": "numpy\n"}
            make_repo(tmp / "core", core_files, "core", tag="v0.3.75")
            core_url = git_srv.publish(tmp / "core", "ComfyUI")
            ext_map, nodes = {}, []
            for i in range(15):
                cls = f"BenchNode{i}"
                loader = (f"import folder_paths\nclass L:\n    @classmethod\n    def INPUT_TYPES(s):\n"
                          f"        return {{'required': {{'m': (folder_paths.get_filename_list('bench{i % 6}'),)}}}}\n"
                          f"NODE_CLASS_MAPPINGS = {{'{cls}': L}}\n")
                body = {"__init__.py": loader, **{f"lib/mod{j}.py": f"X = {j}\n" * 50 for j in range(20)}}
                make_repo(tmp / f"pack{i}", body, "p", tag="v1.0.0")
                url = git_srv.publish(tmp / f"pack{i}", f"ComfyUI-Bench{i}")
                ext_map[url] = [[cls], {"title_aux": cls}]
                value = [f"model{i}.safetensors"] if i < 6 else []
                nodes.append({"id": i + 1, "type": cls, "mode": 0, "widgets_values": value})
            sources = []
            for i in range(6):
                data = hashlib.sha256(str(i).encode()).digest() * (64 * 1024)  # 2 MiB each
                (http_root / f"model{i}.safetensors").write_bytes(data)
                sources.append({"name": f"model{i}.safetensors", "url": f"{http_srv.url}/model{i}.safetensors",
                                "directory": f"bench{i}"})
            nodes.append({"id": 99, "type": "KSampler", "mode": 0, "widgets_values": []})
            wf = tmp / "bench.json"
            wf.write_text(json.dumps({"nodes": nodes, "links": [], "models": sources}))
            mgr = tmp / "manager"
            mgr.mkdir()
            (mgr / "extension-node-map.json").write_text(json.dumps(ext_map))
            proj = tmp / "proj"
            (proj / "versions").mkdir(parents=True)
            (proj / "pyproject.toml").write_text("[project]\nname = 'bench'\n")
            os.environ.update(COMFYVER_MANAGER_DATA=str(mgr), COMFYVER_CACHE=str(tmp / "cache"))
            nodemap.manager.cache_clear()

            def lock(vid: str) -> float:
                t = time.perf_counter()
                out = lock_version(proj, vid, [str(wf)], comfyui_url=core_url, comfyui_ref="v0.3.75",
                                   python=False, registry=False, progress=False)
                assert len(out["nodes"]) == 15 and len(out["models"]) == 6, out
                return time.perf_counter() - t

            cold = lock("bench-cold")
            warm = lock("bench-warm")
            print("lock: 15 node packs (git over smart HTTP), 6 models (2 MiB each over HTTP), no Python lock")
            print(f"  cold (empty cache): {cold:.3f} s")
            print(f"  warm (same cache, new version id): {warm:.3f} s")
            print(f"  cold/warm ratio: {cold / warm:.1f}x")
        finally:
            git_srv.close()
            http_srv.close()


if __name__ == "__main__":
    bench_templates()
    bench_lock()
