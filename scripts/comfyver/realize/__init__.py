"""Stage 3, lock -> environment without Nix: realize a version into a folder (`realize`), prove it matches
(`verify`), run it (`localrun`, with `comfystate`: where a running ComfyUI writes), export it as a script
or Dockerfile (`export`). May import `base`, `sources` and `lock`."""
