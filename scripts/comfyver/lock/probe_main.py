"""Run ComfyUI's own node loading and report what every class really registers (the probe's ground truth).

Run by comfyver.lock.probe with the version's own Python, in a scratch copy of nothing: ComfyUI's folder is
only read. It imports no comfyver module (the version's environment need not have one):

    python probe_main.py <comfyui-dir> <out.json> [<pack-dir> ...]

For each pack: loaded or not, its error, its seconds, the classes it added. For each class: every input
that lists a model folder, in declaration order, found by watching `folder_paths.get_filename_list`
(`model_inputs`: [input, folder] where an option starts with the marker; `input_folders`: input -> every
[prefix, folder] its options draw from, a loader's own prefix such as Impact's `bbox/` kept):
while the probe runs it returns marker names (`<MARK>/<folder>/x<ext>`), so a list built in a local
variable, filtered, prefixed with "None" or cached at import time still shows which folder it came from.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import traceback
from typing import Any

MARK = "__comfyver_probe__"
EXTS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx", ".sft", ".pkl", ".yaml", ".json",
        ".engine", ".pt2", ".model", ".txt", "")
CALLS: list[str] = []  # folders asked for since the last reset


def _patch_folder_paths(folder_paths: Any) -> None:  # ComfyUI's module, patched in place
    real = folder_paths.get_filename_list

    def get_filename_list(folder_name: str) -> list[str]:
        folder = folder_paths.map_legacy(folder_name) if hasattr(folder_paths, "map_legacy") else folder_name
        CALLS.append(folder)
        try:
            names = list(real(folder_name))
        except Exception:  # a folder ComfyUI does not know: the pack's input would fail at runtime
            names = []
        return names + [f"{MARK}/{folder}/x{ext}" for ext in EXTS]

    folder_paths.get_filename_list = get_filename_list


def _folder_of(options: object) -> str | None:
    for o in options if isinstance(options, (list, tuple)) else ():
        if isinstance(o, str) and o.startswith(MARK + "/"):
            return o[len(MARK) + 1:].rsplit("/", 1)[0]
    return None


def _prefixed_folders(options: object) -> list[list[str]]:
    """Every [prefix, folder] an option list draws from: a loader may prefix the names it lists (Impact:
    `"bbox/" + f` for each file of ultralytics_bbox), so the marker is looked for anywhere in an option."""
    out: list[list[str]] = []
    for o in options if isinstance(options, (list, tuple)) else ():
        at = o.find(MARK + "/") if isinstance(o, str) else -1
        if at >= 0:
            pair = [o[:at], o[at + len(MARK) + 1:].rsplit("/", 1)[0]]
            if pair not in out:
                out.append(pair)
    return out


def _input_folders(spec: dict[str, Any]) -> dict[str, list[list[str]]]:
    """input -> [[prefix, folder], ...] for every input whose options come from folder_paths, in declaration order."""
    out: dict[str, list[list[str]]] = {}
    for section in ("required", "optional"):
        for name, s in (spec.get(section) or {}).items():
            if not isinstance(s, (list, tuple)) or not s:
                continue
            pairs = _prefixed_folders(s[0])
            if not pairs and len(s) > 1 and isinstance(s[1], dict):
                pairs = _prefixed_folders(s[1].get("options"))
            if pairs:
                out[name] = pairs
    return out


def _model_inputs(spec: dict[str, Any]) -> list[list[str]]:
    out = []
    for section in ("required", "optional"):
        for name, s in (spec.get(section) or {}).items():
            if not isinstance(s, (list, tuple)) or not s:
                continue
            folder = _folder_of(s[0])
            if folder is None and len(s) > 1 and isinstance(s[1], dict):
                folder = _folder_of(s[1].get("options"))
            if folder is not None:
                out.append([name, folder])
    return out


WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})


def _required_links(spec: dict[str, Any]) -> list[str]:
    """Required inputs that only a link can fill (a type such as MODEL or IMAGE, not a widget's INT/FLOAT/STRING/
    BOOLEAN/COMBO or a list of options): a prompt without them is refused ("Required input is missing")."""
    out = []
    for name, s in (spec.get("required") or {}).items():
        if isinstance(s, (list, tuple)) and s and isinstance(s[0], str) and s[0] not in WIDGET_TYPES:
            out.append(str(name))
    return out


def _class_info(cls: Any) -> dict[str, Any]:  # a pack's class: anything
    CALLS.clear()
    try:
        if hasattr(cls, "GET_NODE_INFO_V1"):
            spec = cls.GET_NODE_INFO_V1().get("input") or {}
        else:
            spec = cls.INPUT_TYPES()
        spec = spec if isinstance(spec, dict) else {}
        info: dict[str, Any] = {"model_inputs": _model_inputs(spec), "input_folders": _input_folders(spec),
                                "required_links": _required_links(spec)}
    except Exception as exc:
        info = {"model_inputs": [], "input_folders": {}, "error": f"{type(exc).__name__}: {exc}"}
    info["folders_called"] = sorted(set(CALLS))
    return info


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class _Missing:
    """Last on sys.meta_path while a pack loads: every top-level module it asked for that no finder found, even
    where the pack caught the ImportError (Comfyroll's `try: from matplotlib ...` then fails on a NameError)."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if "." not in fullname:
            self.names.add(fullname)
        return None


async def _load(comfy: str, packs: list[str]) -> dict[str, Any]:  # probe.ProbeResult, as JSON
    from comfy.cli_args import args

    args.cpu = True
    args.disable_all_custom_nodes = False
    import folder_paths
    import utils.extra_config  # noqa: F401 - as main.py does, before nodes.py puts comfy/ (with utils.py) on sys.path

    _patch_folder_paths(folder_paths)
    import server  # first, as main.py: packs register routes on PromptServer.instance and import app/, utils/

    # isort: split
    import nodes

    server.PromptServer(asyncio.get_running_loop())
    t0 = time.perf_counter()
    await nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False)
    core = set(nodes.NODE_CLASS_MAPPINGS)
    result: dict[str, Any] = {"core_seconds": round(time.perf_counter() - t0, 3), "packs": {}, "classes": {}}
    for name in sorted(core):
        result["classes"][name] = {"pack": "comfy-core", **_class_info(nodes.NODE_CLASS_MAPPINGS[name])}
    for path in packs:
        before = set(nodes.NODE_CLASS_MAPPINGS)
        cap, missing = _Capture(), _Missing()
        logging.getLogger().addHandler(cap)
        sys.meta_path.append(missing)  # a finder by protocol
        t = time.perf_counter()
        try:
            ok = await nodes.load_custom_node(path, core, module_parent="custom_nodes")
        except Exception:
            ok, cap.lines = False, cap.lines + [traceback.format_exc()]
        finally:
            logging.getLogger().removeHandler(cap)
            sys.meta_path.remove(missing)
        added = sorted(set(nodes.NODE_CLASS_MAPPINGS) - before)
        pack = os.path.basename(path.rstrip("/"))
        error = next((ln for ln in reversed(cap.lines) if "Cannot import" in ln or "Error" in ln), None)
        result["packs"][pack] = {"ok": bool(ok), "seconds": round(time.perf_counter() - t, 3), "classes": added,
                                 "error": None if ok else (error or "\n".join(cap.lines[-3:]) or "not loaded")[-2000:],
                                 "missing_modules": sorted(missing.names)}
        for name in added:
            result["classes"][name] = {"pack": pack, **_class_info(nodes.NODE_CLASS_MAPPINGS[name])}
    return result


def main(argv: list[str]) -> int:
    comfy, out, packs = argv[1], argv[2], argv[3:]
    os.chdir(comfy)
    sys.path.insert(0, comfy)
    sys.argv = [os.path.join(comfy, "main.py")]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = asyncio.run(_load(comfy, packs))
    tmp = out + ".part"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
