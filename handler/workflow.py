"""Workflows: parse (API or UI format), apply overrides, validate against /object_info before queueing."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

from comfyver.base import uiworkflow

from handler.errors import JobError, bad_input

CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SKIP_UI_TYPES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
MODEL_FILE = re.compile(r"\.(safetensors|ckpt|pt|pth|bin|gguf|sft|onnx|pkl)$", re.I)
# input name -> model folder, for naming the folder a missing model file belongs in
MODEL_INPUTS = {"ckpt_name": "checkpoints", "lora_name": "loras", "vae_name": "vae", "control_net_name": "controlnet",
                "unet_name": "diffusion_models", "clip_name": "text_encoders", "clip_name1": "text_encoders",
                "clip_name2": "text_encoders", "clip_name3": "text_encoders", "style_model_name": "style_models",
                "model_name": "upscale_models", "gligen_name": "gligen", "hypernetwork_name": "hypernetworks",
                "config_name": "configs", "audio_encoder_name": "audio_encoders", "embedding": "embeddings"}
MODEL_FOLDER_BY_NODE = {"CLIPVisionLoader": "clip_vision", "UpscaleModelLoader": "upscale_models"}


def parse_workflow(value) -> dict:
    """`workflow` as given in the job: an object or a JSON string."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise bad_input(f"workflow: not valid JSON ({exc})", "send the workflow as an object or a JSON string "
                            "(ComfyUI: Workflow > Export (API))") from None
    if not isinstance(value, dict) or not value:
        raise bad_input("workflow: expected a non-empty JSON object",
                        "export it from ComfyUI with Workflow > Export (API), or send the UI-format file")
    return value


def is_ui_format(wf: dict) -> bool:
    return uiworkflow.is_ui(wf)  # the lock's rule too


def _spec_inputs(info: dict) -> list[tuple[str, list]]:
    req = info.get("input", {})
    order = info.get("input_order") or {}
    out = []
    for section in ("required", "optional"):
        specs = req.get(section) or {}
        for name in order.get(section) or list(specs):
            if name in specs:
                out.append((name, specs[name]))
    return out


def _is_widget(spec) -> bool:
    t = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    return isinstance(t, list) or t in WIDGET_TYPES


def _spec_opts(spec) -> dict:
    return spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}


def is_upload_input(name: str, spec) -> bool:
    """Does this input name a file in ComfyUI's input folder (LoadImage's `image`, upload widgets)?"""
    opts = _spec_opts(spec)
    return bool(opts.get("image_upload") or opts.get("video_upload") or opts.get("audio_upload")) or \
        name in ("image", "video", "audio")


def upload_inputs(object_info: dict, class_type) -> set[str]:
    """The inputs of `class_type` that name input files."""
    info = object_info.get(class_type) if isinstance(class_type, str) else None
    return {n for n, spec in _spec_inputs(info) if is_upload_input(n, spec)} if isinstance(info, dict) else set()


def _is_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _ui_shape_error(where: str, want: str):
    return bad_input(f"workflow: {where}: expected {want}",
                     "send the UI-format file ComfyUI saved, unchanged, or export it in API format")


