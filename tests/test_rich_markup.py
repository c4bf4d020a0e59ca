"""Text from outside (a model name, node id, class name, job id, a worker's message) is printed as it is: never
read as rich markup, where `[/]` crashed `analyze`, `lock`, `add-model` and `run --endpoint` (issue 24 L5)."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

from comfyver import cli
from comfyver.base import ui

from tests.support import comfyui as comfyui_support
from tests.test_jobclient import PNG, FakeQueue, runpod_api, workflow  # noqa: F401 - fixtures
from tests.test_lock_workflow import env  # noqa: F401 - fixture
from tests.test_versions import project  # noqa: F401 - fixture

EVIL = "[/]x[bold]"  # an unmatched closing tag: rich raises MarkupError when it reads this as markup


def run(capsys, *args) -> tuple[int, str, str]:
    rc = cli.main(list(args))
    o = capsys.readouterr()
    return rc, o.out, o.err


def test_text_helper_keeps_every_character():
    import io

    from rich.console import Console

    for text in (EVIL, "a\\", "[red]x[/red]", "[", "]"):
        buf = io.StringIO()
        Console(file=buf, width=200).print(f"[bold]{ui.text(text)}[/]")
        assert buf.getvalue() == text + "\n"


def test_analyze_prints_markup_in_names_literally(tmp_path, capsys):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": f"{EVIL}.ckpt"}},
                              "2": {"class_type": f"Odd{EVIL}", "inputs": {}}}))
    rc, out, _ = run(capsys, "analyze", str(wf), "--comfyui", str(comfyui_support.source()), "--offline")
    assert rc == 1
    assert f"{EVIL}.ckpt" in out and f"Odd{EVIL}" in out


def test_lock_problem_table_prints_markup_literally(env, capsys, tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"nodes": [{"id": 2, "type": "LoraLoader", "mode": 0,
                                         "widgets_values": [f"{EVIL}.safetensors", 1.0]}]}))
    rc, _, err = run(capsys, "lock", "odd", "--workflow", str(wf), "--comfyui-url", env.core,
                     "--offline-registry", "--no-python")
    assert rc == 1
    assert f"{EVIL}.safetensors" in err and "cannot be locked" in err


def test_add_model_prints_markup_in_the_path_literally(project, capsys):
    assert run(capsys, "new", "demo", "--comfyui", "v0.3.75", "--comfyui-url", project.core)[0] == 0
    rc, out, err = run(capsys, "add-model", "demo", f"loras/{EVIL}.safetensors", project.model_url)
    assert rc == 0, err
    assert f"model loras/{EVIL}.safetensors sha256 {project.model_sha}" in out


def test_run_endpoint_prints_markup_in_job_id_and_progress_literally(runpod_api, tmp_path, capsys):
    q = FakeQueue(runpod_api, [{"status": "IN_PROGRESS", "output": {"value": 1, "max": 2, "message": EVIL}},
                               {"status": "COMPLETED", "output": {"outputs": [
                                   {"node_id": EVIL, "kind": "image", "filename": "a.png",
                                    "data": base64.b64encode(PNG).decode()}]}}])
    job = f"job-{EVIL}"  # the path the SDK asks for is /status/<id>
    runpod_api.routes["/v2/ep1/run"] = lambda h, b: (200, {}, {"id": job, "status": "IN_QUEUE"})
    runpod_api.routes[f"/v2/ep1/status/{quote(job, safe='/')}"] = q.status
    rc, out, err = run(capsys, "run", "--endpoint", "ep1", str(workflow(tmp_path)), "--poll", "0.01",
                       "--out", str(tmp_path / "out"))
    assert rc == 0, err
    assert (tmp_path / "out" / "a.png").read_bytes() == PNG
    assert f"submitted job {job} to endpoint ep1" in err
    assert f"node {EVIL}:" in out


def test_realize_and_resolve_progress_print_markup_literally(monkeypatch):
    """The realize steps and download bars, and `lock`'s resolving bar on a terminal, carry model keys."""
    import io

    from comfyver.realize import realize
    from comfyver.sources import resolve
    from rich.console import Console

    rep = realize.Reporter(quiet=False)
    rep.console = Console(file=io.StringIO(), force_terminal=True, width=200, record=True)
    rep.step(f"model loras/{EVIL}.safetensors")
    with rep.bytes(f"loras/{EVIL}.safetensors", 10) as advance:
        advance(10)
    assert f"loras/{EVIL}.safetensors" in rep.console.export_text()
    monkeypatch.setattr(resolve.sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(resolve, "lock_one", lambda *a: {"url": "x"})
    item = resolve.Item(f"models.loras/{EVIL}.safetensors", "model", {"url": "x"})
    assert resolve.lock_items([item], progress=True) == {item.key: {"url": "x"}}
