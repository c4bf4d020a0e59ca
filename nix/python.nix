# The Python environment of a version: uv2nix over versions/<id>/uv.lock
# (wheels only, each with the sha256 uv locked), plus the overrides CUDA
# wheels from PyPI need under Nix (`cudaPlan`):
# - autoPatchelf finds the CUDA libraries of what a package depends on: the
#   nvidia-* wheels' site-packages/nvidia/*/lib and torch's lib folder;
# - `$ORIGIN` stays in every RUNPATH: the CUDA libraries dlopen siblings by name;
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
      patch = match "[[:space:]]*==[[:space:]]*3\\.[0-9]+\\.[0-9]+[[:space:]]*" requires;
      minor =
        if patch != null then throw "comfyver: version '${id}': python.requires: ${requires} pins a patch release, which nixpkgs' Python need not be; use a series such as \"==3.12.*\""
        else if exact != null then elemAt exact 1
        else if lower != null then (if fromJSON (elemAt lower 0) > 12 then elemAt lower 0 else "12")
        else throw "comfyver: version '${id}': python.requires: cannot pick a Python from ${requires}; use a specifier such as \"==3.12.*\"";
    in "python3${minor}";

  # How auto-patchelf treats the CUDA binaries of a Python set; plain data, so tests can check it
  # against nixpkgs' real auto-patchelf.py (tests/nix/test_cuda_runpath.py).
  #   names:        every package of the set
  #   deps:         name -> names it depends on (dependencies and optional dependencies, as locked)
  #   path:         name -> its store path (or any prefix holding lib/pythonX.Y/site-packages)
  #   sitePackages: "lib/python3.12/site-packages"
  # -> name -> { searchPaths; appendRunpaths; ignoreMissing; } for torch, every nvidia-* wheel, and every
  #    package that depends on either (xformers, flash-attn, torchaudio, ...): the library folders of
  #    what it depends on, `$ORIGIN` (a library finds the siblings it dlopens by name: libcudnn.so.9
  #    loads libcudnn_graph.so.9 from its own folder, NixOS/nixpkgs#113105), the driver's folders.
  cudaPlan = { names, deps, path, sitePackages }:
    let
      isCuda = n: n == "torch" || lib.hasPrefix "nvidia-" n;
      closureOf = n: map (i: i.key) (builtins.genericClosure {
        startSet = [ { key = n; } ];
        operator = i: map (d: { key = d; }) (filter (d: builtins.elem d names) (deps i.key));
      });
      libDirs = n:
        if n == "torch" then [ "${path n}/${sitePackages}/torch/lib" ]
        else if lib.hasPrefix "nvidia-" n then [ "${path n}/${sitePackages}/nvidia/*/lib" ]
        else [ ];
      planFor = n:
        let below = filter (d: d != n) (closureOf n);
        in {
          searchPaths = builtins.concatMap libDirs below;
          appendRunpaths = [ "$ORIGIN" ] ++ driverLibDirs;
          ignoreMissing = driverLibs;
        };
      wanted = filter (n: isCuda n || builtins.any isCuda (closureOf n)) names;
    in
    lib.genAttrs wanted planFor;

  # The package graph of a uv.lock (its text), read without touching the package set (the overlay's
  # attribute names must not depend on the set's values): wheel packages, and each one's dependencies
  # and optional dependencies by name.
  lockGraph = uvLockText:
    let
      packages = filter (p: p ? wheels) ((builtins.fromTOML uvLockText).package or [ ]);
      byName = builtins.listToAttrs (map (p: { name = p.name; value = p; }) packages);
      names' = d: map (x: x.name) d;
    in
    {
      names = attrNames byName;
      deps = n: names' (byName.${n}.dependencies or [ ])
        ++ builtins.concatMap names' (builtins.attrValues (byName.${n}.optional-dependencies or { }));
    };

  cudaOverrides = graph: final: prev:
    let
      inherit (final.python) sitePackages;
      plan = cudaPlan {
        names = filter (n: prev ? ${n}) graph.names;
        inherit (graph) deps;
        inherit sitePackages;
        path = n: final.${n};
      };
      patched = name: p: prev.${name}.overrideAttrs (old: {
        nativeBuildInputs = lib.unique ((old.nativeBuildInputs or [ ]) ++ [ pkgs.autoPatchelfHook ]);
        # libstdc++.so.6 / libgcc_s.so.1: the CUDA libraries need them, glibc does not have them
        buildInputs = lib.unique ((old.buildInputs or [ ]) ++ [ pkgs.stdenv.cc.cc.lib ]);
        appendRunpaths = p.appendRunpaths;
        autoPatchelfIgnoreMissingDeps = p.ignoreMissing;
        preFixup = (old.preFixup or "") + lib.concatMapStrings (d: ''
          for d in ${d}; do
            if [ -d "$d" ]; then addAutoPatchelfSearchPath "$d"; fi
          done
        '') p.searchPaths;
      });
    in
    builtins.mapAttrs patched plan;

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
          ++ lib.optional (lock.python.torch != "cpu") (cudaOverrides (lockGraph (builtins.readFile (dir + "/uv.lock")))))
      );
    in
    # no version id in the name: versions with the same Python set share the env
    pythonSet.mkVirtualEnv "comfyui-env" workspace.deps.default;
in
{
  inherit env pythonAttr driverLibDirs driverLibs cudaOverrides cudaPlan lockGraph;
}
