"""HTTP plumbing shared by resolvers and downloads: endpoints, tokens, redaction.

Tokens come only from the environment (HF_TOKEN, CIVITAI_TOKEN). They are sent
as headers to their own service's host only, and `redact()` (base/redaction: the one secret list)
scrubs them from any text that might reach a log, an exception or a lock.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import NameResolutionError
from urllib3.util import connection as _u3conn

from comfyver import __version__
from comfyver.base.errors import ComfyverError, Reason, UsageError
from comfyver.base.redaction import redact as redact  # the one rule; web.redact is what callers import

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


# what a process that must hold no credential keeps of `env`: an allow-list, since a credential hides under any
# name (PIP_INDEX_URL with a password, GH_PAT, DATABASE_URL, AZURE_STORAGE_CONNECTION_STRING ...)
UNTRUSTED_ENV = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "NO_COLOR", "LD_LIBRARY_PATH",
    "OMP_NUM_THREADS", "VIRTUAL_ENV", "PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED",
    "PYTHONIOENCODING", "CUDA_VISIBLE_DEVICES",
    # the locale's own names only: sshd forwards any LC_* by default, and secrets are passed that way
    "LC_ALL", "LC_CTYPE", "LC_COLLATE", "LC_MESSAGES", "LC_MONETARY", "LC_NUMERIC", "LC_TIME", "LC_ADDRESS",
    "LC_IDENTIFICATION", "LC_MEASUREMENT", "LC_NAME", "LC_PAPER", "LC_TELEPHONE"})


def untrusted_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of `env` a process that must hold no credential gets (pack code in the probe, the page's
    ComfyUI in `comfyver ui`): the names in UNTRUSTED_ENV, whatever their values."""
    return {k: v for k, v in env.items() if k in UNTRUSTED_ENV}


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


def trusted_hosts() -> set[tuple[str, int | None]]:
    """(host, port or None = any) a workflow may lead to although they are local or private:
    COMFYVER_TRUSTED_HOSTS (`host` or `host:port`, a mirror) and the endpoints the user configured
    (HF_ENDPOINT, CIVITAI_ENDPOINT), at their own port only."""
    out = set()
    for entry in os.environ.get("COMFYVER_TRUSTED_HOSTS", "").split(","):
        if entry.strip():
            parts = urlsplit("//" + entry.strip())
            try:
                out.add(((parts.hostname or "").lower(), parts.port))
            except ValueError:
                continue
    for e in (hf_endpoint(), civitai_endpoint()):
        parts = urlsplit(e)
        if parts.hostname:
            out.add((parts.hostname.lower(), parts.port or (443 if parts.scheme == "https" else 80)))
    return out


def is_trusted(host: str, port: int | None) -> bool:
    host = host.lower().rstrip(".")
    return any(h == host and (p is None or p == port) for h, p in trusted_hosts())


