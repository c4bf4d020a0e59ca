"""Credentials in URLs are refused before any use or write (a bare token as userinfo included)."""

from __future__ import annotations

import pytest
from comfyver.base import project, web
from comfyver.base.errors import UsageError
from comfyver.sources import gitsource, modelsource


@pytest.mark.parametrize("url", ["https://hf_SECRETTOKEN@127.0.0.1:9/x.git", "https://u:p@127.0.0.1:9/x.git",
                                 "http://hf_SECRETTOKEN@127.0.0.1:9/x.git"])
def test_git_url_with_userinfo_is_refused_before_anything_is_written(url):
    with pytest.raises(UsageError, match="carries credentials") as e:
        gitsource.lock({"type": "git", "url": url, "ref": "main"}, "nodes.x")
    assert "SECRETTOKEN" not in str(e.value) and ":p@" not in str(e.value)
    cache = project.cache_dir()
    assert not (cache / "resolve.sqlite").exists() and not (cache / "git").exists()


def test_ssh_user_is_not_a_secret():
    assert gitsource.check_url("ssh://git@example.com/org/repo.git", "t")


@pytest.mark.parametrize("url", ["https://hf_SECRETTOKEN@127.0.0.1:9/m.safetensors",
                                 "https://user:pw@127.0.0.1:9/m.safetensors"])
def test_model_url_with_userinfo_is_refused(url):
    with pytest.raises(UsageError, match="carries credentials") as e:
        modelsource.lock({"url": url}, "models.checkpoints/m.safetensors")
    assert "SECRETTOKEN" not in str(e.value)


def test_redact_masks_a_bare_token_as_userinfo():
    assert web.redact("fetching https://hf_SECRETTOKEN@host/x") == "fetching https://***@host/x"
