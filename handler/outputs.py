"""What a workflow saved: every file ComfyUI reports (images, animations, video, audio, 3D, text) and inline text."""

from __future__ import annotations

import errno
import mimetypes
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

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


class OutputRefused(Exception):
    """An output that is not a regular file reached without a symbolic link (its message says what it is)."""


def open_output(base: Path, rel: PurePosixPath) -> BinaryIO | None:
    """`base/rel` opened for reading, never through a symbolic link below `base` (each folder and the file are
    opened with O_NOFOLLOW); None when it does not exist. A link, or anything but a regular file (a FIFO would
    block the read), raises OutputRefused. The size to check before reading is `os.fstat(fh.fileno()).st_size`."""
    nofollow = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the configured folder: may be a link
    except FileNotFoundError:
        return None
    try:
        for i, part in enumerate(rel.parts):
            last = i == len(rel.parts) - 1
            try:
                nxt = os.open(part, nofollow | (os.O_NONBLOCK if last else os.O_DIRECTORY), dir_fd=fd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                link = stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode)
                raise OutputRefused(f"{PurePosixPath(*rel.parts[:i + 1])} is "
                                    + ("a symbolic link" if link else "not a folder")) from None
            os.close(fd)
            fd = nxt
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OutputRefused(f"{rel} is not a regular file")
        fh, fd = os.fdopen(fd, "rb"), -1
        return fh
    finally:
        if fd >= 0:
            os.close(fd)


def chunks(fh: BinaryIO, size: int):
    """The first `size` bytes of `fh` (the size checked before reading: a file still growing is cut there), in
    pieces of at most 1 MiB."""
    while size > 0 and (chunk := fh.read(min(size, 1 << 20))):
        yield chunk
        size -= len(chunk)
