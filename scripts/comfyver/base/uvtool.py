"""The `uv` binary comfyver runs: the one shipped by the `uv` package (a dependency), found with its own API."""

from __future__ import annotations

from comfyver.base.errors import ComfyverError


def uv_bin() -> str:
    """Path of the uv executable installed with comfyver (`uv.find_uv_bin()`), not whatever `uv` is on PATH."""
    try:
        import uv
        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError) as exc:
        raise ComfyverError(f"the `uv` package comfyver depends on is missing or broken ({exc})",
                            hint="reinstall comfyver: pip install -e . (it installs uv)") from None
