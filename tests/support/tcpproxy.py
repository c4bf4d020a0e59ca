"""A real TCP forwarder on 127.0.0.1: counts bytes sent to the target, can slow them down and can cut every
connection."""

from __future__ import annotations

import socket
import threading
import time


class TCPProxy:
    def __init__(self, target_port: int):
        self.target = target_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.conns: list[socket.socket] = []
        self.cuts = 0
        self.sent = 0  # bytes from clients to the target
        self.blackhole = False  # drop what the target sends (a gap: the client hears nothing, nothing errors)
        self.rate = 0  # bytes/s from clients to the target, all connections together (0: unlimited)
        self.dropped = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [c, u]
            threading.Thread(target=self._pipe, args=(c, u, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, False), daemon=True).start()

    def _pipe(self, src, dst, count):
        try:
            while data := src.recv(1 << 16):
                if not count and self.blackhole:
                    self.dropped += len(data)
                    continue
                if count and self.rate:
                    time.sleep(len(data) / self.rate)
                dst.sendall(data)
                if count:
                    with self.lock:
                        self.sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take(self) -> int:
        """Bytes sent to the target since the last call."""
        with self.lock:
            n, self.sent = self.sent, 0
        return n

    def cut_all(self):
        self.cuts += 1
        conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self):
        self.sock.close()
        self.cut_all()
