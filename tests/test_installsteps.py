"""Issue 28: a pack's install steps comfyver does not perform (install.py, install.sh/.bat, extra requirement files),
read statically (lock/installsteps.py), and `comfyver lock` reporting them."""

from __future__ import annotations

import json
import time

import pytest
from comfyver.lock import installsteps as steps_mod
from comfyver.lock.installsteps import InstallStep, read_install_py, read_tree

from tests.support import nodepacks
from tests.support.gitserver import make_repo
from tests.test_lock_workflow import env, run  # noqa: F401  (fixture)


def _steps(files: dict[str, str]) -> dict[str, InstallStep]:
    return {s.file: s for s in read_tree(files).steps}


def test_a_literal_pip_list_is_read():
    src = ("import subprocess, sys\n"
           "subprocess.check_call([sys.executable, '-s', '-m', 'pip', 'install', '--upgrade', 'ultralytics>=8.0',\n"
           "                       'piexif', '--extra-index-url', 'https://example.org/simple'])\n")
    s = read_install_py("install.py", src, {})
    assert s.would_install == ["ultralytics>=8.0", "piexif"]
    assert s.unknown == [] and not s.installs_unknown and s.unreadable is None
    assert s.downloads == []  # an index URL of the pip command is not a download


def test_an_impact_pack_style_install_py():
    """ComfyUI-Impact-Pack's shape: the pip command in a module variable set on both branches of an if, one package
    added to it, `-r` with a path joined at run time, and a model downloaded with a literal URL."""
    src = '''
import os, sys, subprocess
from torchvision.datasets.utils import download_url

if "python_embeded" in sys.executable:
    pip_install = [sys.executable, '-s', '-m', 'pip', 'install']
else:
    pip_install = [sys.executable, '-m', 'pip', 'install']

def process_wrap(cmd_str, cwd_path=None):
    return subprocess.Popen(cmd_str, cwd=cwd_path).wait()

def ensure_pip_packages():
    try:
        import cv2
    except Exception:
        subprocess.check_call(pip_install + ['opencv-python'])
    my_path = os.path.dirname(__file__)
    requirements_path = os.path.join(my_path, "requirements.txt")
    process_wrap(pip_install + ['-r', requirements_path])

def install():
    """Downloads https://example.org/not-a-download in its docstring."""
    print("see https://github.com/ltdrdata/ComfyUI-Impact-Pack for help")
    download_url("https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth", "models/sams")

ensure_pip_packages()
install()
'''
    s = _steps({"install.py": src, "requirements.txt": "segment-anything\npiexif\n"})["install.py"]
    assert s.would_install == ["opencv-python", "segment-anything", "piexif"]
    assert s.requirement_files == ["requirements.txt"]
    assert s.downloads == ["https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"]
    assert s.unknown == []


def test_pip_install_r_with_a_literal_file_and_a_string_command():
    src = ("import os\n"
           "os.system('pip install -r requirements-gpu.txt && pip install insightface==0.7.3')\n"
           "os.system('python -m pip install -r missing.txt')\n")
    s = _steps({"install.py": src, "requirements-gpu.txt": "# gpu\nonnxruntime-gpu>=1.17\n-r base.txt\n",
                "base.txt": "numpy\n"})["install.py"]
    assert s.would_install == ["onnxruntime-gpu>=1.17", "numpy", "insightface==0.7.3"]
    assert s.requirement_files == ["requirements-gpu.txt", "base.txt"]
    assert s.unknown == ["line 3: pip install -r missing.txt: no such file in the pack"] and s.installs_unknown


def test_helper_calls_with_literal_lists():
    """An imported `pip_install([...])`, a helper this file defines around pip (its call sites read), and a
    helper that builds the command (segment_anything's build_pip_install_cmds)."""
    src = '''
import subprocess, sys
from .utils import pip_install

def install(package):
    subprocess.check_call([sys.executable, "-m", "pip", "install", package])

def build_cmds(args):
    if "python_embeded" in sys.executable:
        return [sys.executable, '-s', '-m', 'pip', 'install'] + args
    return [sys.executable, '-m', 'pip', 'install'] + args

pip_install(["insightface==0.7.3", "onnxruntime"])
install("mediapipe")
cmds = build_cmds(["-r", "requirements.txt"])
subprocess.run(cmds)
'''
    s = _steps({"install.py": src, "requirements.txt": "timm\n"})["install.py"]
    assert s.would_install == ["insightface==0.7.3", "onnxruntime", "mediapipe", "timm"]
    assert s.unknown == [] and not s.installs_unknown


