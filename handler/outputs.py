"""What a workflow saved: every file ComfyUI reports (images, animations, video, audio, 3D, text) and inline text."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import PurePosixPath

KIND_BY_EXT = {
    **dict.fromkeys(("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"), "image"),
    **dict.fromkeys(("gif", "mp4", "webm", "mov", "mkv", "avi", "apng"), "video"),
    **dict.fromkeys(("wav", "flac", "mp3", "ogg", "opus", "m4a", "aac"), "audio"),
    **dict.fromkeys(("glb", "gltf", "obj", "ply", "stl", "fbx", "usdz"), "3d"),
    **dict.fromkeys(("txt", "json", "csv", "md", "srt"), "text"),
}
KIND_BY_KEY = {"images": "image", "gifs": "video", "video": "video", "videos": "video", "audio": "audio", "3d": "3d",
               "meshes": "3d", "text": "text"}
TEXT_KEYS = ("text", "string", "strings")
CONTENT_TYPES = {"webp": "image/webp", "glb": "model/gltf-binary", "gltf": "model/gltf+json", "webm": "video/webm",
                 "opus": "audio/ogg", "flac": "audio/flac"}


@dataclass
class OutputFile:
    node_id: str
    kind: str
    filename: str
    subfolder: str
    type: str  # ComfyUI folder: output | temp

    @property
    def content_type(self) -> str:
        ext = self.filename.rsplit(".", 1)[-1].lower()
        return CONTENT_TYPES.get(ext) or mimetypes.guess_type(self.filename)[0] or "application/octet-stream"


def collect(ui_outputs: dict, include_temp: bool = False) -> tuple[list[OutputFile], list[dict]]:
    """Files and inline texts from `{node_id: ui}` (ws `executed` data or /history outputs)."""
    files, texts = [], []
    for node_id, ui in ui_outputs.items():
        if not isinstance(ui, dict):
            continue
        animated = any(ui.get("animated") or [])
        for key, items in ui.items():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("filename"), str):
                    if item.get("type", "output") == "temp" and not include_temp:
                        continue
                    ext = item["filename"].rsplit(".", 1)[-1].lower()
                    kind = KIND_BY_EXT.get(ext) or KIND_BY_KEY.get(key, "file")
                    if animated and kind == "image" and key == "images":
                        kind = "video"
                    files.append(OutputFile(str(node_id), kind, item["filename"], item.get("subfolder") or "",
                                            item.get("type") or "output"))
                elif isinstance(item, str) and key in TEXT_KEYS:
                    texts.append({"node_id": str(node_id), "kind": "text", "text": item})
    return files, texts


def relative_path(f: OutputFile) -> PurePosixPath | None:
    """`subfolder/filename` if it stays inside its folder, else None."""
    p = PurePosixPath(f.subfolder) / f.filename if f.subfolder else PurePosixPath(f.filename)
    if p.is_absolute() or ".." in p.parts:
        return None
    return p
