"""Stage 2, workflow -> lock. May import `base` and `sources`. One job per module, in this order (a module
imports only modules above it; tests/test_layout.py holds the list):

- `probe_main`: runs inside ComfyUI's own process for the probe (imports no comfyver module);
- `nodescan`: static scan of Python source -> the classes it registers and their model inputs;
- `placement`: where a model file goes (the folder its loader input really lists, its name inside it);
- `versions`: the versions/<id>/ folders (load, save, clone, delete, the one-writer lock);
- `nodesource`: a locked core's or node's files (git cache, registry archive) and their cached scans;
- `probe`: the runtime probe (ComfyUI's node loading in the version's Python), cached per lock;
- `pylock`: the version's Python lock (pyproject.toml, uv.lock);
- `nodemap`: class -> node pack, the evidence and the decision (ComfyUI-Manager data, the Comfy Registry);
- `analyze`: workflow parsing and the report of classes, packs and models a workflow set needs;
- `proof`: every workflow against the probe's (or the scan's) knowledge: classes registered, model values offered;
- `importers`: other formats (Manager snapshots, config.yml) -> a version;
- `check`: the consistency of a version (`comfyver check`);
- `pipeline`: `comfyver lock`, workflows -> a complete lock, in its documented steps.
"""
