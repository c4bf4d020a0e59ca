"""Masking in the handler's errors and logs: every credential-looking value (SEC3)."""

from __future__ import annotations

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
