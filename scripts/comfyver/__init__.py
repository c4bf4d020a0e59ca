"""comfyver: reproducible ComfyUI environments, pinned by hash."""

__version__ = "0.1.0"