def test_non_literal_installs_are_unknown_with_their_line():
    src = '''
import os, subprocess, sys
pkg = os.environ.get("PKG", "x")
cupy = f"cupy-cuda{os.environ['CUDA']}" if os.environ.get("CUDA") else "cupy-wheel"
subprocess.run(["pip", "install", pkg])
os.system(f"{sys.executable} -m pip install {cupy}")
def install(package):
    subprocess.check_call([sys.executable, "-m", "pip", "install", package])
for p in open("list.txt"):
    install(p)
'''
    s = read_install_py("install.py", src, {})
    assert s.would_install == [] and s.installs_unknown
    assert s.unknown == [f"line {n}: pip install of a value computed at run time" for n in (5, 6, 10)]
    r = steps_mod.report("p", s, set())
    assert r["satisfied"] is False and r["missing"] == []
    assert "cannot tell" in steps_mod.note(r, "v")


def test_downloads_literal_urls_and_unknown_built_ones():
    src = '''
import urllib.request
MODEL = "https://huggingface.co/o/r/resolve/main/model.onnx?download=true"
REPO = "owner/repo"
urllib.request.urlretrieve(MODEL, "model.onnx")
urllib.request.urlretrieve(f"https://github.com/{REPO}/releases/download/v1/weights.pth", "w.pth")
urllib.request.urlretrieve(f"https://example.com/{__import__('os').environ['X']}", "w.pth")
'''
    s = read_install_py("install.py", src, {})
    assert s.downloads == ["https://huggingface.co/o/r/resolve/main/model.onnx?download=true"]
    assert s.unknown == ["line 6: a URL built at run time: https://github.com/owner/repo/releases/download/v1/weights.pth",
                         "line 7: a URL built at run time: https://example.com/…"]
    assert not s.installs_unknown  # nothing it installs is unknown: satisfied if its installs are
    assert steps_mod.report("p", s, set())["satisfied"] is True


def test_a_syntax_error_is_unreadable_not_a_crash():
    s = _steps({"install.py": "import subprocess\ndef broken(:\n    pass\n"})["install.py"]
    assert s.unreadable == "not valid Python (invalid syntax, line 2)"
    r = steps_mod.report("p", s, set())
    assert r["satisfied"] is False
    assert "could not be read (not valid Python" in steps_mod.note(r, "v")
    nul = read_install_py("install.py", "x = 1\0\n", {})
    assert nul.unreadable and nul.unreadable.startswith("not valid Python")


@pytest.mark.parametrize("src, why", [
    ("x = " + "(" * 100_000 + "1" + ")" * 100_000, "not valid Python"),
    ("x = " + "-" * 500_000 + "1", "too deeply nested"),
    ("x = " + "+".join(["1"] * 200_000), None),      # over the size read, or too nested
    ("x = a" + ".b" * 200_000, None),
    ("".join(" " * i + "if x:\n" for i in range(200)) + " " * 200 + "pass\n", "not valid Python"),
    ("x = 1\n" * 3_000_000, "larger than"),
])
def test_hostile_files_are_bounded(src, why):
    t = time.monotonic()
    s = read_install_py("install.py", src, {})
    assert time.monotonic() - t < 5
    assert s.unreadable is not None and (why is None or why in s.unreadable), s.unreadable
    assert s.would_install == []


def test_expensive_evaluation_stops_at_its_budget():
    """Values that double at every step, a function calling itself twice, many calls: read in bounded time."""
    lines = ["import subprocess", "subprocess.run(['pip', 'install', 'x'])", "a0 = ['pip', 'install', 'y']",
             "s0 = 'pip install z '"]
    lines += [f"a{i} = a{i - 1} + a{i - 1}\ns{i} = s{i - 1} + s{i - 1}" for i in range(1, 400)]
    lines += ["subprocess.run(a20)", "subprocess.run(a399)", "import os", "os.system(s30)"]
    lines += ["def f(x):", "    return f(x) + f(x) + f(x)", "subprocess.run(f(['pip']))"]
    lines += [f"subprocess.run(['pip', 'install', 'p{i}'])" for i in range(3000)]
    t = time.monotonic()
    s = read_install_py("install.py", "\n".join(lines) + "\n", {})
    assert time.monotonic() - t < 20
    assert s.unreadable is None and s.truncated  # more than MAX_ITEMS packages: the list is partial, and says so
    assert s.would_install[:2] == ["x", "p0"] and len(s.would_install) == steps_mod.MAX_ITEMS


