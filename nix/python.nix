# The Python environment of a version: uv2nix over versions/<id>/uv.lock
# (wheels only, each with the sha256 uv locked), plus the overrides CUDA torch
# wheels from PyPI need under Nix:
# - autoPatchelf finds the CUDA libraries in the nvidia-* wheels
#   (site-packages/nvidia/*/lib) and in torch's own lib folder;
# - libcuda.so.1 / libnvidia-ml.so.1 are left to the driver: the NVIDIA
#   container toolkit injects them at run time, so they are allowed missing at
#   build time and found through the run-paths appended below.
{ pkgs, lib, pyproject-nix, uv2nix, pyproject-build-systems }:
let
  inherit (builtins) attrNames filter match pathExists elemAt fromJSON;

  # Where the NVIDIA container toolkit puts the driver's libraries
  # (/usr/lib64 on RPM layouts, /usr/lib/x86_64-linux-gnu on Debian layouts)
  # and where NixOS keeps them.
  driverLibDirs = [ "/usr/lib64" "/usr/lib/x86_64-linux-gnu" "/usr/local/nvidia/lib64" "/run/opengl-driver/lib" ];
  driverLibs = [ "libcuda.so.1" "libnvidia-ml.so.1" ];

  # "==3.12.*", "~=3.11", ">=3.11,<3.13" -> "python312", "python311", "python312"
  pythonAttr = id: requires:
    let
      exact = match "[[:space:]]*(==|~=)[[:space:]]*3\\.([0-9]+).*" requires;
      lower = match "[[:space:]]*>=?[[:space:]]*3\\.([0-9]+).*" requires;
      minor =
        if exact != null then elemAt exact 1
        else if lower != null then (if fromJSON (elemAt lower 0) > 12 then elemAt lower 0 else "12")
        else throw "comfyver: version '${id}': python.requires: cannot pick a Python from ${requires}; use a specifier such as \"==3.12.*\"";
    in "python3${minor}";

  torchPackages = [ "torch" "torchvision" "torchaudio" ];

  cudaOverrides = final: prev:
    let
      inherit (final.python) sitePackages;
      nvidia = filter (lib.hasPrefix "nvidia-") (attrNames prev);
      nvidiaSearchPath = lib.concatMapStrings (n: ''
        for d in ${final.${n}}/${sitePackages}/nvidia/*/lib; do
          if [ -d "$d" ]; then addAutoPatchelfSearchPath "$d"; fi
        done
      '') nvidia;
      common = old: {
        nativeBuildInputs = lib.unique ((old.nativeBuildInputs or [ ]) ++ [ pkgs.autoPatchelfHook ]);
        appendRunpaths = driverLibDirs;
      };
      torchLike = name: prev.${name}.overrideAttrs (old: common old // {
        autoPatchelfIgnoreMissingDeps = driverLibs;
        preFixup = (old.preFixup or "") + ''
          addAutoPatchelfSearchPath "${if name == "torch" then "$out" else final.torch}/${sitePackages}/torch/lib"
        '' + nvidiaSearchPath;
      });
      # The nvidia-* wheels load each other by soname at run time (torch loads them first).
      nvidiaWheel = name: prev.${name}.overrideAttrs (old: common old // {
        autoPatchelfIgnoreMissingDeps = true;
      });
      present = filter (n: prev ? ${n}) torchPackages;
    in
    lib.genAttrs present torchLike // lib.genAttrs nvidia nvidiaWheel;

  # dir: the version folder (path) holding pyproject.toml and uv.lock.
  env = { id, dir, lock }:
    let
      workspace =
        if !pathExists (dir + "/uv.lock") then
          throw "comfyver: version '${id}': versions/${id}/uv.lock is missing (run `comfyver lock ${id}` and commit the uv.lock)"
        else if !pathExists (dir + "/pyproject.toml") then
          throw "comfyver: version '${id}': versions/${id}/pyproject.toml is missing (run `comfyver lock ${id}` and commit it)"
        else uv2nix.lib.workspace.loadWorkspace { workspaceRoot = dir; };
      attr = pythonAttr id lock.python.requires;
      python =
        if pkgs ? ${attr} then pkgs.${attr}
        else throw "comfyver: version '${id}': python.requires: ${lock.python.requires} needs ${attr}, which this nixpkgs does not have";
      overlay = workspace.mkPyprojectOverlay { sourcePreference = "wheel"; };
      pythonSet = (pkgs.callPackage pyproject-nix.build.packages { inherit python; }).overrideScope (
        lib.composeManyExtensions ([ pyproject-build-systems.overlays.default overlay ]
          ++ lib.optional (lock.python.torch != "cpu") cudaOverrides)
      );
    in
    # no version id in the name: versions with the same Python set share the env
    pythonSet.mkVirtualEnv "comfyui-env" workspace.deps.default;
in
{
  inherit env pythonAttr driverLibDirs driverLibs cudaOverrides;
}
