"""Inputs from outside: URLs (http/https only, no private addresses unless allowed) and base64 images."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import urllib3
from comfyver.base.web import non_public_address

from handler.errors import JobError, bad_input, redact

METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data", "metadata.azure.com"}
# a plain file name: letters and digits of any script, spaces and . _ - ( ) [ ] + , ; no folders, not hidden
SAFE_NAME = re.compile(r"^[^\W_][\w.() \[\]+,-]{0,200}\Z")


def _host_allowed(host: str, allow: list[str]) -> bool:
    for entry in allow:
        if entry.lower() == host.lower():
            return True
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def check_url(url: str, what: str, allow: list[str]) -> list[str] | None:
    """Refuse non-http(s) schemes and hosts that resolve to loopback, private, link-local or metadata addresses;
    return the checked addresses to connect to (None for a host in ALLOWED_FETCH_HOSTS: resolved as usual)."""
    if not isinstance(url, str) or not url:
        raise bad_input(f"{what}: expected a URL string")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError as exc:  # from the job or from a server's redirect: bad input either way
        raise bad_input(f"{what}: {redact(url)!r} is not a valid URL ({exc})", "check the URL") from None
    if parts.scheme not in ("http", "https"):
        raise bad_input(f"{what}: URL scheme {parts.scheme or '(none)'!r} is not allowed in {redact(url)!r}",
                        "use an http:// or https:// URL")
    host = parts.hostname
    if not host:
        raise bad_input(f"{what}: URL {redact(url)!r} has no host")
    if _host_allowed(host, allow):
        return None
    if host.lower() in METADATA_HOSTS:
        raise bad_input(f"{what}: {host} is a cloud metadata address; refused", "use a public URL")
    try:
        # an IPv4/IPv6 sockaddr starts with the address as text (typeshed also allows AF_PACKET's int)
        addrs = {str(ai[4][0]) for ai in socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)}
    except (socket.gaierror, UnicodeError) as exc:
        raise bad_input(f"{what}: cannot resolve host {host!r} ({exc})", "check the URL") from None
    for a in addrs:
        if non_public_address(a):
            raise bad_input(f"{what}: host {host!r} resolves to a non-public address ({a}); refused",
                            "use a public URL, or list the host in ALLOWED_FETCH_HOSTS")
    return sorted(addrs)


def _open(url: str, address: str | None, timeout: float) -> urllib3.BaseHTTPResponse:
    """GET `url` without following redirects. With `address`, connect to exactly that address (the one
    check_url approved; a second DNS answer cannot rebind it), sending the URL's host as Host and TLS name."""
    parts = urlsplit(url)
    if address is None:
        return urllib3.PoolManager(retries=False).urlopen("GET", url, redirect=False, preload_content=False,
                                                           timeout=urllib3.Timeout(connect=timeout, read=timeout))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    pool_timeout = urllib3.Timeout(connect=timeout, read=timeout)
    pool: urllib3.HTTPConnectionPool
    if parts.scheme == "https":
        import certifi
        pool = urllib3.HTTPSConnectionPool(address, port, server_hostname=parts.hostname,
                                           assert_hostname=parts.hostname, cert_reqs="CERT_REQUIRED",
                                           ca_certs=os.environ.get("REQUESTS_CA_BUNDLE") or certifi.where(),
                                           timeout=pool_timeout, retries=False)
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=pool_timeout, retries=False)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return pool.urlopen("GET", target, headers={"Host": parts.netloc.rsplit("@", 1)[-1]}, redirect=False,
                        preload_content=False)


