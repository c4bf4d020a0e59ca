# The Python environment of a version: uv2nix over versions/<id>/uv.lock
# (wheels only, each with the sha256 uv locked), plus the overrides CUDA
# wheels from PyPI need under Nix (`cudaPlan`):
# - autoPatchelf finds the CUDA libraries of what a package depends on: the
#   nvidia-* wheels' site-packages/nvidia/*/lib and torch's lib folder;
# - `$ORIGIN` stays in every RUNPATH: the CUDA libraries dlopen siblings by name;
# - libcuda.so.1 / libnvidia-ml.so.1 are left to the driver, in every wheel (runpod's gpu_test links
#   libnvidia-ml too): the NVIDIA container toolkit injects them at run time, so they are allowed missing
#   at build time. RUNPATHs get no host folder: only NixOS' driver link (/run/opengl-driver/lib, where
#   `nix develop` on NixOS finds them); images find the toolkit's folders through LD_LIBRARY_PATH
#   (image.nix), so nothing of a host's /usr/lib leaks into a dev shell.
{ pkgs, lib, pyproject-nix, uv2nix, pyproject-build-systems }:
let
  inherit (builtins) attrNames filter match pathExists elemAt fromJSON;

  # NixOS' driver link (nixpkgs addDriverRunpath.driverLink)
  driverLink = "/run/opengl-driver/lib";
  driverLibs = [ "libcuda.so.1" "libnvidia-ml.so.1" ];
  # What NVIDIA's cuFile and NVSHMEM wheels load only for their RDMA/MPI/UCX transports (rdma-core, libfabric,
  # Open MPI, PMIx, UCX): absent on a RunPod GPU host too, and not needed for a single-GPU job.
  optionalTransportLibs = [ "libibverbs.so.1" "librdmacm.so.1" "libmlx5.so.1" "libfabric.so.1" "libmpi.so.40"
    "liboshmem.so.40" "libpmix.so.2" "libucp.so.0" "libucs.so.0" ];

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

  # Wheels that link torch's or the nvidia-* wheels' libraries although their metadata names neither (so the
  # lock cannot say it): torchaudio links libtorch and libcudart but declares no torch; onnxruntime-gpu's CUDA
  # provider links cuBLAS, cuDNN, cuFFT, cuRAND and the CUDA runtime and declares no nvidia-* wheel. A wheel
  # missing here fails its build naming itself and this list (`cudaNeededCheck`).
  linksCudaUndeclared = [ "torchaudio" "onnxruntime-gpu" ];

  # The sonames of torch's and the nvidia-* wheels' libraries (shell patterns), less the driver's: what a wheel
  # built without them must not need (`cudaNeededCheck`).
  cudaSonames = [ "libcudart.so*" "libcublas*.so*" "libcudnn*.so*" "libcufft*.so*" "libcurand.so*"
    "libcusolver*.so*" "libcusparse*.so*" "libcupti.so*" "libcufile*.so*" "libnvrtc*.so*" "libnvJitLink.so*"
    "libnvToolsExt.so*" "libnvshmem*.so*" "libnccl.so*" "libnvperf*.so*" "libtorch*.so*" "libc10*.so*"
    "libshm.so*" ];

  # How auto-patchelf treats the CUDA binaries of a Python set; plain data, so tests can check it
  # against nixpkgs' real auto-patchelf.py (tests/nix/test_cuda_runpath.py).
  #   names:        every package of the set
  #   deps:         name -> names it depends on (dependencies and optional dependencies, as locked)
  #   path:         name -> its store path (or any prefix holding lib/pythonX.Y/site-packages)
  #   sitePackages: "lib/python3.12/site-packages"
  #   pure:         name -> whether every wheel of it is `-none-any` (no ELF file: it gets no plan)
  # -> when the set holds torch or an nvidia-* wheel, name -> { searchPaths; appendRunpaths; ignoreMissing; }
  #    for the packages whose ELF files may link a CUDA package (`linksCuda`): the library folders of the CUDA
  #    packages they may link (see `searched`), `$ORIGIN` (a library finds the siblings it dlopens by name:
  #    libcudnn.so.9 loads libcudnn_graph.so.9 from its own folder, NixOS/nixpkgs#113105), NixOS' driver link;
  #    the driver's libraries (and, for nvidia-*, the optional transports') may stay missing. Any other
  #    package has no entry: it is built without torch and the nvidia-* wheels (no store path of theirs is in
  #    its derivation), so a torch bump leaves it as it is and its build does not wait for torch.
  #
  # Which wheels link CUDA is decided at evaluation, from the lock: build inputs are fixed before any build,
  # and reading the wheels' ELF NEEDED entries at evaluation would be import-from-derivation (every wheel
  # fetched to evaluate; `nix flake check --no-build` could not). A build checks the decision
  # (`cudaNeededCheck`): a wheel without a plan whose ELF files need a CUDA library fails, naming them.
  cudaPlan = { names, deps, path, sitePackages, pure ? (_: false) }:
    let
      isCuda = n: n == "torch" || lib.hasPrefix "nvidia-" n;
      closureOf = n: map (i: i.key) (builtins.genericClosure {
        startSet = [ { key = n; } ];
        operator = i: map (d: { key = d; }) (filter (d: builtins.elem d names) (deps i.key));
      });
      cudaNames = filter isCuda names;
      # torch and nvidia-* themselves; a wheel that depends on one of them, as locked (torchvision, xformers,
      # flash-attn, bitsandbytes: their extensions link libtorch / libcudart); the undeclared ones above.
      linksCuda = n: !(pure n) && (builtins.any isCuda (closureOf n) || builtins.elem n linksCudaUndeclared);
      libDirs = n:
        if n == "torch" then [ "${path n}/${sitePackages}/torch/lib" ]
        else if lib.hasPrefix "nvidia-" n then [ "${path n}/${sitePackages}/nvidia/*/lib" ]
        else [ ];
      # torch and nvidia-*: what they depend on. Any other wheel: every CUDA package that does not depend on
      # it (no cycle), whether the lock says it depends on them or not (torchaudio's wheel links libtorch and
      # libcudart but declares no torch); auto-patchelf keeps only the folders that satisfy a library.
      searched = n:
        if isCuda n then filter (d: d != n) (closureOf n)
        else filter (c: !(builtins.elem n (closureOf c))) cudaNames;
      planFor = n: {
        searchPaths = builtins.concatMap libDirs (searched n);
        appendRunpaths = [ "$ORIGIN" driverLink ];
        ignoreMissing = driverLibs ++ lib.optionals (lib.hasPrefix "nvidia-" n) optionalTransportLibs;
      };
    in
    if cudaNames == [ ] then { } else lib.genAttrs (filter linksCuda names) planFor;

  # The package graph of a uv.lock (its text), read without touching the package set (the overlay's
  # attribute names must not depend on the set's values): the wheel packages reachable from the root project's
  # dependencies (`root`; not its extras: the repository's test extra pulls torch, the worker does not need
  # it), each one's dependencies and optional dependencies by name, its version, and whether every wheel of
  # it is pure Python (`-none-any`: no ELF file for auto-patchelf to patch).
  lockGraph = { uvLockText, root }:
    let
      all = (builtins.fromTOML uvLockText).package or [ ];
      byName = builtins.listToAttrs (map (p: { name = p.name; value = p; }) all);
      names' = d: map (x: x.name) d;
      depsOf = n: names' (byName.${n}.dependencies or [ ])
        ++ builtins.concatMap names' (builtins.attrValues (byName.${n}.optional-dependencies or { }));
      rootDeps = filter (n: byName ? ${n}) (names' (byName.${root}.dependencies or [ ]));
      reachable = map (i: i.key) (builtins.genericClosure {
        startSet = map (n: { key = n; }) rootDeps;
        operator = i: map (d: { key = d; }) (filter (d: byName ? ${d}) (depsOf i.key));
      });
    in
    {
      names = filter (n: byName.${n} ? wheels) reachable;
      deps = depsOf;
      version = n: byName.${n}.version or null;
      pure = n: builtins.all (w: lib.hasSuffix "-none-any.whl" w.url) (byName.${n}.wheels or [ ]);
    };

  # The CUDA a uv.lock really holds: its CUDA runtime wheel's "major.minor" (nvidia-cuda-runtime[-cuXX]),
  # null for a CPU set; and the NVIDIA driver that CUDA needs (minor-version compatibility: any 12.x on
  # >= 525, any 13.x on >= 580). comfyver lock and deploy derive the same (lock/pylock.py).
  lockedCuda = graph:
    let
      runtime = filter (n: match "nvidia-cuda-runtime(-cu[0-9]+)?" n != null) graph.names;
      v = lib.splitVersion (graph.version (builtins.head runtime));
    in
    if runtime == [ ] then null else "${elemAt v 0}.${elemAt v 1}";
  driverFloor = cuda: if cuda == null then null else { "12" = "525"; "13" = "580"; }.${builtins.head (lib.splitVersion cuda)} or null;

  # torchvision 0.(m + 15) and torchaudio 2.m are built for torch 2.m (PyTorch's pairing; their wheels'
  # metadata does not say so). A uv.lock that pairs them otherwise fails here, as `comfyver check` reports it.
  checkFamily = id: graph:
    let
      # null when the version does not follow the pairing (another major, no minor): not checked
      minorOf = n:
        let p = lib.splitVersion (graph.version n);
            major = builtins.head p;
            m = if builtins.length p > 1 && match "[0-9]+" (elemAt p 1) != null then lib.toInt (elemAt p 1) else null;
        in
        if m == null then null
        else if n == "torchvision" then (if major == "0" then m - 15 else null)
        else if major == "2" then m else null;
      members = filter (n: builtins.elem n graph.names && minorOf n != null) [ "torchvision" "torchaudio" ];
      bad = filter (n: minorOf n != minorOf "torch") members;
      say = n: "${n} ${graph.version n} is built for torch 2.${toString (minorOf n)}";
    in
    if !(builtins.elem "torch" graph.names) || minorOf "torch" == null || bad == [ ] then true
    else throw "comfyver: version '${id}': uv.lock: ${lib.concatMapStringsSep "; " say bad}, but torch is ${graph.version "torch"}; lock again (`comfyver lock ${id}` pins the family to one torch)";

  # python.torch must name what the uv.lock holds: "cpu" holds no CUDA wheels, cuXY the CUDA major X.
  checkProfile = id: profile: graph:
    let
      held = lockedCuda graph;
      claimed = match "cu([0-9]+)([0-9])" profile;
      field = "comfyver: version '${id}': python.torch";
    in
    if profile == "cpu" && held != null then
      throw "${field}: is \"cpu\" but versions/${id}/uv.lock pins CUDA ${held} wheels (nvidia-cuda-runtime); run `comfyver lock ${id} --torch pypi`"
    else if claimed != null && held != null && elemAt claimed 0 != builtins.head (lib.splitVersion held) then
      throw "${field}: is \"${profile}\" (CUDA ${elemAt claimed 0}.${elemAt claimed 1}) but versions/${id}/uv.lock pins CUDA ${held} wheels; lock again (`comfyver lock ${id}`)"
    else if claimed != null && held == null && builtins.elem "torch" graph.names then
      throw "${field}: is \"${profile}\" but the torch versions/${id}/uv.lock pins has no CUDA wheels"
    else held;

  # A build step of the platform wheels a CUDA set builds without torch and the nvidia-* wheels (no cudaPlan
  # entry): it reads the NEEDED entries of the wheel's ELF files (patchelf --print-needed) and fails, naming the
  # files and libraries, when one needs a library of theirs (`cudaSonames`) that the wheel does not ship itself.
  # Runs before auto-patchelf, whose own error would not say why the library is not there.
  cudaNeededCheck = name: ''
    comfyverCudaNeeded() {
      local f so bad=""
      while IFS= read -r -d "" f; do
        [ "$(head -c 4 "$f" | tail -c 3)" = ELF ] || continue
        for so in $(patchelf --print-needed "$f" 2>/dev/null); do
          case "$so" in
            ${lib.concatStringsSep "|" cudaSonames})
              if [ -z "$(find "$out" -name "$so" -print -quit)" ]; then bad="$bad  ''${f#"$out"/} needs $so"$'\n'; fi ;;
          esac
        done
      done < <(find "$out" -type f \( -name "*.so" -o -name "*.so.*" -o -perm -u+x \) -print0)
      if [ -n "$bad" ]; then
        printf '%s\n' "comfyver: ${name}: the uv.lock says it depends on neither torch nor an nvidia-* wheel, so it is built without their libraries, but its ELF files need them:" "$bad" "Add \"${name}\" to linksCudaUndeclared in nix/python.nix (wheels that link torch's or CUDA's libraries without declaring it)." >&2
        exit 1
      fi
    }
    comfyverCudaNeeded
  '';

  # graph: lockGraph of the set's uv.lock. Every locked package the set built from a wheel may leave the
  # driver's libraries unresolved (even a `-none-any` wheel may ship a binary: runpod's gpu_test links
  # libnvidia-ml); with `cuda`, the platform wheels cudaPlan gives an entry also search the CUDA packages'
  # library folders. The other wheels (`-none-any` ones, and platform wheels such as pillow, pyyaml, scipy
  # that depend on no CUDA package) do not depend on torch's build; in a CUDA set the platform ones run
  # `cudaNeededCheck`.
  wheelOverrides = { graph, cuda ? true }: final: prev:
    let
      inherit (final.python) sitePackages;
      present = filter (n: prev ? ${n}) graph.names;
      plan = if !cuda then { } else cudaPlan {
        names = present;
        inherit (graph) deps pure;
        inherit sitePackages;
        path = n: final.${n};
      };
      patched = name: prev.${name}.overrideAttrs (old:
        if (old.passthru.format or null) != "wheel" then { }
        else if graph.pure name || (plan == { }) then { autoPatchelfIgnoreMissingDeps = driverLibs; }
        else if !(plan ? ${name}) then {
          autoPatchelfIgnoreMissingDeps = driverLibs;
          nativeBuildInputs = (old.nativeBuildInputs or [ ]) ++ [ pkgs.patchelf ];
          preFixup = (old.preFixup or "") + cudaNeededCheck name;
        }
        else {
          # libstdc++.so.6 / libgcc_s.so.1: the CUDA libraries need them, glibc does not have them
          buildInputs = lib.unique ((old.buildInputs or [ ]) ++ [ pkgs.stdenv.cc.cc.lib ]);
          appendRunpaths = plan.${name}.appendRunpaths;
          autoPatchelfIgnoreMissingDeps = plan.${name}.ignoreMissing;
          preFixup = (old.preFixup or "") + lib.concatMapStrings (d: ''
            for d in ${d}; do
              if [ -d "$d" ]; then addAutoPatchelfSearchPath "$d"; fi
            done
          '') plan.${name}.searchPaths;
        });
    in
    lib.genAttrs present patched;

  # The version's Python project alone (pyproject.toml + uv.lock, the project named `comfyver-version` in every
  # version): the root project's source, so a node, model or docs change leaves the env's store paths as they
  # are. uv2nix reads the two files from the version folder itself (mkEnv's workspaceRoot): `nix flake check
  # --no-build` evaluates with a read-only store, where this filtered copy is computed but never written, so
  # reading it failed ("path ... is not valid") on any machine that had not built the version before.
  projectSource = dir: builtins.path {
    path = dir;
    name = "comfyver-version-python";
    filter = path: type: type == "regular" && builtins.elem (baseNameOf path) [ "pyproject.toml" "uv.lock" ];
  };

  # A venv from a uv workspace by uv2nix (wheels preferred), with build-system-pkgs and wheelOverrides.
  # workspaceRoot: where uv2nix reads pyproject.toml and uv.lock; src: the root project's source when it
  # should be another copy of them (projectSource).
  mkEnv = { name, workspaceRoot, python, overrides, src ? null, project ? "comfyver-version" }:
    let
      workspace = uv2nix.lib.workspace.loadWorkspace { inherit workspaceRoot; };
      pythonSet = (pkgs.callPackage pyproject-nix.build.packages { inherit python; }).overrideScope (
        lib.composeManyExtensions [
          pyproject-build-systems.overlays.default
          (workspace.mkPyprojectOverlay { sourcePreference = "wheel"; })
          (wheelOverrides overrides)
          (final: prev: lib.optionalAttrs (src != null) {
            ${project} = prev.${project}.overrideAttrs (_: { inherit src; });
          })
        ]);
    in
    (pythonSet.mkVirtualEnv name workspace.deps.default).overrideAttrs (old: {
      passthru = (old.passthru or { }) // { inherit python; };
    });

  # The interpreters an env may be built on (those this nixpkgs has).
  interpreterAttrs = filter (a: pkgs ? ${a}) [ "python311" "python312" "python313" "python314" ];

  # Versions with the same pyproject.toml + uv.lock share one evaluated env per interpreter (no id in it, so
  # one derivation too): a table keyed by the two files' hashes (read from the files alone, so a bad
  # version.json breaks only its own outputs), each entry holding the uv.lock's graph and, by interpreter
  # attribute, the env; all lazy. dirs: every version folder.
  envTable = dirs:
    let
      key = dir: builtins.hashString "sha256" (builtins.concatStringsSep "\n"
        (map (f: if pathExists (dir + "/${f}") then builtins.hashFile "sha256" (dir + "/${f}") else "-") [ "uv.lock" "pyproject.toml" ]));
      entry = dir: rec {
        graph = lockGraph { uvLockText = builtins.readFile (dir + "/uv.lock"); root = "comfyver-version"; };
        envs = lib.genAttrs interpreterAttrs (attr: mkEnv {
          name = "comfyui-env";
          workspaceRoot = dir;
          src = projectSource dir;
          python = pkgs.${attr};
          overrides = { inherit graph; };
        });
      };
    in
    { inherit key; entries = builtins.listToAttrs (map (dir: { name = key dir; value = entry dir; }) dirs); };

  # A version's env: its entry of `table` (envTable of every version folder), after the checks that name
  # the version (files present, torch family, profile against the locked CUDA).
  env = { id, dir, lock, table }:
    let
      present =
        if !pathExists (dir + "/uv.lock") then
          throw "comfyver: version '${id}': versions/${id}/uv.lock is missing (run `comfyver lock ${id}` and commit the uv.lock)"
        else if !pathExists (dir + "/pyproject.toml") then
          throw "comfyver: version '${id}': versions/${id}/pyproject.toml is missing (run `comfyver lock ${id}` and commit it)"
        else true;
      python = interpreter { inherit id lock; };
      entry = builtins.seq present table.entries.${table.key dir};
      cuda = builtins.seq (checkFamily id entry.graph) (checkProfile id lock.python.torch entry.graph);
    in
    builtins.seq cuda (entry.envs.${pythonAttr id lock.python.requires}.overrideAttrs (old: {
      passthru = (old.passthru or { }) // { inherit python cuda; driver = driverFloor cuda; };
    }));

  # The version's interpreter (python.requires -> pkgs.python3XY); the worker runs on it too.
  interpreter = { id, lock }:
    let attr = pythonAttr id lock.python.requires;
    in
    if pkgs ? ${attr} then pkgs.${attr}
    else throw "comfyver: version '${id}': python.requires: ${lock.python.requires} needs ${attr}, which this nixpkgs does not have";

  # comfyver itself (the CLI and the RunPod worker package `handler`) on a given interpreter, from the
  # repository's pyproject.toml + uv.lock and only the folders its wheel holds: docs, tests and versions
  # are not in its source, so editing them changes no store path.
  worker = { root, python }:
    let
      src = builtins.path {
        path = root;
        name = "comfyver-source";
        filter = path: type:
          let rel = lib.removePrefix (toString root + "/") (toString path); in
          (type == "regular" && builtins.elem rel [ "pyproject.toml" "uv.lock" ])
          || rel == "handler" || lib.hasPrefix "handler/" rel
          || rel == "scripts" || rel == "scripts/comfyver" || lib.hasPrefix "scripts/comfyver/" rel;
      };
    in
    if builtins.pathExists (root + "/uv.lock") then
      mkEnv {
        name = "comfyver-env";
        workspaceRoot = root;  # read here; built from `src` (see projectSource)
        project = "comfyver";
        inherit python src;
        # the worker links no CUDA library: only the driver's may be missing (runpod's gpu_test)
        overrides = { graph = lockGraph { uvLockText = builtins.readFile (root + "/uv.lock"); root = "comfyver"; }; cuda = false; };
      }
    else pkgs.runCommand "comfyver-env" { } ''
      echo "comfyver: uv.lock is missing at the repository root; run 'uv lock' and commit it" >&2
      exit 1
    '';
in
{
  inherit env mkEnv envTable interpreterAttrs interpreter worker projectSource pythonAttr lockedCuda driverFloor checkProfile checkFamily driverLink driverLibs optionalTransportLibs wheelOverrides cudaPlan lockGraph linksCudaUndeclared cudaSonames cudaNeededCheck;
}