def read_ui_graph(wf: dict) -> tuple[dict, dict]:
    """Nodes by id and links by id (origin id, origin slot, type) of a UI-format workflow. Every entry the
    conversion reads is shape-checked first, so a hand-edited or hostile file is an input error naming the entry."""
    definitions = wf.get("definitions")
    if definitions is not None and not isinstance(definitions, dict):
        raise _ui_shape_error("definitions", "an object")
    if (definitions or {}).get("subgraphs"):
        raise bad_input("workflow: UI-format workflows with subgraphs are not supported",
                        "export the workflow in API format (Workflow > Export (API)) and send that")
    nodes = {}
    for i, n in enumerate(wf["nodes"]):
        if not isinstance(n, dict) or not _is_id(n.get("id")) or not isinstance(n.get("type"), str):
            raise _ui_shape_error(f"nodes[{i}]", "an object with an id (number or string) and a type (string)")
        ins = n.get("inputs")
        if ins is not None and not (isinstance(ins, list) and all(
                isinstance(x, dict) and isinstance(x.get("name"), str) and (x.get("link") is None or _is_id(x["link"]))
                for x in ins)):
            raise _ui_shape_error(f"nodes[{i}] (id {n['id']!r}) inputs",
                                  'a list of {"name": string, "link": link id or null}')
        nodes[n["id"]] = n
    raw = wf.get("links")
    if raw is not None and not isinstance(raw, list):
        raise _ui_shape_error("links", "a list")
    links = {}
    for i, link in enumerate(raw or []):
        lk = uiworkflow.read_link(link)
        entry = (lk.id, lk.origin_id, lk.origin_slot, lk.type) if lk else (None, None, None, None)
        if not (_is_id(entry[0]) and _is_id(entry[1]) and isinstance(entry[2], int) and not isinstance(entry[2], bool)):
            raise _ui_shape_error(f"links[{i}]", "[id, origin id, origin slot, target id, target slot, type] "
                                  "or an object with id, origin_id and origin_slot")
        links[entry[0]] = entry[1:]
    return nodes, links


