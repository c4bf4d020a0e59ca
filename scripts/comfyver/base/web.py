"""HTTP plumbing shared by resolvers and downloads: endpoints, tokens, redaction.

Tokens come only from the environment (HF_TOKEN, CIVITAI_TOKEN). They are sent
as headers to their own service's host only, and `redact()` scrubs them from
any text that might reach a log, an exception or a lock.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import time
from urllib.parse import urlsplit

import requests

from comfyver import __version__
from comfyver.base.errors import ComfyverError, UsageError

USER_AGENT = f"comfyver/{__version__}"
TOKEN_ENV = {"hf": "HF_TOKEN", "civitai": "CIVITAI_TOKEN"}
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class TransientError(ComfyverError):
    """A failure worth retrying later: no connection, 429, 5xx."""


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def civitai_endpoint() -> str:
    return os.environ.get("CIVITAI_ENDPOINT", "https://civitai.com").rstrip("/")


def registry_endpoint() -> str:
    return os.environ.get("COMFY_REGISTRY_URL", "https://api.comfy.org").rstrip("/")


def _secrets() -> list[str]:
    names = list(TOKEN_ENV.values()) + ["RUNPOD_API_KEY", "BUCKET_SECRET_ACCESS_KEY", "BUCKET_ACCESS_KEY_ID",
                                        "AWS_SECRET_ACCESS_KEY", "REGISTRY_PASSWORD"]
    return [v for v in (os.environ.get(n) for n in names) if v and len(v) >= 4]


def redact(text: str) -> str:
    """Mask every token from the environment, and URL userinfo, in `text`."""
    for s in _secrets():
        text = text.replace(s, "***")
    return re.sub(r"(://)[^/\s@]+@", r"\1***@", text)


def auth_kind_for(url: str) -> str | None:
    """Which token (if any) a URL's host gets: HF_TOKEN for the HF endpoint, CIVITAI_TOKEN for Civitai."""
    host = urlsplit(url).netloc
    if host and host == urlsplit(hf_endpoint()).netloc:
        return "hf"
    if host and host == urlsplit(civitai_endpoint()).netloc:
        return "civitai"
    return None


def auth_headers(url: str) -> dict[str, str]:
    kind = auth_kind_for(url)
    token = os.environ.get(TOKEN_ENV[kind]) if kind else None
    return {"Authorization": f"Bearer {token}"} if token else {}


def check_scheme(url: str, allowed: tuple[str, ...], what: str) -> str:
    """`url` if its scheme is allowed and it carries no userinfo (a token as `https://TOKEN@host` included)."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise UsageError(f"{what}: {redact(url)!r} carries credentials in the URL (refused before any use)",
                         hint="tokens come from the environment (HF_TOKEN, CIVITAI_TOKEN, ...), never from a URL")
    scheme = parts.scheme
    if scheme not in allowed:
        raise UsageError(f"{what}: URL scheme {scheme + '://' if scheme else '(none)'} is not allowed in {redact(url)!r}",
                         hint=f"use one of: {', '.join(s + '://' for s in allowed)}")
    return url


# Sources named by workflow content (untrusted: a downloaded workflow) may only be these
UNTRUSTED_SCHEMES = ("https", "http", "hf", "civitai")


def trusted_hosts() -> set[str]:
    """COMFYVER_TRUSTED_HOSTS: hosts a workflow may name although they are local or private (a mirror)."""
    return {h.strip().lower() for h in os.environ.get("COMFYVER_TRUSTED_HOSTS", "").split(",") if h.strip()}


CGNAT = ipaddress.ip_network("100.64.0.0/10")
METADATA_ADDRESSES = {"169.254.169.254", "fd00:ec2::254", "100.100.100.200"}


def non_public_address(address: str) -> bool:
    """Loopback, private, link-local, reserved, multicast, unspecified, carrier-grade NAT or a cloud metadata
    address (an IPv4-mapped IPv6 address counts as its IPv4 address). The handler's fetches use it too."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    return (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_reserved or ip.is_multicast
            or ip.is_unspecified or str(ip) in METADATA_ADDRESSES or ip in CGNAT)


def _local_address(host: str) -> bool:
    try:
        addrs = [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        try:
            addrs = [a[4][0] for a in socket.getaddrinfo(host, None)]
        except (socket.gaierror, UnicodeError, ValueError):
            return host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost")
    return any(non_public_address(a) for a in addrs)


def check_untrusted_source(url: str) -> None:
    """Raise ValueError unless `url`, taken from workflow content, is hf://, civitai:// or http(s) on a public
    host: a workflow cannot make comfyver read local files (file://) or reach this machine's network."""
    parts = urlsplit(url)
    if parts.scheme not in UNTRUSTED_SCHEMES:
        raise ValueError(f"a workflow may not name a {parts.scheme or 'scheme-less'}:// source ({redact(url)!r}); "
                         f"allowed there: {', '.join(s + '://' for s in UNTRUSTED_SCHEMES)}")
    if parts.scheme in ("http", "https"):
        host = (parts.hostname or "").lower()
        if not host or (host not in trusted_hosts() and _local_address(host)):
            raise ValueError(f"a workflow may not name a source on a local or private host ({redact(url)!r}); "
                             "give it yourself with --model, or list the host in COMFYVER_TRUSTED_HOSTS")


_session: requests.Session | None = None


def session() -> requests.Session:
    global _session
    if _session is None:
        s = requests.Session()
        s.headers["User-Agent"] = USER_AGENT
        s.trust_env = True
        _session = s
    return _session


def get(url: str, *, what: str, retries: int = 3, timeout: float = 30, stream: bool = False,
        headers: dict | None = None, allow: tuple[int, ...] = ()) -> requests.Response:
    """GET with auth for the URL's own service, retries on 429/5xx and connection errors.

    Raises ComfyverError naming `what` and the (redacted) URL on failure;
    statuses in `allow` are returned instead of raised."""
    h = {**auth_headers(url), **(headers or {})}
    delay = 0.5
    for attempt in range(retries + 1):
        try:
            r = session().get(url, headers=h, timeout=timeout, stream=stream, allow_redirects=True)
        except requests.RequestException as exc:
            if attempt < retries:
                time.sleep(delay)
                delay *= 2
                continue
            raise TransientError(f"{what}: cannot reach {redact(url)}: {redact(type(exc).__name__ + ': ' + str(exc))}",
                                hint="check the URL and your network; offline runs need `comfyver fetch` first") from None
        if r.status_code in RETRY_STATUS and attempt < retries:
            r.close()
            time.sleep(float(r.headers.get("Retry-After", delay)) if r.headers.get("Retry-After", "").isdigit() else delay)
            delay *= 2
            continue
        if r.status_code >= 400 and r.status_code not in allow:
            hint = None
            if r.status_code in (401, 403):
                kind = auth_kind_for(url)
                hint = (f"set {TOKEN_ENV[kind]} to a token that can read this" if kind
                        else "the server refused access")
            elif r.status_code == 404:
                hint = "check the name, revision or version"
            r.close()
            error = TransientError if r.status_code in RETRY_STATUS else ComfyverError
            raise error(f"{what}: HTTP {r.status_code} from {redact(url)}", hint=hint)
        return r
    raise AssertionError("unreachable")


def get_json(url: str, *, what: str, allow: tuple[int, ...] = ()) -> tuple[int, object]:
    r = get(url, what=what, allow=allow)
    if r.status_code >= 400:
        return r.status_code, None
    try:
        return r.status_code, r.json()
    except ValueError:
        raise ComfyverError(f"{what}: {redact(url)} did not return JSON") from None
