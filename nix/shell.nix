# Development shells: one per version (its ComfyUI, its Python env and the
# comfyver tools) and a default one for working on comfyver itself.
{ pkgs }:
let
  tools = [ pkgs.uv pkgs.skopeo pkgs.nix-prefetch-git pkgs.git ];
in
{
  version = { id, tree, venv, comfyver }:
    pkgs.mkShell {
      name = "comfyver-${id}";
      packages = [ tree venv comfyver ] ++ tools;
      shellHook = ''
        export COMFYVER_VERSION_ID=${id}
        export COMFYUI_TREE=${tree}
        echo "comfyver ${id}: ComfyUI in ${tree}/share/comfyui; start it with: comfyui --listen 127.0.0.1"
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
