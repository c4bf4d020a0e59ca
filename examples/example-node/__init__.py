"""comfyver example custom node: fills an image with a colour read from a model file.

`StampFromModel` lists files of the `checkpoints` folder through ComfyUI's
`folder_paths`, reads the chosen file and uses its first three bytes as an RGB
colour. The output therefore proves the locked model reached the node.
"""

import folder_paths
import torch


class StampFromModel:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "model_name": (folder_paths.get_filename_list("checkpoints"),)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "stamp"
    CATEGORY = "comfyver/example"

    def stamp(self, image, model_name):
        with open(folder_paths.get_full_path_or_raise("checkpoints", model_name), "rb") as f:
            r, g, b = f.read(3)
        colour = torch.tensor([r, g, b], dtype=image.dtype) / 255.0
        return (torch.ones_like(image) * colour,)


NODE_CLASS_MAPPINGS = {"StampFromModel": StampFromModel}
NODE_DISPLAY_NAME_MAPPINGS = {"StampFromModel": "Stamp colour from model file"}
