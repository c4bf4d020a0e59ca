"""Subprocesses the tests drive: wait for a line or a condition without ever blocking past a deadline."""

from __future__ import annotations

import queue
import signal
import subprocess
import threading
import time


class Watched:
    """A Popen whose stdout and stderr are read in threads, so a test can wait for a line and still collect all."""

    def __init__(self, argv: list[str], **kw):
        # SIGINT as a terminal would deliver it: a test run in the background (`cmd &` in a script) starts
        # with SIGINT ignored, which children inherit and Python then keeps ignoring
        kw.setdefault("preexec_fn", lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
        self.out: list[str] = []
        self.err: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self._readers = [threading.Thread(target=self._read, args=(s, b), daemon=True)
                         for s, b in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()

    def _read(self, stream, buf: list[str]) -> None:
        for line in stream:
            buf.append(line)
            self._lines.put(line)
        stream.close()

    def output(self) -> tuple[str, str]:
        return "".join(self.out), "".join(self.err)

    def kill(self) -> tuple[str, str]:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for t in self._readers:
            t.join(5)
        return self.output()

    def wait_line(self, needle: str, timeout: float) -> str:
        """The first line (stdout or stderr) containing `needle`; on timeout or exit, kill and fail with the output."""
        deadline = time.monotonic() + timeout
        seen = [line for line in self.out + self.err if needle in line]
        if seen:
            return seen[0]
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self._lines.empty():
                    break
                continue
            if needle in line:
                return line
        raise AssertionError(f"no line with {needle!r} (exit {self.proc.poll()}): {self.kill()}")

    def until(self, cond, timeout: float, what: str) -> None:
        """Wait for `cond()`; on timeout or early exit, kill the process and fail with its output (never hang)."""
        deadline = time.monotonic() + timeout
        while not cond():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{what}: not seen (exit {self.proc.poll()}): {self.kill()}")
            time.sleep(0.05)

    def communicate(self, timeout: float) -> tuple[str, str]:
        """Wait for exit; on timeout kill and fail with the output."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit within {timeout:g} s: {self.kill()}") from None
        for t in self._readers:
            t.join(5)
        return self.output()

    @property
    def returncode(self):
        return self.proc.returncode

    def poll(self):
        return self.proc.poll()

    def send_signal(self, sig) -> None:
        self.proc.send_signal(sig)
