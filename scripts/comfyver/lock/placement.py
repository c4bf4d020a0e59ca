"""Where a model file goes: the `folder_paths` folder its loader input really lists, and its name inside it.

- ComfyUI's legacy names (`folder_paths.map_legacy`: `unet` -> `diffusion_models`, `clip` -> `text_encoders`) and
  the folders a pack only aliases onto another one (ComfyUI-GGUF: `update_folder_names_and_paths("unet_gguf",
  ["diffusion_models", "unet"])` replaces unet_gguf's paths by diffusion_models', so a file under unet_gguf/ is
  never listed) name the folder the file must be in.
- A loader that prefixes its options with its folder's own subfolder (Impact: `"bbox/" + f` for each file of
  `ultralytics_bbox`, which lives at models/ultralytics/bbox) gets a value `bbox/x.pt` whose file is `x.pt` in
  that folder: the subfolder is not doubled.
- ComfyUI-Manager's model-list `save_path` (`ultralytics/bbox`) names the same folder as the pack's key
  (`ultralytics_bbox`).
"""

from __future__ import annotations

from collections.abc import Iterable

from comfyver.lock import nodescan

# folder a pack registers -> the folder whose paths it really lists (the pack's own aliasing, at load time)
ALIASED_FOLDERS = {"unet_gguf": "diffusion_models", "clip_gguf": "text_encoders"}


def loader_folder(folder: str) -> str:
    """The folder a loader listing `folder` finds its files in."""
    folder = nodescan.LEGACY_FOLDERS.get(folder, folder)
    return ALIASED_FOLDERS.get(folder, folder)


def _own_subfolders(folder: str) -> set[str]:
    """The subfolder names a loader of `folder` may prefix its values with: the folder itself and its last part
    (`ultralytics_bbox` -> `bbox`, the models/ultralytics/bbox it lives at)."""
    out = {folder}
    for sep in ("_", "/"):
        if sep in folder:
            out.add(folder.rsplit(sep, 1)[1])
    return out


def file_name(folder: str, value: str) -> str:
    """The file's path inside `folder` for a widget value (Windows separators -> '/'): a leading subfolder that is
    the folder's own name is the loader's prefix, not a subfolder on disk."""
    name = value.replace("\\", "/")
    first, sep, rest = name.partition("/")
    return rest if sep and rest and first in _own_subfolders(folder) else name


def manager_folders(save_path: str) -> set[str]:
    """The folder keys a model-list save_path can stand for: its first part (legacy names mapped) and the whole
    path joined with '_' (`ultralytics/bbox` -> `ultralytics_bbox`)."""
    parts = [p for p in save_path.strip("/").split("/") if p]
    if not parts:
        return set()
    return {loader_folder(parts[0]), loader_folder("_".join(parts))}


def unique_folder(folders: Iterable[str | None]) -> str | None:
    """The one folder all of `folders` agree on (None if none or several)."""
    found = {f for f in folders if f}
    return found.pop() if len(found) == 1 else None
