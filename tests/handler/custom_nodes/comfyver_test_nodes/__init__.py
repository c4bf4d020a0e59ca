"""Small ComfyUI nodes for the handler tests: text, audio and 3D outputs, a slow step, a failing step."""

import math
import os
import struct
import time
import wave

import comfy.utils
import folder_paths


def _save_path(prefix, ext):
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, folder_paths.get_output_directory())
    fname = f"{name}_{counter:05}_.{ext}"
    return os.path.join(folder, fname), fname, subfolder


class ComfyverSaveText:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hello", "multiline": True}),
                             "filename_prefix": ("STRING", {"default": "text/comfyver"})}}
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "comfyver/test"

    def run(self, text, filename_prefix):
        path, fname, subfolder = _save_path(filename_prefix, "txt")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        return {"ui": {"text": [text], "files": [{"filename": fname, "subfolder": subfolder, "type": "output"}]}}


class ComfyverSaveTone:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"hz": ("INT", {"default": 440, "min": 20, "max": 20000}),
                             "filename_prefix": ("STRING", {"default": "audio/comfyver"})}}
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "comfyver/test"

    def run(self, hz, filename_prefix):
        path, fname, subfolder = _save_path(filename_prefix, "wav")
        rate = 8000
        frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / rate))) for i in range(rate // 10))
        with wave.open(path, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(frames)
        return {"ui": {"audio": [{"filename": fname, "subfolder": subfolder, "type": "output"}]}}


class ComfyverSaveMesh:
    """A one-triangle glTF binary (GLB)."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"filename_prefix": ("STRING", {"default": "mesh/comfyver"})}}
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "comfyver/test"

    def run(self, filename_prefix):
        import json
        path, fname, subfolder = _save_path(filename_prefix, "glb")
        verts = struct.pack("<9f", 0, 0, 0, 1, 0, 0, 0, 1, 0)
        gltf = {"asset": {"version": "2.0"}, "buffers": [{"byteLength": len(verts)}],
                "bufferViews": [{"buffer": 0, "byteLength": len(verts)}],
                "accessors": [{"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3",
                               "min": [0, 0, 0], "max": [1, 1, 0]}],
                "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}], "nodes": [{"mesh": 0}],
                "scenes": [{"nodes": [0]}], "scene": 0}
        js = json.dumps(gltf).encode()
        js += b" " * (-len(js) % 4)
        body = struct.pack("<II", len(js), 0x4E4F534A) + js + struct.pack("<II", len(verts), 0x004E4942) + verts
        with open(path, "wb") as fh:
            fh.write(struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body)
        return {"ui": {"3d": [{"filename": fname, "subfolder": subfolder, "type": "output"}]}}


class ComfyverSlow:
    """Passes an image through after `seconds`, reporting `steps` progress steps (interruptible)."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "seconds": ("FLOAT", {"default": 2.0, "min": 0, "max": 600}),
                             "steps": ("INT", {"default": 10, "min": 1, "max": 1000})}}
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "comfyver/test"

    def run(self, image, seconds, steps):
        bar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            time.sleep(seconds / steps)
            bar.update(1)
        return (image,)


class ComfyverFail:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "message": ("STRING", {"default": "deliberate failure"})}}
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "comfyver/test"

    def run(self, image, message):
        raise ValueError(message)


class ComfyverLoraDigest:
    """Reads a file of the loras folder as a loader would (chosen from ComfyUI's list): its name, sha256 and size."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"lora_name": (folder_paths.get_filename_list("loras"),)}}
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "comfyver/test"

    def run(self, lora_name):
        import hashlib
        with open(folder_paths.get_full_path_or_raise("loras", lora_name), "rb") as fh:
            data = fh.read()
        return {"ui": {"text": [f"{lora_name} {hashlib.sha256(data).hexdigest()} {len(data)}"]}}


NODE_CLASS_MAPPINGS = {c.__name__: c for c in (ComfyverSaveText, ComfyverSaveTone, ComfyverSaveMesh, ComfyverSlow,
                                               ComfyverFail, ComfyverLoraDigest)}