def test_shell_scripts_and_their_variables():
    sh = ('#!/bin/bash\nreq="$(dirname "$0")/requirements.txt"\n'
          'pip install -r "$req"\n'
          'pip3 install "insightface==0.7.3"\n'
          'while read -r line; do pip install -i https://mirror.example/simple "$line"; done < extra.txt\n'
          'wget https://example.com/model.bin -O models/model.bin\n')
    bat = ('@echo off\nset "requirements_txt=%~dp0\\requirements.txt"\n'
           'set "python_exec=..\\..\\..\\python_embeded\\python.exe"\n'
           '"%python_exec%" -s -m pip install -r "%requirements_txt%"\n'
           'REM pip install commented-out\n')
    found = _steps({"install.sh": sh, "install.bat": bat, "requirements.txt": "timm\n"})
    s = found["install.sh"]
    assert s.would_install == ["timm", "insightface==0.7.3"] and s.requirement_files == ["requirements.txt"]
    assert s.downloads == ["https://example.com/model.bin"]  # the pip index is not a download
    assert s.unknown == ["line 5: pip install of a value computed at run time"]
    b = found["install.bat"]
    assert b.would_install == ["timm"] and b.unknown == []


def test_a_hostile_shell_script_is_bounded():
    sh = "a=x\n" + "a=$a$a$a$a\n" * 200 + "pip install $a\n" + "pip install " + " ".join(f"q{i}" for i in range(40_000)) + "\n"
    t = time.monotonic()
    s = _steps({"install.sh": sh + "echo " + "$(" * 10_000 + "\n"})["install.sh"]
    assert time.monotonic() - t < 5
    assert s.truncated and len(s.would_install) == steps_mod.MAX_ITEMS and s.installs_unknown


def test_prestartup_only_where_it_pip_installs_and_extra_requirement_files():
    files = {"prestartup_script.py": "import folder_paths\nfolder_paths.add_model_folder_path('x', 'y')\n",
             "requirements.txt": "numpy\n",
             "requirements-gpu.txt": "onnxruntime-gpu\n",
             "requirements-dev.txt": "pytest\n",
             "requirements/base.txt": "einops\n",
             "docs/requirements.txt": "sphinx\n",
             "LICENSE.txt": "MIT License\n"}
    assert sorted(_steps(files)) == ["requirements-gpu.txt", "requirements/base.txt"]
    files["prestartup_script.py"] = "import os\nos.system('pip install --quiet mediapipe')\n"
    found = _steps(files)
    assert sorted(found) == ["prestartup_script.py", "requirements-gpu.txt", "requirements/base.txt"]
    assert found["prestartup_script.py"].kind == "prestartup"
    assert found["prestartup_script.py"].would_install == ["mediapipe"]


def test_satisfied_against_the_declared_requirements_and_the_fix():
    s = read_install_py("install.py", "import pip\npip.main(['install', 'piexif', 'opencv-contrib-python>=4.8'])\n", {})
    r = steps_mod.report("impact", s, {"numpy"})
    assert r["missing"] == ["piexif", "opencv-contrib-python>=4.8"] and r["satisfied"] is False
    n = steps_mod.note(r, "v1")
    assert "`comfyver lock v1 --pip 'piexif' --pip 'opencv-contrib-python>=4.8'`" in n
    assert steps_mod.report("impact", s, {"piexif", "opencv-python"})["missing"] == ["opencv-contrib-python>=4.8"]
    r = steps_mod.report("impact", s, {"piexif", "opencv-contrib-python-headless"})
    assert r["satisfied"] is True and "Satisfied" in steps_mod.note(r, "v1")


def test_a_real_corpus_install_py():
    """ComfyUI-Frame-Interpolation (corpus, pinned commit): install.py pip-installs each line of
    requirements-no-cupy.txt (read: the file is named) and a cupy package chosen at run time (unknown);
    requirements-with-cupy.txt is a second requirements file nobody reads."""
    pack = nodepacks.by_repo().get("Fannovel16/ComfyUI-Frame-Interpolation") if nodepacks.CORPUS.is_dir() else None
    if pack is None:
        pytest.skip("the node-pack corpus is not here")
    files, large = steps_mod.tree_files_at(nodepacks.CORPUS / pack["path"], pack["commit"])
    assert large == {} and "install.py" in files
    found = {s.file: s for s in read_tree(files, large).steps}
    assert sorted(found) == ["install.bat", "install.py", "requirements-with-cupy.txt"]
    s = found["install.py"]
    assert s.requirement_files == ["requirements-no-cupy.txt"]
    assert "kornia" in s.would_install and "cupy-wheel" not in s.would_install
    assert s.installs_unknown and any("pip install of a value computed at run time" in u for u in s.unknown)
    assert "cupy-wheel" in found["requirements-with-cupy.txt"].would_install


