"""Masking in the handler's errors and logs: every credential-looking value (SEC3)."""

from __future__ import annotations

import pytest

from handler.errors import redact


def test_presigned_and_token_query_values_are_masked():
    url = ("https://b.s3.amazonaws.com/k.png?X-Amz-Security-Token=FwoGZXIvYXdzEJr&X-Amz-Credential=AKIA%2F2026"
           "&X-Amz-Signature=abc123&access_token=ya29.secret&plain=keep")
    out = redact(url)
    for secret in ("FwoGZXIvYXdzEJr", "AKIA%2F2026", "abc123", "ya29.secret"):
        assert secret not in out
    assert "plain=keep" in out


def test_secret_variables_the_worker_reads_are_masked(monkeypatch):
    monkeypatch.setenv("COMFY_ORG_API_KEY", "comfyui-orgkey-1234567")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "IQoJb3JpZ2luX2VjEXAMPLE")
    monkeypatch.setenv("MY_VENDOR_TOKEN", "vendor-secret-987")
    text = redact("key comfyui-orgkey-1234567 session IQoJb3JpZ2luX2VjEXAMPLE vendor vendor-secret-987")
    assert "1234567" not in text and "EXAMPLE" not in text and "987" not in text


def test_bare_token_userinfo_is_masked():
    assert redact("GET https://hf_abcdef123@host/x failed") == "GET https://***@host/x failed"


# -- one rule: the handler, comfyver's messages and the lock's URL check read base/redaction only (issue 29)

def test_the_handler_and_comfyver_mask_with_one_function():
    from comfyver.base import lockfile, redaction, web

    from handler import errors

    assert errors.redact is redaction.redact and web.redact is redaction.redact
    assert lockfile.redact_url is redaction.redact_url
    for mod in (errors, web, lockfile):  # no second list of names or query keys comes back
        assert not any(hasattr(mod, n) for n in ("SECRET_ENV", "SECRET_NAME", "SECRET_PARAM", "SECRET_QUERY_KEYS",
                                                  "_secrets", "_secret_values"))


def test_every_listed_and_credential_named_variable_is_masked_everywhere(monkeypatch):
    from comfyver.base import lockfile, redaction, web

    names = list(redaction.SECRET_ENV) + ["MY_VENDOR_TOKEN", "DB_PASSWORD", "X_PRIVATE_KEY"]
    for i, n in enumerate(names):
        monkeypatch.setenv(n, f"s3cr3t-value-{i:03d}")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # named like one, says nothing secret
    text = " ".join(f"s3cr3t-value-{i:03d}" for i in range(len(names))) + " false"
    for fn in (redact, web.redact):
        assert fn(text) == " ".join(["***"] * len(names)) + " false"
    assert "s3cr3t" not in lockfile.redact_url("https://h/x?plain=s3cr3t-value-000")


def test_secret_query_keys_are_one_list_for_masking_and_for_the_lock():
    from comfyver.base import lockfile, redaction

    for key in ("token", "access_token", "api_key", "apikey", "key", "sig", "signature", "X-Goog-Signature",
                "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "password", "AWSAccessKeyId", "auth"):
        assert redaction.is_secret_query_key(key)
        assert "zzzz" not in redact(f"https://h/x?{key}=zzzz")
        assert "zzzz" not in lockfile.redact_url(f"https://h/x?{key}=zzzz")
        with pytest.raises(ValueError, match="secret query parameter"):
            lockfile.check_url_has_no_secret(f"https://h/x?{key}=zzzz")
    for key in ("file", "type", "format", "download", "size", "fp"):
        assert not redaction.is_secret_query_key(key)
        assert redact(f"https://h/x?{key}=zzzz").endswith("zzzz")
        lockfile.check_url_has_no_secret(f"https://h/x?{key}=zzzz")


def test_a_value_with_control_characters_is_masked_in_its_escaped_and_split_forms(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "line-one\nline-two")
    out = redact("a 'line-one\\nline-two' b line-one c line-two")
    assert "line-" not in out
