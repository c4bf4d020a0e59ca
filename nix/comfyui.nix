# The ComfyUI tree of a version: the core and nodes from the store, the Python
# env, the models (a store tree, or a folder outside the store for images
# without models), extra_model_paths.yaml, and two entry points:
#   bin/comfyui          ComfyUI itself (arguments are passed on to main.py)
#   bin/comfyui-handler  the RunPod worker (`python -m handler`, run by the
#                        worker env: comfyver's own, not the version's) driving it
# The store stays read-only: user/input/output/temp and custom_nodes live in a
# state folder ($COMFYUI_STATE_DIR, default $XDG_STATE_HOME/comfyver/<id>).
# custom_nodes holds links into the store, except for nodes the lock flags
# `writable`: those are copied there (once per locked source) at start.
{ pkgs, lib }:
let
  inherit (builtins) attrNames concatStringsSep filter;

  # Shell that prepares the state folder and sets $state and $comfy_args.
  # blobLinks: for trees without models, { "<folder>/<name>" = "<sha256 hex>"; }: each name is linked in
  # $state/models to $MODELS_DIR/sha256/<hex> when that blob is there (a volume filled by
  # `comfyver models sync --to runpod://...` holds blobs only); ComfyUI reads those links
  # through the yaml's `comfyver_blobs` entry ($COMFYVER_MODEL_LINKS).
  prepare = { id, core, nodes, writable, modelPathsFile, blobLinks ? { } }:
    let
      names = attrNames nodes;
      link = name: ''ln -sfn ${nodes.${name}} "$state/custom_nodes/${name}"'';
      copy = name: ''
        dst="$state/custom_nodes/${name}"
        if [ -L "$dst" ] || [ "$(cat "$dst/.comfyver-source" 2>/dev/null)" != "${nodes.${name}}" ]; then
          rm -rf "$dst"
          cp -R ${nodes.${name}} "$dst.tmp.$$"
          chmod -R u+w "$dst.tmp.$$"
          echo ${nodes.${name}} > "$dst.tmp.$$/.comfyver-source"
          mv "$dst.tmp.$$" "$dst"
        fi
      '';
    in ''
      set -eu
      export PATH=${lib.makeBinPath [ pkgs.coreutils ]}''${PATH:+:$PATH}
      state="''${COMFYUI_STATE_DIR:-''${XDG_STATE_HOME:-''${HOME:-/tmp}/.local/state}/comfyver/${id}}"
      mkdir -p "$state/custom_nodes" "$state/user" "$state/input" "$state/output" "$state/temp" "$state/models"
      # drop what an older lock of this version put there (links and marked copies)
      for entry in "$state"/custom_nodes/*; do
        case "''${entry##*/}" in
          ${concatStringsSep "|" (names ++ [ "*.py" ])}) ;;
          *) if [ -L "$entry" ] || [ -e "$entry/.comfyver-source" ]; then rm -rf "$entry"; fi ;;
        esac
      done
      ${concatStringsSep "\n" (map link (filter (n: !(lib.elem n writable)) names))}
      ${concatStringsSep "\n" (map copy writable)}
      ${lib.optionalString (blobLinks != { }) ''
        export COMFYVER_MODEL_LINKS="$state/models"
        blobs="''${MODELS_DIR:-/runpod-volume/models}/sha256"
        link_blob() {
          mkdir -p "$state/models/$(dirname "$1")"
          if [ -e "$blobs/$2" ]; then ln -sfn "$blobs/$2" "$state/models/$1"; else rm -f "$state/models/$1"; fi
        }
        ${concatStringsSep "\n" (lib.mapAttrsToList (key: hex: "link_blob ${lib.escapeShellArg key} ${hex}") blobLinks)}
      ''}
      export PYTHONPYCACHEPREFIX="''${PYTHONPYCACHEPREFIX:-$state/pycache}"
      comfy_args="--base-directory $state --user-directory $state/user --database-url sqlite:///$state/user/comfyui.db --input-directory $state/input --output-directory $state/output --temp-directory $state/temp --extra-model-paths-config ${modelPathsFile}"
    '';

  # models: the models tree or null.
  # worker: a Python env with the `handler` package and its dependencies (or null)
  # lockDigest: the lock's digest, given to the worker so it refuses jobs made for another lock
  # warmup: versions/<id>/warmup.json (or null), the job the worker runs before it takes jobs (COMFYVER_WARMUP)
  # lockFile: versions/<id>/version.json in the store (or null), the lock the worker reads its models from
  #   (COMFYVER_LOCK: COMFY_MODELS=cached takes the Hugging Face ones from RunPod's cache)
  tree = { id, lock, sources, venv, models, worker ? null, lockDigest ? null, warmup ? null, lockFile ? null }:
    let
      core = sources.comfyui;
      nodes = sources.nodes;
      writable = filter (n: lock.nodes.${n}.writable) (attrNames nodes);
      modelsNix = import ./models.nix { inherit pkgs lib; };
      modelsPath = if models == null then "/runpod-volume/models" else "${models}";
      # without models: names under the volume's models folder, and links to its blobs (prepare)
      modelPathsFile = pkgs.writeText "extra_model_paths-${id}.yaml"
        (if models == null then
          modelsNix.extraModelPaths modelsPath [ "checkpoints" "clip" "clip_vision" "controlnet" "diffusion_models" "embeddings" "loras" "text_encoders" "unet" "upscale_models" "vae" ]
          + lib.optionalString (lock.models != { })
            (builtins.replaceStrings [ "comfyver:\n" ] [ "comfyver_blobs:\n" ]
              (modelsNix.extraModelPaths "$COMFYVER_MODEL_LINKS" (modelsNix.folders lock)))
         else modelsNix.extraModelPaths modelsPath (modelsNix.folders lock));
      blobLinks = if models == null then lib.mapAttrs (_: m: m.locked.sha256) lock.models else { };
      prep = prepare { inherit id core nodes writable modelPathsFile blobLinks; };
      comfyui = pkgs.writeShellScriptBin "comfyui" ''
        ${prep}
        cd "$state"
        # shellcheck disable=SC2086
        exec ${venv}/bin/python ${core}/main.py $comfy_args "$@"
      '';
      handlerBin = pkgs.writeShellScriptBin "comfyui-handler" ''
        ${prep}
        export COMFY_HOME=${core}
        export COMFY_PYTHON=${venv}/bin/python
        export COMFY_ARGS="$comfy_args ''${COMFY_ARGS:-}"
        export MODELS_DIR="''${MODELS_DIR:-${modelsPath}}"
        export COMFYVER_VERSION_ID=${id}
        ${lib.optionalString (lockDigest != null) "export COMFYVER_LOCK_DIGEST=${lockDigest}"}
        ${lib.optionalString (warmup != null) "export COMFYVER_WARMUP=${warmup}"}
        ${lib.optionalString (lockFile != null) "export COMFYVER_LOCK=${lockFile}"}
        exec ${worker}/bin/python -m handler "$@"
      '';
    in
    pkgs.runCommand "comfyui-${id}" {
      passthru = {
        inherit core nodes venv models modelPathsFile comfyui handlerBin;
      };
    } ''
      mkdir -p $out/bin $out/share/comfyui/custom_nodes
      ln -s ${core} $out/share/comfyui/core
      ln -s ${venv} $out/share/comfyui/python
      ln -s ${modelPathsFile} $out/share/comfyui/extra_model_paths.yaml
      ${lib.optionalString (models != null) "ln -s ${models} $out/share/comfyui/models"}
      ${concatStringsSep "\n" (map (n: "ln -s ${nodes.${n}} $out/share/comfyui/custom_nodes/${n}") (attrNames nodes))}
      ln -s ${comfyui}/bin/comfyui $out/bin/comfyui
      ${lib.optionalString (worker != null) "ln -s ${handlerBin}/bin/comfyui-handler $out/bin/comfyui-handler"}
    '';
in
{
  inherit tree prepare;
}