INSTALL_PY = '''
import subprocess, sys
pip_install = [sys.executable, "-m", "pip", "install"]
subprocess.check_call(pip_install + ["piexif==1.1.3"])
subprocess.check_call(pip_install + ["-r", "requirements.txt"])
'''


def test_lock_reports_a_packs_install_step_and_pip_satisfies_it(env, capsys, tmp_path):
    files = {"__init__.py": "class D: pass\nNODE_CLASS_MAPPINGS = {'Detailer': D}\n", "install.py": INSTALL_PY,
             "requirements.txt": "scikit-image\n"}
    make_repo(tmp_path / "ComfyUI-Detail", files, "d", tag="v1.0.0")
    url = env.git_server.publish(tmp_path / "ComfyUI-Detail", "ComfyUI-Detail")
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"nodes": [{"id": 1, "type": "Detailer", "mode": 0, "widgets_values": []}]}))
    args = ["lock", "det", "--workflow", str(wf), "--comfyui-url", env.core, "--offline-registry", "--no-python",
            "--json", "--node", url]
    rc, out, err = run(capsys, *args)
    assert rc == 0, out + err  # not a blocking problem
    res = json.loads(out)
    assert res["install_steps"] == [{
        "pack": "comfyui-detail", "file": "install.py", "kind": "script",
        "would_install": ["piexif==1.1.3", "scikit-image"], "requirement_files": ["requirements.txt"],
        "downloads": [], "unknown": [], "missing": ["piexif==1.1.3"], "satisfied": False, "unreadable": None,
        "truncated": False}]
    note = next(n for n in res["notes"] if n.startswith("node comfyui-detail: install.py"))
    assert "`comfyver lock det --pip 'piexif==1.1.3'`" in note
    # the human output lists it too
    rc, out, err = run(capsys, "lock", "det", "--offline-registry", "--no-python")
    assert rc == 0 and "note: node comfyui-detail: install.py is not run by comfyver" in out, out + err
    # with the package declared by --pip, the step is satisfied (and listed every time)
    rc, out, err = run(capsys, "lock", "det", "--offline-registry", "--no-python", "--json", "--pip", "piexif==1.1.3")
    assert rc == 0, out + err
    res = json.loads(out)
    assert [(s["pack"], s["satisfied"], s["missing"]) for s in res["install_steps"]] == [("comfyui-detail", True, [])]
    assert any(n.startswith("node comfyui-detail: install.py") and "Satisfied" in n for n in res["notes"])


def test_lock_without_install_steps_says_nothing(env, capsys, tmp_path):
    make_repo(tmp_path / "ComfyUI-Plain", {"__init__.py": "class D: pass\nNODE_CLASS_MAPPINGS = {'Plain': D}\n"}, "p")
    url = env.git_server.publish(tmp_path / "ComfyUI-Plain", "ComfyUI-Plain")
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"nodes": [{"id": 1, "type": "Plain", "mode": 0, "widgets_values": []}]}))
    rc, out, err = run(capsys, "lock", "plain", "--workflow", str(wf), "--comfyui-url", env.core, "--offline-registry",
                       "--no-python", "--json", "--node", url)
    assert rc == 0, out + err
    assert json.loads(out)["install_steps"] == []


def test_git_tree_reader_skips_large_files_and_symlinks(tmp_path):
    repo = tmp_path / "r"
    make_repo(repo, {"install.py": "x = 1\n" * 100_000, "requirements-extra.txt": "einops\n"}, "r")
    (repo / "requirements-link.txt").symlink_to("requirements-extra.txt")
    make_repo(repo, {}, "a symlink")
    files, large = steps_mod.tree_files_at(repo, "HEAD")
    assert large == {"install.py": 600_000} and sorted(files) == ["requirements-extra.txt"]
    found = {s.file: s for s in read_tree(files, large).steps}
    assert found["install.py"].unreadable and "larger than" in found["install.py"].unreadable
    assert found["requirements-extra.txt"].would_install == ["einops"]
