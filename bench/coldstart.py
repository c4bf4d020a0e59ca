"""Cold start, measured: container start -> first job done, with the real worker and ComfyUI on the CPU.

    python bench/coldstart.py [--model-gb 2] [--volume-mbps 200] [--rounds 2]

One big model file (random bytes, --model-gb GB, in a temp folder; one copy on disk, hard-linked where a
placement needs it; removed at the end) is read by the first job through three placements:

- baked: the file in the tree's models/checkpoints (the image with its models), evicted from the page cache
  before each read (posix_fadvise DONTNEED): a cold container reads it from disk;
- volume: MODELS_DIR/checkpoints/<name> is a named pipe (FIFO) that a writer thread fills from the file at
  --volume-mbps MB/s: a FUSE-less stand-in for a network volume read at that rate;
- cached: a Hugging Face cache layout (`hub/models--bench--coldstart/snapshots/<rev>/<name>`, refs/main) and a
  lock naming the file there; the worker runs with COMFY_MODELS=cached, so handler/hfcache.py checks the file's
  sha256 (its stat cache of verified files lives in the state folder, empty in a fresh container) and links it
  for ComfyUI, all inside the timed window.

Per placement, side by side in the same run:
- the worker: `python -m handler` (the runpod SDK's production loop, taking jobs from tests/support/jobqueue.py's
  queue, where the job already waits) from its start to "ComfyUI ready" (start->ready) and to the job reported
  done to the queue (first job); a fresh state folder each time;
- bare ComfyUI: `python main.py --cpu` (same tree, same model folders, same bytecode cache) until /object_info
  answers (bare start), then the same job through POST /prompt and /history (bare job);
- a plain read of the model at the same disk speed (model read).
The job: a node that reads the whole model file (as a loader does) -> SaveImage.
Target: total <= bare start + 1 s + model read. Each placement runs --rounds rounds (bare and worker
alternating which goes first); the table gives medians: on a shared machine single starts vary by seconds.
One untimed bare start and one untimed worker start come first (bytecode into the shared cache, as an image
has it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from comfyver.base import project  # noqa: E402
from comfyver.realize import comfystate  # noqa: E402

from tests.support import comfyui as comfyui_support  # noqa: E402
from tests.support.jobqueue import JobQueue  # noqa: E402

CHUNK = 16 << 20
REV = "0123456789abcdef0123456789abcdef01234567"

NODE = '''
import os, time
import folder_paths
import torch


class ComfyverBenchLoad:
    """Reads the whole model file, as a loader does (the bench's stand-in for a checkpoint load)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "load"
    CATEGORY = "comfyver/bench"

    def load(self, ckpt_name):
        for base in folder_paths.get_folder_paths("checkpoints"):
            path = os.path.join(base, ckpt_name)
            if os.path.lexists(path):
                break
        else:
            raise FileNotFoundError(ckpt_name)
        t0, n, buf = time.perf_counter(), 0, bytearray(16 << 20)
        with open(path, "rb", buffering=0) as f:  # a FIFO too (the volume stand-in): no isfile() check
            while k := f.readinto(buf):
                n += k
        print(f"[bench] read {n} bytes of {ckpt_name} in {time.perf_counter() - t0:.2f} s", flush=True)
        return (torch.full((1, 8, 8, 3), (n % 255) / 255.0),)


NODE_CLASS_MAPPINGS = {"ComfyverBenchLoad": ComfyverBenchLoad}
'''


def workflow(name: str) -> dict:
    return {"1": {"class_type": "ComfyverBenchLoad", "inputs": {"ckpt_name": name}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cold"}}}


def make_model(path: Path, size: int) -> None:
    block = bytearray(os.urandom(CHUNK))
    with open(path, "wb") as f:
        left, i = size, 0
        while left > 0:
            block[:8] = i.to_bytes(8, "little")  # no two blocks alike
            f.write(block[:min(left, CHUNK)])
            left -= CHUNK
            i += 1
        f.flush()
        os.fsync(f.fileno())


def evict(path: Path) -> None:
    """Drop the file's pages from the page cache (clean pages: no root needed), as in a fresh container."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_all(path: Path) -> float:
    t0, buf = time.perf_counter(), bytearray(CHUNK)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return time.perf_counter() - t0


def feed_fifo(fifo: Path, source: Path, mbps: float) -> threading.Thread:
    """Fill `fifo` from `source` at `mbps` MB/s (10^6 bytes) once a reader opens it: the slow volume."""
    def run():
        try:
            fd = os.open(fifo, os.O_WRONLY)  # blocks until the reader opens it
        except OSError:
            return
        try:
            with open(source, "rb", buffering=0) as src:
                t0, sent, buf = time.perf_counter(), 0, bytearray(1 << 20)
                while k := src.readinto(buf):
                    view = memoryview(buf)[:k]
                    while view:
                        view = view[os.write(fd, view):]
                    sent += k
                    ahead = sent / (mbps * 1e6) - (time.perf_counter() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
        except BrokenPipeError:
            pass
        finally:
            os.close(fd)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def unblock(fifo: Path) -> None:
    """Let a feeder whose reader never came finish (open the read end once, without blocking)."""
    try:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    except OSError:
        pass


def models_yaml(path: Path, base: Path) -> Path:
    path.write_text(f"bench:\n  base_path: {str(base)!r}\n  checkpoints: checkpoints\n")
    return path


class Placement:
    """How the model reaches ComfyUI: `prepare()` (timed for the worker: it is part of its cold start) gives the worker's extra
    environment and bare ComfyUI's extra arguments for one run; `read()` is the plain read at the same speed."""

    def __init__(self, name: str, model: str):
        self.name, self.model = name, model

    def prepare(self, run: Path, worker: bool = True) -> tuple[dict, list[str]]:
        return {}, []

    def read(self, tmp: Path) -> float:
        raise NotImplementedError

    def done(self) -> None:
        pass


class Baked(Placement):
    def __init__(self, home: Path, big: Path):
        super().__init__("baked", "baked.safetensors")
        self.file = home / "models" / "checkpoints" / self.model
        self.file.parent.mkdir(parents=True, exist_ok=True)
        os.link(big, self.file)

    def prepare(self, run, worker=True):
        evict(self.file)
        return {}, []

    def read(self, tmp):
        evict(self.file)
        return read_all(self.file)


class Volume(Placement):
    def __init__(self, tmp: Path, big: Path, mbps: float):
        super().__init__("volume", "volume.safetensors")
        self.big, self.mbps = big, mbps
        self.dir = tmp / "volume"
        self.fifo = self.dir / "checkpoints" / self.model
        self.fifo.parent.mkdir(parents=True)
        os.mkfifo(self.fifo)
        self.yaml = models_yaml(tmp / "volume.yaml", self.dir)

    def prepare(self, run, worker=True):
        unblock(self.fifo)
        feed_fifo(self.fifo, self.big, self.mbps)
        return {"MODELS_DIR": str(self.dir)}, ["--extra-model-paths-config", str(self.yaml)]

    def read(self, tmp):
        unblock(self.fifo)
        feed_fifo(self.fifo, self.big, self.mbps)
        return read_all(self.fifo)

    def done(self):
        unblock(self.fifo)


class Cached(Placement):
    """RunPod's cached models: the file in a Hugging Face cache layout; the worker runs with COMFY_MODELS=cached and a
    lock naming the file by repository, commit and sha256, so handler/hfcache.py finds it, checks its sha256 (the
    stat cache of verified files is in the state folder, empty in a fresh container) and links it for ComfyUI."""

    REPO = "bench/coldstart"

    def __init__(self, tmp: Path, big: Path):
        super().__init__("cached", "cached.safetensors")
        self.hub = tmp / "hf" / "hub"
        repo = self.hub / ("models--" + self.REPO.replace("/", "--"))
        self.file = repo / "snapshots" / REV / self.model
        self.file.parent.mkdir(parents=True)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(REV)
        os.link(big, self.file)
        self.lock = write_lock(tmp / "proj", f"checkpoints/{self.model}", self.REPO, self.model, big)

    def prepare(self, run, worker=True):
        evict(self.file)
        if worker:
            return {"COMFY_MODELS": "cached", "COMFY_HF_CACHE": str(self.hub), "COMFY_HF_CACHED_MODEL": self.REPO,
                    "COMFYVER_LOCK": str(self.lock), "COMFYVER_VERSION_ID": "bench"}, []
        links = run / "links"  # bare ComfyUI: the same file through a link, nothing checked
        (links / "checkpoints").mkdir(parents=True)
        (links / "checkpoints" / self.model).symlink_to(self.file)
        return {}, ["--extra-model-paths-config", str(models_yaml(run / "cached.yaml", links))]

    def read(self, tmp):
        evict(self.file)
        return read_all(self.file)


def write_lock(root: Path, key: str, repo: str, path: str, big: Path) -> Path:
    """A lock of version `bench` whose one model `key` is `path` of Hugging Face `repo` at REV (hashed here, untimed)."""
    from comfyver.base import lockfile
    from comfyver.sources import modelstore

    from tests.test_push import make_project

    lock = make_project(root, "bench")
    lock["models"] = {key: {"original": {"url": f"hf://{repo}@{REV}/{path}"},
                            "locked": {"url": f"https://huggingface.co/{repo}/resolve/{REV}/{path}",
                                       "sha256": modelstore.file_sha256(big), "size": big.stat().st_size}}}
    out = root / "versions" / "bench" / "version.json"
    lockfile.write(out, lock)
    return out


def worker_run(home: Path, run: Path, placement: Placement, timeout: float = 600) -> tuple[float, float]:
    """Seconds from the worker's start to ComfyUI ready and to the waiting job's result (placement prepared
    inside the window)."""
    queue = JobQueue()
    queue.httpd.handle_error = lambda *a: None  # type: ignore[method-assign]  # the SDK's polls cut off by the kill
    _status, body = queue.handle("POST", "run", [], json.dumps({"input": {"workflow": workflow(placement.model)}}).encode())
    job_id = body["id"]
    t0 = time.perf_counter()
    extra_env, _ = placement.prepare(run)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("COMFY", "HF_", "MODELS_DIR"))}
    env = {**base, "COMFY_HOME": str(home), "COMFY_PORT": str(comfyui_support.free_port()),
           "OUTPUT_MODE": "base64", "COMFYUI_STATE_DIR": str(run / "state"), "RUNPOD_DEBUG_LEVEL": "ERROR",
           **queue.worker_env("bench"), **extra_env}
    p = subprocess.Popen([sys.executable, "-m", "handler"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, start_new_session=True)
    ready: list[float] = []
    log: list[bytes] = []

    def watch():
        assert p.stderr is not None
        for line in p.stderr:
            log.append(line)
            if not ready and b"handler: ComfyUI ready" in line:
                ready.append(time.perf_counter())
    threading.Thread(target=watch, daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        while queue.jobs[job_id]["status"] in ("IN_QUEUE", "IN_PROGRESS"):
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{placement.name}: the worker exited or timed out:\n"
                                   + b"".join(log[-30:]).decode("utf-8", "replace"))
            time.sleep(0.01)
        done = time.perf_counter()
        if queue.jobs[job_id]["status"] != "COMPLETED":
            raise RuntimeError(f"{placement.name}: the job failed: {queue.jobs[job_id]}")
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # the worker and the ComfyUI it started (its own process group)
        p.wait()
        queue.close()
    return ready[0] - t0, done - t0


def bare_run(home: Path, run: Path, placement: Placement, timeout: float = 600) -> tuple[float, float]:
    """Seconds from bare ComfyUI's start to /object_info answering, and to the same job's /history entry."""
    state = comfystate.prepare(run / "bare-state", home)
    _, extra_args = placement.prepare(run, worker=False)  # bare ComfyUI checks nothing: not timed
    t0 = time.perf_counter()
    c = comfyui_support.ComfyUI(home, args=comfystate.state_args(state) + extra_args, log=run / "bare.log",
                                env=comfystate.bytecode_env(project.cache_dir() / "pycache"))
    try:
        deadline = time.monotonic() + timeout
        while True:
            if c.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bare ComfyUI exited or timed out:\n{(run / 'bare.log').read_text()[-3000:]}")
            try:
                if requests.get(c.url + "/object_info", timeout=5).ok:
                    break
            except requests.RequestException:
                time.sleep(0.02)
        ready = time.perf_counter()
        r = requests.post(c.url + "/prompt", json={"prompt": workflow(placement.model)}, timeout=30)
        pid = r.json().get("prompt_id")
        if not pid:
            raise RuntimeError(f"bare ComfyUI refused the job: {r.text[:2000]}")
        while True:
            if c.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bare ComfyUI exited or timed out:\n{(run / 'bare.log').read_text()[-3000:]}")
            h = requests.get(f"{c.url}/history/{pid}", timeout=30).json()
            if pid in h:
                if h[pid]["status"]["status_str"] != "success":
                    raise RuntimeError(f"bare ComfyUI: the job failed: {h[pid]['status']}")
                break
            time.sleep(0.01)
        return ready - t0, time.perf_counter() - t0
    finally:
        c.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-gb", type=float, default=2.0, help="model size in GB (10^9 bytes; default 2)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per placement (medians are printed; default 2)")
    ap.add_argument("--volume-mbps", type=float, default=200.0,
                    help="read speed of the volume stand-in in MB/s (10^6 bytes; default 200)")
    a = ap.parse_args()
    size = int(a.model_gb * 1e9)
    tmp = Path(tempfile.mkdtemp(prefix="bench-coldstart-"))
    placements: list[Placement] = []
    rows = []
    try:
        free = shutil.disk_usage(tmp).free
        if free < size + (2 << 30):
            ap.error(f"--model-gb {a.model_gb}: {tmp} has {free / 1e9:.1f} GB free; give a smaller size")
        home = comfyui_support.copy_tree(tmp / "ComfyUI")
        (home / "custom_nodes" / "comfyver_bench_nodes").mkdir(parents=True)
        (home / "custom_nodes" / "comfyver_bench_nodes" / "__init__.py").write_text(NODE)
        big = tmp / "model.bin"
        print(f"model: {size / 1e9:.1f} GB of random bytes ...", flush=True)
        make_model(big, size)
        placements = [Baked(home, big), Volume(tmp, big, a.volume_mbps), Cached(tmp, big)]
        print("priming: one untimed bare start (ComfyUI's bytecode into the shared cache, as an image has it) ...",
              flush=True)
        bare_run(home, tmp / "prime-bare", placements[0])
        worker_run(home, tmp / "prime-worker", placements[0])
        for i, pl in enumerate(placements):
            print(f"{pl.name}: {a.rounds} round(s) of bare ComfyUI and the worker, then a plain read ...", flush=True)
            bare, worker = [], []
            for r in range(a.rounds):
                for side in ("bare", "worker") if r % 2 == 0 else ("worker", "bare"):
                    run = tmp / f"run-{i}-{r}-{side}"
                    (bare if side == "bare" else worker).append((bare_run if side == "bare" else worker_run)(home, run, pl))
            read = pl.read(tmp)
            pl.done()
            med = [statistics.median(x) for x in zip(*worker)] + [statistics.median(x) for x in zip(*bare)]
            rows.append((pl, *med, read))
    finally:
        for pl in placements:
            pl.done()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"cold start -> first job done, model {size / 1e9:.1f} GB, volume stand-in {a.volume_mbps:g} MB/s, "
          f"{os.cpu_count()} CPU(s), ComfyUI on the CPU; seconds, medians of {a.rounds} round(s)")
    head = ("placement", "start->ready", "first job", "total", "bare start", "bare job", "model read",
            "target", "check")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for pl, ready, total, b_start, b_total, read in rows:
        target = b_start + 1.0 + read
        print(f"| {pl.name} | {ready:.2f} | {total - ready:.2f} | {total:.2f} | {b_start:.2f} | {b_total - b_start:.2f} "
              f"| {read:.2f} | {target:.2f} | {'ok' if total <= target else 'MISSED'} ({total - target:+.2f}) |")
    print("start->ready: worker start to 'ComfyUI ready'; first job: from then to the job's result at the queue; "
          "bare start: main.py --cpu to /object_info; bare job: the same job there; target: bare start + 1 s + model "
          "read; check: total against it")
    print("cached: the worker's window includes handler/hfcache.py's sha256 check of the cached file (a fresh state "
          "folder: nothing verified yet), which also leaves it in the page cache for the job")
    return 0


if __name__ == "__main__":
    sys.exit(main())
