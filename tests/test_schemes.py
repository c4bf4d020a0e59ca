"""The model-source scheme table (sources/schemes.py) is the one place a scheme is known: every consumer reads
it, and a scheme without a row is a clear error at each of them (never silently another scheme's fetch)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from comfyver.base import lockfile, web
from comfyver.base.errors import ComfyverError, UsageError
from comfyver.sources import download, modelsource, modelstore, resolve, schemes

ROOT = Path(__file__).resolve().parents[1]
UNKNOWN = ["s3://bucket/models/x.safetensors", "ftp://host/x.bin", "az://c/x.bin", "HF2://o/r/x", "data:,abc"]
SHA = "a" * 64


@pytest.mark.parametrize("url", UNKNOWN)
def test_an_unknown_scheme_is_an_error_at_every_consumer(url, tmp_path, monkeypatch):
    monkeypatch.setenv("COMFYVER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UsageError, match="is not allowed"):
        modelsource.check_source(url, "t")
    with pytest.raises(UsageError, match="is not allowed"):
        modelsource.lock({"url": url}, "t")  # the lock's `else` once treated any scheme as gs://
    with pytest.raises(UsageError, match="is not allowed"):
        modelsource.lock({"url": url, "sha256": SHA, "size": 1}, "t")  # pinned offline
    with pytest.raises(UsageError, match="is not allowed"):
        resolve.parse_model_source(url)
    with pytest.raises(UsageError, match="is not allowed"):
        download.download(url, tmp_path / "x")  # download's `else` once treated any scheme as gs://
    with pytest.raises(UsageError, match="is not allowed"):
        modelstore.ensure(tmp_path / "store", "checkpoints/x", {"url": url, "sha256": SHA, "size": 1})
    with pytest.raises(ValueError, match="may not name"):
        schemes.check_untrusted(url)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.part").exists()


def test_a_lock_with_a_locked_url_of_an_unknown_scheme_is_refused():
    lock = {"schema": 1, "id": "x", "comfyui": {"original": {"type": "git", "url": "https://g/c", "ref": "v1"},
            "locked": {"type": "git", "url": "https://g/c", "rev": "0" * 40, "hash": "sha256-" + "A" * 43 + "=",
                       "submodules": False}},
            "nodes": {}, "models": {"checkpoints/x.safetensors": {"original": {"url": "s3://b/x"},
                                                                  "locked": {"url": "s3://b/x", "sha256": SHA, "size": 1}}},
            "python": {"requires": "==3.12.*", "torch": "cpu"}, "workflows": []}
    with pytest.raises(lockfile.LockError, match="models"):
        lockfile.validate(lock, "t")
    lock["models"]["checkpoints/x.safetensors"] = {"original": {"url": "gs://b/x"},
                                                   "locked": {"url": "gs://b/x", "sha256": SHA, "size": 1}}
    lockfile.validate(lock, "t")


def _pattern_schemes(pattern: str) -> set[str]:
    found = set()
    for alt in re.match(r"\^\((.*?)\)://", pattern).group(1).split("|"):
        found |= {"http", "https"} if alt == "https?" else {alt}
    return found


def test_the_lock_schema_allows_exactly_the_table_schemes():
    """An original may have any scheme of the table; a locked URL is fetched, so its scheme needs a fetch function."""
    text = lockfile.SCHEMA_FILE.read_text()
    defs = json.loads(text)["$defs"]
    assert _pattern_schemes(defs["lockedUrl"]["pattern"]) == set(schemes.fetchable())
    originals = [p for p in re.findall(r'"pattern": "(\^\([^"]*?\)://[^"]*)"', text) if "hf|" in p]
    assert originals and all(_pattern_schemes(json.loads(f'"{p}"')) == set(schemes.names()) for p in originals)


def test_the_nix_layer_knows_every_auth_kind():
    """Every `locked.auth` the table can write is one lock.nix accepts and models.nix has a token for."""
    lock_nix = (ROOT / "nix" / "lock.nix").read_text()
    models_nix = (ROOT / "nix" / "models.nix").read_text()
    enum = re.search(r'auth = if l \? auth then need id "\$\{field\}.locked.auth" \(v: elem v \[([^\]]*)\]', lock_nix)
    assert set(re.findall(r'"(\w+)"', enum.group(1))) == schemes.auth_kinds()
    tokens = re.search(r"tokenVar = \{([^}]*)\}", models_nix).group(1)
    assert set(re.findall(r"(\w+) =", tokens)) == schemes.auth_kinds()


def test_the_table_is_whole():
    for name, row in schemes.TABLE.items():
        assert row.name == name and callable(row.lock)
        assert row.fetch is not None or row.pin is not None, f"{name}: locks to another scheme's URL, so it pins"
        assert (row.form is None) == (not row.form_hint)
    assert set(schemes.untrusted()) == {"hf", "civitai", "http", "https"}  # never file:// or a bucket
    assert schemes.names() == modelsource.SCHEMES


def test_trust_is_read_from_the_table_only(monkeypatch):
    """base/web keeps no scheme list of its own: a row's `untrusted` is the only switch."""
    assert not hasattr(web, "UNTRUSTED_SCHEMES")
    with pytest.raises(ValueError, match="file://"):
        schemes.check_untrusted("file:///etc/passwd")
    schemes.check_untrusted("hf://o/r/x.safetensors")
    monkeypatch.setitem(schemes.TABLE, "hf", schemes.Scheme("hf", schemes.lock_hf, form=schemes.HF_RE,
                                                            form_hint="hf://...", auth="hf", pin=schemes.pin_hf))
    with pytest.raises(ValueError, match="hf://"):
        schemes.check_untrusted("hf://o/r/x.safetensors")