def fetch_url(url: str, what: str, allow: list[str], max_bytes: int, timeout: float = 60,
              deadline: float | None = None, stop: threading.Event | None = None,
              sink: Callable[[bytes], object] | None = None,
              too_large_hint: str = "send a smaller file or raise MAX_INPUT_BYTES") -> bytes:
    """GET `url`, re-checking every redirect hop, reading at most `max_bytes`, done by `deadline`
    (time.monotonic(); the job's own timeout) or raise a `timeout` JobError; `stop` set: give up at the
    next read (the job was cancelled or the worker is stopping). With `sink`, each piece goes to it as it
    arrives (a large file is never held in memory; per-job models) and b"" is returned."""
    def left() -> float:
        if stop is not None and stop.is_set():
            raise JobError("cancelled", f"{what}: the download of {redact(url)} was stopped")
        if deadline is None:
            return timeout
        rest = deadline - time.monotonic()
        if rest <= 0:
            raise JobError("timeout", f"{what}: downloading {redact(url)} did not finish within the job's timeout",
                           hint="raise `timeout`, or send a smaller or faster input")
        return min(timeout, rest)

    for _ in range(6):
        addrs = check_url(url, what, allow)
        address = addrs[0] if addrs else None
        try:
            r = _open(url, address, left())
        except urllib3.exceptions.HTTPError as exc:
            if deadline is not None:
                left()
            raise bad_input(f"{what}: cannot fetch {redact(url)}: {type(exc).__name__}",
                            "check that the URL is reachable from the worker") from None
        try:
            if r.status in (301, 302, 303, 307, 308) and r.headers.get("Location"):
                url = urljoin(url, r.headers["Location"])
                continue
            if r.status != 200:
                raise bad_input(f"{what}: HTTP {r.status} from {redact(url)}", "check the URL")
            buf = bytearray()
            got = 0
            try:
                # read1: whatever has arrived (a dripping server cannot hold one read past the deadline)
                while chunk := r.read1(1 << 16):
                    got += len(chunk)
                    left()
                    if got > max_bytes:
                        raise bad_input(f"{what}: {redact(url)} is larger than {max_bytes} bytes", too_large_hint)
                    if sink is None:
                        buf += chunk
                    else:
                        sink(chunk)
            except urllib3.exceptions.HTTPError as exc:  # cut, truncated, too slow
                left()
                raise bad_input(f"{what}: the download of {redact(url)} broke off after {got} bytes "
                                f"({type(exc).__name__})", "check the URL and resubmit") from None
            return bytes(buf)
        finally:
            r.release_conn()
    raise bad_input(f"{what}: too many redirects from {redact(url)}")


# ComfyUI reads `name [output]` / `name[temp]` as another folder's file (folder_paths.annotated_filepath)
ANNOTATED = re.compile(r"\[(input|output|temp)\]$")


def safe_name(name, what: str) -> str:
    """An input file name: no folders, no traversal, no hidden files, no folder annotation, at most 200 bytes
    (the file system's limit leaves room for the temporary name beside it)."""
    if (not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name or ANNOTATED.search(name)
            or len(name.encode()) > 200 or name.endswith((".", " "))):  # Windows and SMB strip a trailing dot/space
        raise bad_input(f"{what}: file name {name!r} is not allowed",
                        "use a plain file name like 'input (1).png' (letters, digits, spaces, . _ - ( ) [ ] + ,; "
                        "no folders)")
    return name


def decode_image(value, what: str, allow: list[str], max_bytes: int, deadline: float | None = None,
                 stop: threading.Event | None = None) -> bytes:
    """Bytes of an input image given as base64, a data: URI, or an http(s) URL."""
    if not isinstance(value, str) or not value:
        raise bad_input(f"{what}: expected base64 text, a data: URI or an http(s) URL")
    if value[:8].lower().startswith(("http://", "https://")):
        return fetch_url(value, what, allow, max_bytes, deadline=deadline, stop=stop)
    if value[:5].lower() == "data:":  # RFC 2397: the scheme and ";base64" are case-insensitive
        head, sep, value = value.partition(",")
        if not sep or not head.lower().endswith(";base64"):
            raise bad_input(f"{what}: data: URI must be base64 (data:image/png;base64,...)")
    elif re.match(r"^[a-z][a-z0-9+.-]*://", value, re.I):
        raise bad_input(f"{what}: URL scheme {value.split(':', 1)[0]!r} is not allowed", "use http(s) or base64")
    value = re.sub(r"\s+", "", value)  # base64 wrapped in lines (as `base64` writes it)
    if len(value) * 3 // 4 - value[-2:].count("=") > max_bytes:  # the decoded size, padding excluded
        raise bad_input(f"{what}: image is larger than {max_bytes} bytes", "send a smaller file or raise MAX_INPUT_BYTES")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad_input(f"{what}: not valid base64", "encode the file bytes with base64 (no line breaks)") from None
    if not data:
        raise bad_input(f"{what}: image is empty")
    return data
