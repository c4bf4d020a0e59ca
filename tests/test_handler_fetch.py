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


@pytest.mark.parametrize("address, private", [
    ("2002:7f00:1::", True),         # 6to4 carrying 127.0.0.1
    ("2002:0808:0808::", True),      # 6to4 at all: a tunnel, not a public origin
    ("2001:0:4136:e378::1", True),   # Teredo
    ("64:ff9b::a9fe:a9fe", True),    # NAT64 of 169.254.169.254
    ("64:ff9b::808:808", False),     # NAT64 of 8.8.8.8
    ("168.63.129.16", True),         # Azure WireServer
    ("::ffff:10.0.0.1", True),
    ("93.184.216.34", False),
])
def test_addresses_that_carry_a_private_one_are_not_public(address, private):
    from comfyver.base.web import non_public_address

    assert non_public_address(address) is private


@pytest.mark.parametrize("value, ok", [
    ("DATA:image/png;BASE64,aGVsbG8=", True),     # RFC 2397 is case-insensitive
    ("data:image/png;Base64,aGVsbG8=", True),
])
def test_data_uris_are_read_case_insensitively(value, ok):
    from handler import fetch

    assert fetch.decode_image(value, "images[0]", [], 100) == b"hello"


def test_the_size_limit_counts_decoded_bytes_not_padding():
    from handler import fetch
    from handler.errors import JobError

    assert fetch.decode_image("aGVsbG8=", "images[0]", [], 5) == b"hello"  # 5 bytes: 8 chars, 1 padding
    with pytest.raises(JobError, match="larger than 4 bytes"):
        fetch.decode_image("aGVsbG8=", "images[0]", [], 4)


@pytest.mark.parametrize("name", ["image.png.", "image.png ", "x."])
def test_names_a_file_system_would_strip_are_refused(name):
    from handler import fetch
    from handler.errors import JobError

    with pytest.raises(JobError, match="not allowed"):
        fetch.safe_name(name, "images[0].name")