CGNAT = ipaddress.ip_network("100.64.0.0/10")
# AWS/GCP/Azure IMDS, AWS IMDS over IPv6, Alibaba, Azure WireServer, Oracle's legacy
METADATA_ADDRESSES = {"169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16", "192.0.0.192"}
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def non_public_address(address: str) -> bool:
    """Loopback, private, link-local, reserved, multicast, unspecified, carrier-grade NAT or a cloud metadata
    address (an IPv4-mapped IPv6 address counts as its IPv4 address). The handler's fetches use it too."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):  # an IPv4 address carried in IPv6: judge the IPv4 address
        if ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        elif ip.sixtofour or ip.teredo:  # tunnels (2002::/16, 2001::/32) that can carry a private IPv4 address
            return True
        elif ip in NAT64:
            return non_public_address(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
    return (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_reserved or ip.is_multicast
            or ip.is_unspecified or str(ip) in METADATA_ADDRESSES or ip in CGNAT)


def _local_address(host: str) -> bool:
    try:
        addrs = [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        try:
            addrs = [str(a[4][0]) for a in socket.getaddrinfo(host, None)]
        except (socket.gaierror, UnicodeError, ValueError):
            return host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost")
    return any(non_public_address(a) for a in addrs)


def check_untrusted_source(url: str, schemes: tuple[str, ...]) -> None:
    """Raise ValueError unless `url`, taken from workflow content, has one of `schemes` (for a model source: the
    ones sources.schemes lets a workflow name) and, for http(s), a public host: a workflow cannot make comfyver
    read local files (file://) or reach this machine's network."""
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise ValueError(f"a workflow may not name a {parts.scheme or 'scheme-less'}:// source ({redact(url)!r}); "
                         f"allowed there: {', '.join(s + '://' for s in schemes)}")
    if parts.scheme in ("http", "https"):
        host = (parts.hostname or "").lower()
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ValueError(f"a workflow names a source with a bad port ({redact(url)!r})") from None
        if not host or (not is_trusted(host, port) and _local_address(host)):
            raise ValueError(f"a workflow may not name a source on a local or private host ({redact(url)!r}); "
                             "give it yourself with --model, or list the host in COMFYVER_TRUSTED_HOSTS")


class NonPublicAddress(ComfyverError):
    """A fetch for an untrusted source tried to connect to a local or private address."""


def _public_new_conn(self: HTTPConnection) -> socket.socket:
    """urllib3's _new_conn, but the host's addresses are checked first and the socket goes to a checked address:
    a redirect to a private host, or a second DNS answer (rebinding), cannot reach this machine's network."""
    host = self._dns_host.rstrip(".")
    if is_trusted(host, self.port):
        return HTTPConnection._new_conn(self)
    try:
        addrs = [str(ai[4][0]) for ai in socket.getaddrinfo(host, self.port, type=socket.SOCK_STREAM)]
    except socket.gaierror as e:
        raise NameResolutionError(self.host, self, e) from e
    bad = [a for a in addrs if non_public_address(a)]
    if bad or not addrs:
        raise NonPublicAddress(f"a source named by a workflow led to {host!r}, a local or private address "
                               f"({bad[0] if bad else 'none'}); refused",
                               hint="give the source yourself with --model, or list the host in COMFYVER_TRUSTED_HOSTS")
    return _u3conn.create_connection((addrs[0], self.port), self.timeout, source_address=self.source_address,
                                     socket_options=self.socket_options)


class _PublicHTTPConnection(HTTPConnection):
    _new_conn = _public_new_conn


class _PublicHTTPSConnection(HTTPSConnection):
    _new_conn = _public_new_conn


class _PublicHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _PublicHTTPConnection


class _PublicHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _PublicHTTPSConnection


class PublicOnlyAdapter(HTTPAdapter):
    """Every connection (each redirect hop included) goes to a checked public address. Behind a proxy, the proxy
    resolves names: each hop's host name is then checked by `check_untrusted_source` (see _check_redirect)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PublicHTTPPool, "https": _PublicHTTPSPool}


def _check_redirect(r: requests.Response, *args: Any, **kwargs: Any) -> None:
    if r.is_redirect and r.headers.get("Location"):
        target = urljoin(r.url, r.headers["Location"])
        try:
            check_untrusted_source(target, ("http", "https"))  # a hop: http(s) only
        except ValueError as exc:
            r.close()
            raise NonPublicAddress(f"a redirect from {redact(r.url)}: {exc}") from None


_session: requests.Session | None = None
_public_session: requests.Session | None = None
_untrusted = threading.local()


@contextmanager
def untrusted_fetches() -> Iterator[None]:
    """Within this block, on this thread, `session()` (so `get` and downloads) only reaches public addresses:
    for sources named by untrusted content (a workflow), checked at every hop and at connect time."""
    before = fetching_untrusted()
    _untrusted.on = True
    try:
        yield
    finally:
        _untrusted.on = before


def fetching_untrusted() -> bool:
    """Whether this thread is inside `untrusted_fetches()`."""
    return getattr(_untrusted, "on", False)


def withheld(fact: str) -> str:
    """`fact`, something a server answered, for an error message; withheld inside `untrusted_fetches()`: the
    source was named by a workflow, and its answer (size, sha256) may describe a host the user never chose."""
    return "(not shown: the source was named by a workflow)" if fetching_untrusted() else fact


def session() -> requests.Session:
    global _session, _public_session
    if fetching_untrusted():
        if _public_session is None:
            s = requests.Session()
            s.headers["User-Agent"] = USER_AGENT
            s.mount("http://", PublicOnlyAdapter())
            s.mount("https://", PublicOnlyAdapter())
            s.hooks["response"].append(_check_redirect)
            _public_session = s
        return _public_session
    if _session is None:
        s = requests.Session()
        s.headers["User-Agent"] = USER_AGENT
        s.trust_env = True
        _session = s
    return _session


def get(url: str, *, what: str, retries: int = 3, timeout: float = 30, stream: bool = False,
        headers: dict[str, str] | None = None, allow: tuple[int, ...] = ()) -> requests.Response:
    """GET with auth for the URL's own service, retries on 429/5xx and connection errors.

    Raises ComfyverError naming `what` and the (redacted) URL on failure;
    statuses in `allow` are returned instead of raised."""
    h = {**auth_headers(url), **(headers or {})}
    delay = 0.5
    for attempt in range(retries + 1):
        try:
            r = session().get(url, headers=h, timeout=timeout, stream=stream, allow_redirects=True)
        except NonPublicAddress as exc:  # a hop or an address untrusted_fetches() refused: name the input too
            raise NonPublicAddress(f"{what}: {exc.message}", hint=exc.hint) from None
        except requests.RequestException as exc:
            if attempt < retries:
                time.sleep(delay)
                delay *= 2
                continue
            raise TransientError(f"{what}: cannot reach {redact(url)}: {redact(type(exc).__name__ + ': ' + str(exc))}",
                                hint="check the URL and your network; offline runs need `comfyver fetch` first",
                                reason=Reason.UNREACHABLE) from None
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