def test_a_new_row_is_all_it_takes(tmp_path, monkeypatch):
    """Adding a scheme = one row + its fetch function: check, lock, pin, download and trust all follow."""
    seen = []

    def fetch_mem(url, part, h, *, what, progress=None, **_):
        seen.append(url)
        with download.open_part(part, "ab") as f:
            f.write(b"hello")
        h.update(b"hello")
        return h

    monkeypatch.setenv("COMFYVER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(modelstore, "default_store", lambda: tmp_path / "store")
    monkeypatch.setitem(schemes.TABLE, "mem", schemes.Scheme("mem", schemes.lock_by_download, fetch=fetch_mem,
                                                             auth="gcs"))
    import hashlib
    sha = hashlib.sha256(b"hello").hexdigest()
    assert modelsource.lock({"url": "mem://b/x"}, "t") == {"url": "mem://b/x", "sha256": sha, "size": 5, "auth": "gcs"}
    assert modelsource.lock({"url": "mem://b/x", "sha256": sha, "size": 5}, "t")["auth"] == "gcs"
    assert download.download("mem://b/y", tmp_path / "y", sha256=sha) == sha
    assert seen == ["mem://b/x", "mem://b/y"]
    with pytest.raises(ValueError, match="may not name"):
        schemes.check_untrusted("mem://b/x")


def test_a_bad_form_names_the_scheme_form():
    with pytest.raises(UsageError, match=re.escape("hf://owner/repo[@rev]/path/to/file")):
        modelsource.check_source("hf://just-a-name", "t")
    with pytest.raises(UsageError, match="civitai://<modelVersionId>"):
        modelsource.check_source("civitai://abc", "t")
    for ok in ("civitai://123", "civitai://123/?file=a.safetensors", "civitai://123?file=a", f"civitai://sha256/{SHA}"):
        modelsource.check_source(ok, "t")
    with pytest.raises(ComfyverError):
        modelsource.pinned_without_download({"url": f"civitai://sha256/{SHA}", "sha256": SHA, "size": 1})
