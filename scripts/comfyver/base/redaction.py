"""What is a secret, and masking it: the one list for comfyver's messages, the handler's errors and logs, and
the lock's refusal of URLs that carry a credential. Standard library only (the handler imports it).

A secret is: the value of a credential variable (named below, or any variable named like one: *TOKEN*,
*SECRET*, *PASSWORD*, *API_KEY*, ...), with the escaped and line-split forms a value with control characters
takes in a repr or a log; the userinfo of a URL (`https://TOKEN@host`); the value of a query parameter named
like a credential (presigned URLs: X-Amz-Security-Token, X-Goog-Credential, sig, access_token, ...).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

# the credentials comfyver and the worker read, by name
SECRET_ENV = ("HF_TOKEN", "CIVITAI_TOKEN", "RUNPOD_API_KEY", "RUNPOD_AI_API_KEY", "BUCKET_SECRET_ACCESS_KEY",
              "BUCKET_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN",
              "RUNPOD_S3_ACCESS_KEY", "RUNPOD_S3_SECRET_KEY", "GCS_HMAC_SECRET", "COMFY_ORG_API_KEY",
              "REGISTRY_PASSWORD", "GOOGLE_OAUTH_ACCESS_TOKEN")
# any other variable named like a credential is masked too
SECRET_NAME = re.compile(r"(?i)(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIALS?)")
# values of such a variable that say nothing secret (TOKENIZERS_PARALLELISM=false): never masked in all text
NOT_SECRET_VALUES = frozenset({"true", "false", "none", "null"})
# a query parameter whose value is a credential
_KEY = r"[^=&\s\"']*(?:signature|token|key|sig|secret|credential|password|auth)[^=&\s\"']*"
SECRET_QUERY_KEY = re.compile("(?i)" + _KEY)
_SECRET_PARAM = re.compile(r"(?i)([?&]" + _KEY + r"=)[^&\s\"']+")
_USERINFO = re.compile(r"(://)[^/\s@]+@")
MIN_LEN = 4  # shorter values would mask ordinary words


def is_secret_query_key(name: str) -> bool:
    return bool(SECRET_QUERY_KEY.fullmatch(name))


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """The secret values in `env` (default os.environ), longest first, with their escaped/split forms."""
    env = os.environ if env is None else env
    values = {v for n in SECRET_ENV if (v := env.get(n))}
    values |= {v for n, v in env.items() if SECRET_NAME.search(n) and v and v.lower() not in NOT_SECRET_VALUES}
    values = {v for v in values if v and len(v) >= MIN_LEN}
    # a value with control characters may come back escaped (repr) or split over lines: mask those forms too
    extra = {f for v in values if not v.isprintable()
             for f in (v.encode("unicode_escape").decode(), *v.splitlines()) if len(f) >= MIN_LEN}
    return sorted(values | extra, key=len, reverse=True)


def redact(text: object) -> str:
    """`text` (anything: str() of it) with every secret value, URL userinfo and credential query value masked."""
    if not isinstance(text, str):
        text = str(text)
    for v in secret_values():
        text = text.replace(v, "***")
    text = _USERINFO.sub(r"\1***@", text)
    return _SECRET_PARAM.sub(r"\1***", text)


def redact_url(url: str) -> str:
    """A URL for a message: no userinfo at all, credential query values masked, secret values masked."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
    except ValueError:
        return "<unparseable url>"
    q = "&".join(
        f"{k}=***" if is_secret_query_key(k) else (f"{k}={v}" if v else k)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return redact(parts._replace(netloc=netloc, query=q).geturl())
