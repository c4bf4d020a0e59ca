# Development shells: one per version (its ComfyUI, its Python env and the
# comfyver tools) and a default one for working on comfyver itself.
#
# A version's shell:
# - no models in its closure (entering it downloads no model): ComfyUI reads them from the comfyver model
#   store (`comfyver models sync <id>` fills it; $COMFYVER_MODELS or ~/.cache/comfyver/models, as
#   MODELS_DIR), the layout `sha256/<hex>` a RunPod volume has too; devShells.<id>-with-models has them;
# - one interpreter: the version's env and comfyver's worker env are built on the same Python;
# - the GPU off NixOS: the wheels' RUNPATHs name only NixOS' driver link (/run/opengl-driver/lib); where it
#   is missing, the shell links the host's driver libraries (libcuda*, libnvidia-*, found in
#   $COMFYVER_DRIVER_DIR or the usual driver folders) into a private folder put on LD_LIBRARY_PATH (only
#   those: the host's glibc and friends stay out of the Nix programs);
# - the uv2nix template's settings: PYTHONPATH unset, uv never syncs, downloads or picks another Python.
{ pkgs }:
let
  tools = [ pkgs.uv pkgs.skopeo pkgs.nix-prefetch-git pkgs.git ];
  driverFolders = [ "/usr/lib/x86_64-linux-gnu" "/usr/lib64" "/usr/lib/wsl/lib" "/usr/local/nvidia/lib64" ];
in
{
  version = { id, tree, venv, comfyver, withModels ? false }:
    pkgs.mkShell {
      name = "comfyver-${id}${if withModels then "-with-models" else ""}";
      packages = [ tree venv comfyver ] ++ tools;
      env = {
        UV_NO_SYNC = "1";
        UV_PYTHON = "${venv}/bin/python";
        UV_PYTHON_DOWNLOADS = "never";
        COMFYVER_VERSION_ID = id;
        COMFYUI_TREE = "${tree}";
      };
      shellHook = ''
        unset PYTHONPATH
        ${if withModels then "" else ''
        export MODELS_DIR="''${MODELS_DIR:-''${COMFYVER_MODELS:-''${XDG_CACHE_HOME:-$HOME/.cache}/comfyver/models}}"
        ''}
        if [ ! -e /run/opengl-driver/lib/libcuda.so.1 ]; then
          for d in ''${COMFYVER_DRIVER_DIR:-} ${toString driverFolders}; do
            if [ -e "$d/libcuda.so.1" ]; then
              drivers="''${TMPDIR:-/tmp}/comfyver-driver-$(id -u)-${id}"
              mkdir -p "$drivers"
              for f in "$d"/libcuda.so* "$d"/libnvidia-*.so*; do [ -e "$f" ] && ln -sfn "$f" "$drivers/"; done
              export LD_LIBRARY_PATH="$drivers''${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
              break
            fi
          done
        fi
        echo "comfyver ${id}: ComfyUI in ${tree}/share/comfyui; start it with: comfyui --listen 127.0.0.1"
        ${if withModels then "" else ''echo "models: read from $MODELS_DIR (fill it with: comfyver models sync ${id})"''}
      '';
    };

  default = { python }:
    pkgs.mkShell {
      name = "comfyver-dev";
      packages = [ python ] ++ tools;
      shellHook = ''
        export UV_PYTHON=${python.interpreter}
        export UV_PYTHON_DOWNLOADS=never
        echo "comfyver development shell: uv sync --extra test && uv run pytest -q tests/<file>"
      '';
    };
}
