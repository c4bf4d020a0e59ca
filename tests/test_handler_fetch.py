"""Inputs fetched by the worker: the connection goes to the address that was checked (SEC1: DNS rebinding)."""

from __future__ import annotations

import socket

import pytest

from handler import fetch
from handler.errors import JobError


def test_a_rebinding_resolver_cannot_reach_loopback(http_server, monkeypatch):
    """The host first resolves to a public address (checked, allowed), then to 127.0.0.1: the worker connects
    to the checked address only, so the local server (standing in for ComfyUI's own API) sees nothing."""
    (http_server.files_root / "system_stats").write_bytes(b"{}")
    port = int(http_server.url.rsplit(":", 1)[1])
    real = socket.getaddrinfo
    answers = iter(["93.184.216.34"])  # public, then loopback

    def rebinding(host, *a, **kw):
        if host == "rebind.example":
            ip = next(answers, "127.0.0.1")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]
        return real(host, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with pytest.raises(JobError) as e:
        fetch.fetch_url(f"http://rebind.example:{port}/system_stats", "images[0]", [], 1000, timeout=2)
    assert "cannot fetch" in e.value.message
    assert http_server.requests == []


def test_checked_address_is_used_with_the_host_header(http_server, monkeypatch):
    """Pinning the address keeps the URL's host as Host (virtual hosts still work)."""
    (http_server.files_root / "a.bin").write_bytes(b"payload")
    port = int(http_server.url.rsplit(":", 1)[1])
    monkeypatch.setattr(fetch, "check_url", lambda url, what, allow: ["127.0.0.1"])
    assert fetch.fetch_url(f"http://files.example:{port}/a.bin", "images[0]", [], 1000) == b"payload"
    assert http_server.requests[-1]["headers"]["Host"] == f"files.example:{port}"