def ui_to_api(wf: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow (nodes + links) to the API format, the way ComfyUI's frontend does."""
    nodes, links = read_ui_graph(wf)

    def source(link_id, depth=0):
        """(node_id, slot) or ("value", v) or None for the far end of a link, through reroutes/bypass/primitives."""
        if link_id not in links or depth > 50:
            return None
        nid, slot, ltype = links[link_id]
        n = nodes.get(nid)
        if n is None or n.get("mode") == 2:
            return None
        if n["type"] == "Reroute":
            ins = n.get("inputs") or []
            return source(ins[0].get("link"), depth + 1) if ins else None
        if n["type"] == "PrimitiveNode":
            wv = n.get("widgets_values")
            return ("value", _plain_widget(wv[0], nid, n, "value")) if isinstance(wv, list) and wv else None
        if n.get("mode") == 4:  # bypassed: pass through the first input of the same type
            for inp in n.get("inputs") or []:
                if inp.get("link") is not None and (ltype is None or inp.get("type") == ltype):
                    return source(inp["link"], depth + 1)
            return None
        return (nid, slot)

    api = {}
    for nid, n in nodes.items():
        if n["type"] in SKIP_UI_TYPES or n.get("mode") in (2, 4):
            continue
        info = object_info.get(n["type"])
        inputs: dict = {}
        for inp in n.get("inputs") or []:
            if inp.get("link") is None:
                continue
            src = source(inp["link"])
            if src is None:
                continue
            inputs[inp["name"]] = src[1] if src[0] == "value" else [str(src[0]), src[1]]
        wv = n.get("widgets_values")
        if info is not None and isinstance(wv, dict):  # a dict may hold a pack's own state (VHS: videopreview)
            inputs.update({k: _plain_widget(v, nid, n, k) if _is_link(v) else v
                           for k, v in wv.items() if k not in inputs})
        elif info is not None and isinstance(wv, list):
            i = 0
            for name, spec in _spec_inputs(info):
                if not _is_widget(spec) or i >= len(wv):
                    continue
                if name not in inputs:
                    inputs[name] = _plain_widget(wv[i], nid, n, name)
                i += 1
                opts = _spec_opts(spec)
                if (spec[0] == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed"))
                        and i < len(wv) and isinstance(wv[i], str) and wv[i] in CONTROL_VALUES):
                    i += 1
        api[str(nid)] = {"class_type": n["type"], "inputs": inputs, "_meta": {"title": n.get("title") or n["type"]}}
    if not api:
        raise bad_input("workflow: the UI-format workflow has no runnable nodes", "check that nodes are not all muted")
    return api


def _plain_widget(value, nid, node: dict, name: str):
    """A widget's value: a number, string or boolean. A list would even read as a link to another node."""
    if isinstance(value, (list, dict)):
        raise bad_input(f"workflow: node {nid!r} ({node['type']}): widget {name!r} has the value "
                        f"{json.dumps(value)[:80]}; a widget holds a number, string or boolean",
                        "send the UI-format file ComfyUI saved, unchanged, or export it in API format",
                        node_id=str(nid), node_type=node["type"])
    return value


def _input_names(object_info: dict | None, class_type) -> list[str] | None:
    spec = (object_info or {}).get(class_type) if isinstance(class_type, str) else None
    if not isinstance(spec, dict):
        return None
    inputs = spec.get("input") or {}
    return [n for part in ("required", "optional") for n in (inputs.get(part) or {})]


def apply_overrides(prompt: dict, overrides, object_info: dict | None = None) -> None:
    """Set inputs in place: `[{"node_id", "field": "inputs.text", "value"}]` or `{"<node>": {"<input>": value}}`.
    With `object_info`, an input the node's class does not have is refused, naming the closest valid ones."""
    if overrides is None:
        return
    items = []
    if isinstance(overrides, dict):
        for nid, values in overrides.items():
            if not isinstance(values, dict):
                raise bad_input(f"overrides[{nid!r}]: expected an object of input -> value",
                                'write {"<node id>": {"<input name>": value}}', node_id=str(nid))
            items += [(str(nid), ["inputs", k], v) for k, v in values.items()]
    elif isinstance(overrides, list):
        for i, o in enumerate(overrides):
            if not isinstance(o, dict) or "node_id" not in o or not isinstance(o.get("field"), str) or "value" not in o:
                raise bad_input(f"overrides[{i}]: expected {{\"node_id\", \"field\", \"value\"}}",
                                'write {"node_id": "6", "field": "inputs.text", "value": "a cat"}')
            path = o["field"].split(".")
            if path[0] != "inputs":
                path = ["inputs", *path]
            items.append((str(o["node_id"]), path, o["value"]))
    else:
        raise bad_input("overrides: expected a list or an object", "see docs/handler.md, section overrides")
    for nid, path, value in items:
        node = prompt.get(nid)
        if not isinstance(node, dict):
            raise bad_input(f"overrides: node {nid!r} is not in the workflow", "use a node id from the workflow",
                            node_id=nid)
        if len(path) < 2 or any(not p for p in path):
            raise bad_input(f"overrides: field {'.'.join(path)!r} for node {nid!r} names no input",
                            'use "inputs.<name>"', node_id=nid)
        target = node.setdefault("inputs", {})
        if not isinstance(target, dict):
            raise bad_input(f"overrides: node {nid!r} has `inputs` {json.dumps(target)[:80]}, not an object of "
                            "input -> value", "fix the workflow's node, then set its inputs", node_id=nid,
                            node_type=node.get("class_type"))
        known = _input_names(object_info, node.get("class_type"))
        if known is not None and path[1] not in known and path[1] not in target:
            close = difflib.get_close_matches(path[1], known, n=3, cutoff=0.5)
            raise bad_input(f"overrides: node {nid!r} ({node.get('class_type')}) has no input {path[1]!r}",
                            f"did you mean {' or '.join(map(repr, close))}?" if close else
                            f"its inputs are: {', '.join(known)}", node_id=nid, node_type=node.get("class_type"))
        for p in path[1:-1]:
            target = target.get(p)
            if not isinstance(target, dict):
                raise bad_input(f"overrides: field {'.'.join(path)!r} does not exist in node {nid!r}",
                                node_id=nid, node_type=node.get("class_type"))
        target[path[-1]] = value


def _is_link(v) -> bool:
    return (isinstance(v, list) and len(v) == 2 and isinstance(v[0], (str, int)) and not isinstance(v[0], bool)
            and isinstance(v[1], int) and not isinstance(v[1], bool))


def validate(prompt: dict, object_info: dict, input_dir: Path | None = None) -> list[dict]:
    """Every problem in the API-format `prompt`, each naming node id and type; [] when it can be queued."""
    problems = []

    def add(nid, ctype, kind, message, **extra):
        problems.append({"node_id": str(nid), "node_type": ctype, "problem": kind, "message": message, **extra})

    for nid, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            add(nid, None, "malformed_node", f"node {nid!r} has no class_type (is this the API format?)")
            continue
        ctype = node["class_type"]
        info = object_info.get(ctype)
        if info is None:
            add(nid, ctype, "unknown_node_type", f"node {nid!r}: node type {ctype!r} is not installed in this image",
                hint="add the custom node that provides it to the version (comfyver lock) and rebuild")
            continue
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            add(nid, ctype, "malformed_node", f"node {nid!r} ({ctype}): inputs must be an object")
            continue
        specs = dict(_spec_inputs(info))
        for name in (info.get("input", {}).get("required") or {}):
            if name not in inputs:
                add(nid, ctype, "missing_input", f"node {nid!r} ({ctype}): required input {name!r} is missing",
                    input=name)
        for name, value in inputs.items():
            spec = specs.get(name)
            if _is_link(value):
                src = prompt.get(str(value[0]))
                if not isinstance(src, dict):
                    add(nid, ctype, "broken_link", f"node {nid!r} ({ctype}): input {name!r} links to node "
                        f"{str(value[0])!r}, which is not in the workflow", input=name)
                    continue
                src_info = object_info.get(src.get("class_type"))
                if src_info is None:
                    continue  # reported as unknown_node_type on that node
                outs = src_info.get("output") or []
                if value[1] < 0 or value[1] >= len(outs):
                    add(nid, ctype, "broken_link", f"node {nid!r} ({ctype}): input {name!r} reads output {value[1]} "
                        f"of node {str(value[0])!r} ({src['class_type']}), which has {len(outs)} outputs", input=name)
                    continue
                want = spec[0] if spec else None
                have = outs[value[1]]
                if (isinstance(want, str) and isinstance(have, str) and "*" not in (want, have)
                        and not set(want.split(",")) & set(have.split(","))):
                    add(nid, ctype, "type_mismatch", f"node {nid!r} ({ctype}): input {name!r} wants {want} but "
                        f"node {str(value[0])!r} output {value[1]} gives {have}", input=name)
                continue
            if spec is None:
                continue
            options = spec[0] if isinstance(spec[0], list) else (
                _spec_opts(spec).get("options") if spec[0] == "COMBO" else None)
            if options is None or value in options:
                continue
            if is_upload_input(name, spec):
                if input_dir is not None and isinstance(value, str) and _inside(input_dir, value) and \
                        (input_dir / value.split(" [")[0]).is_file():
                    continue
                add(nid, ctype, "missing_input_file", f"node {nid!r} ({ctype}): input file {value!r} is not in "
                    "ComfyUI's input folder", input=name, hint="send it in the job's `images` list under this name")
            elif isinstance(value, str) and (name in MODEL_INPUTS or MODEL_FILE.search(value)):
                folder = MODEL_FOLDER_BY_NODE.get(ctype) or MODEL_INPUTS.get(name, "models")
                add(nid, ctype, "missing_model", f"node {nid!r} ({ctype}): model file {value!r} is not in "
                    f"models/{folder}", input=name, folder=folder,
                    hint=f"add it to the version's models ({folder}/{value}) or mount it under MODELS_DIR/{folder}")
            else:
                shown = options if len(options) <= 20 else options[:20] + ["..."]
                add(nid, ctype, "invalid_value", f"node {nid!r} ({ctype}): {value!r} is not a valid {name!r}",
                    input=name, allowed=shown)
    return problems


def _inside(root: Path, name: str) -> bool:
    try:
        return (root / name).resolve().is_relative_to(root.resolve())
    except (OSError, ValueError):
        return False


def validation_error(problems: list[dict]) -> JobError:
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return JobError("validation", f"the workflow cannot run: {first['message']}{more}", problems=problems,
                    node_id=first["node_id"], node_type=first["node_type"],
                    hint="fix every problem listed in `problems`; nothing was queued")
