# A layered OCI image per version (dockerTools.buildLayeredImage), entrypoint the RunPod handler.
#
# Layers are store paths, found from the tree's closure (nothing listed by hand: a new reference is in the
# image because Nix says so). dockerTools orders the closure by popularity (most referred-to first), gives each
# path its own layer up to its limit (maxLayers, less the customisation layer) and merges the rest, the LEAST
# popular, into one last layer: those are the nodes, the models and the tree, the paths that change between
# versions. So the image is built from few paths:
# - the version env and the worker env are each flattened into one store path (flatten_env.py), except
#   their packages of at least `ownLayerBytes` (torch, every nvidia-* wheel, triton, ...), which stay
#   store paths of their own;
# - one interpreter (the version's; the worker runs on it), glibc and friends;
# - the tree, core, each node, each model file, the wrappers: small paths of their own.
# So a node or model change touches only its own layers and the tree's, and two versions with the same
# Python set share every env layer. maxLayers is 125, docker's limit (moby's maxLayerDepth: an image of more
# layers does not load); a real nixpkgs closure is about 75-80 paths before any node or model, which leaves
# some 45 for nodes and models (docs/nix.md). `layerCheck` fails the image's build when the layer plan
# dockerTools made merges paths into one layer, naming maxLayers, the closure's size, the merged paths and the fix.
#
# NVIDIA container toolkit: it injects the driver's libraries (libcuda.so.1 ...) into /usr/lib64 or
# /usr/lib/x86_64-linux-gnu and registers them in /etc/ld.so.cache: it runs the host's ldconfig (or, configured
# so, the image's /sbin/ldconfig) in the container's root as `ldconfig -f /etc/ld.so.conf -C /etc/ld.so.cache
# <folders>`; its binaries need the /lib64 loader. LD_LIBRARY_PATH names those folders for the patched wheels
# (their RUNPATHs name no host folder).
#
# Triton (torch.compile's kernels on CUDA) needs two things before its first kernel
# (tests/test_nix_cuda_triton.py runs them in the image's root):
# - libcuda's folder, from `/sbin/ldconfig -p` (TRITON_LIBCUDA_PATH, unset here, would have to name that one
#   folder, which depends on the host). nixpkgs' glibc compiles its own prefix's etc/ld.so.cache and
#   etc/ld.so.conf into ldconfig (dont-use-system-ld-so-cache.patch); no glibc holds them, so its `ldconfig -p`
#   exits 1 and triton raises. /sbin/ldconfig is therefore glibc's ldconfig given /etc/ld.so.cache and
#   /etc/ld.so.conf, the files the toolkit writes (a caller's own -C/-f still win);
# - a C compiler for its cuda_utils and launcher modules: triton takes $CC, else `gcc`, else `clang` on PATH,
#   never `cc`; CC names the image's /bin/cc (stdenv.cc: its closure holds gcc, binutils, glibc's headers).
{ pkgs, lib }:
let
  maxLayers = 125;
  ownLayerBytes = 16 * 1024 * 1024;
  driverLibPath = "/usr/lib64:/usr/lib/x86_64-linux-gnu:/usr/local/nvidia/lib64";
  cc = "/bin/cc";

  # Image config: plain data (the golden tests compare it).
  # cuda/driver: what the version's uv.lock holds (python.nix lockedCuda/driverFloor), null for CPU.
  config = { id, entrypoint, withModels, cuda ? null, driver ? null }: {
    Entrypoint = [ entrypoint ];
    WorkingDir = "/var/lib/comfyui";
    Env = [
      "NVIDIA_VISIBLE_DEVICES=all"
      "NVIDIA_DRIVER_CAPABILITIES=compute,utility"
      "LD_LIBRARY_PATH=${driverLibPath}"
      "PATH=/bin:/usr/bin"
      "CC=${cc}"
      "HOME=/root"
      "TMPDIR=/tmp"
      "COMFYUI_STATE_DIR=/var/lib/comfyui"
      "PYTHONUNBUFFERED=1"
      "SSL_CERT_FILE=${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt"
    ];
    Labels = {
      "org.opencontainers.image.title" = "comfyver-${id}";
      "dev.comfyver.version" = id;
      "dev.comfyver.models" = if withModels then "included" else "/runpod-volume/models";
    } // lib.optionalAttrs (cuda != null) {
      "dev.comfyver.cuda" = cuda;
    } // lib.optionalAttrs (driver != null) {
      "dev.comfyver.driver" = ">=${driver}";
    };
  };

  # glibc's ldconfig on the files the NVIDIA container toolkit writes (see the top of this file).
  ldconfig = pkgs.writeShellScriptBin "ldconfig" ''
    exec ${pkgs.glibc.bin or pkgs.glibc}/bin/ldconfig -C /etc/ld.so.cache -f /etc/ld.so.conf "$@"
  '';

  # The root file system: NSS files (passwd, group, nsswitch.conf, hosts), /usr/bin/env, /bin/sh,
  # the CA bundle, ldconfig, the C compiler triton builds its launcher with.
  rootfs = pkgs.runCommand "comfyver-rootfs" { } ''
    mkdir -p $out/etc/ssl/certs $out/usr/bin $out/bin $out/sbin
    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' > $out/etc/passwd
    printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' > $out/etc/group
    printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' > $out/etc/nsswitch.conf
    printf '%s\n' '127.0.0.1 localhost' '::1 localhost' > $out/etc/hosts
    ln -s ${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt $out/etc/ssl/certs/ca-bundle.crt
    ln -s ${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt $out/etc/ssl/certs/ca-certificates.crt
    ln -s ${pkgs.coreutils}/bin/env $out/usr/bin/env
    ln -s ${pkgs.runtimeShellPackage}/bin/bash $out/bin/sh
    ln -s ${pkgs.runtimeShellPackage}/bin/bash $out/bin/bash
    ln -s ${ldconfig}/bin/ldconfig $out/sbin/ldconfig
    ln -s ${pkgs.stdenv.cc}/bin/cc $out${cc}
  '';

  # Folders made in the customisation layer: the toolkit's mount points, the state folder, the loader link.
  extraCommands = ''
    mkdir -p tmp root lib64 var/lib/comfyui usr/lib64 usr/lib/x86_64-linux-gnu usr/local/nvidia/lib64
    ln -sfn ${pkgs.glibc}/lib/ld-linux-x86-64.so.2 lib64/ld-linux-x86-64.so.2
  '';
  # Modes survive only here (extraCommands' output is a store path: no sticky bit).
  fakeRootCommands = ''
    chmod 1777 tmp var/lib/comfyui
  '';

  # An env as one store path, its large packages kept as their own (see the top of this file).
  # name must be the env's own name: the env's wrappers are rewritten byte for byte (same length).
  flatten = name: env: pkgs.runCommand name {
    passthru = env.passthru or { };
    nativeBuildInputs = [ pkgs.patchelf ];
  } ''
    ${env.python or env.passthru.python}/bin/python3 ${./flatten_env.py} ${env} $out ${toString ownLayerBytes}
  '';

  # The layer plan of a streamLayeredImage (its conf.json's store_layers, as nixpkgs' dockerTools wrote it:
  # a list of layers, each a list of store paths) checked: one path per layer, or the build fails. Built with
  # the image's own interpreter (no other package). Its output is the plan's summary (tests, bench).
  layerCheck = { name, conf, python }: pkgs.runCommand "${name}-layer-check" {
    inherit conf maxLayers;
    imageName = name;
    withModels = lib.hasSuffix "-with-models" name;
  } ''
    ${python}/bin/python3 - <<'EOF'
    import json, os
    e = os.environ
    layers = json.load(open(e["conf"]))["store_layers"]
    paths = sum(len(layer) for layer in layers)
    merged = [p for layer in layers if len(layer) > 1 for p in layer]
    json.dump({"maxLayers": int(e["maxLayers"]), "storeLayers": len(layers), "paths": paths, "merged": merged},
              open(e["out"], "w"), indent=1)
    if merged:
        names = sorted(p.split("/")[-1].split("-", 1)[1] for p in merged)
        fix = (["build the image without models (image-<id>: models come from /runpod-volume/models)"]
               if e["withModels"] else []) + [
            "lock fewer nodes or models into this version",
            "or raise maxLayers in nix/image.nix (docker loads at most 125 layers)"]
        raise SystemExit(
            f"comfyver: {e['imageName']}: the image's closure has {paths} store paths, but maxLayers = {e['maxLayers']} "
            f"gives only {len(layers) - 1} of them a layer of their own; dockerTools would merge the other "
            f"{len(merged)}, the least popular, into one layer, and those change between versions (any change to "
            f"one of them pushes that whole layer again): {', '.join(names)}.\n"
            f"Fix: {'; '.join(fix)}.")
    EOF
  '';

  image = { id, tree, withModels }:
    let
      img = pkgs.dockerTools.buildLayeredImage {
        name = "comfyver-${id}";
        tag = if withModels then "with-models" else "latest";
        contents = [ rootfs ];
        config = config {
          inherit id withModels;
          entrypoint = "${tree}/bin/comfyui-handler";
          cuda = tree.venv.cuda or null;
          driver = tree.venv.driver or null;
        };
        inherit extraCommands fakeRootCommands maxLayers;
        passthru = { inherit tree; };
        compressor = "zstd";  # gzip is the slowest step of a 7 GB image; docker, podman and skopeo read zstd
      };
      check = layerCheck {
        name = "comfyver-${id}" + lib.optionalString withModels "-with-models";
        inherit (img.stream) conf;
        python = tree.venv.python or pkgs.python3;
      };
    in
    # the archive's build waits for the check (its output is not in the archive)
    img.overrideAttrs (old: {
      comfyverLayerCheck = check;
      passthru = (old.passthru or { }) // { layerCheck = check; };
    });
in
{
  inherit image flatten rootfs ldconfig config extraCommands fakeRootCommands maxLayers ownLayerBytes driverLibPath layerCheck;
}
