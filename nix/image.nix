# A layered OCI image per version (dockerTools), entrypoint the RunPod handler.
#
# Two images stacked:
# - the base: the Python env (Python, torch, the CUDA wheels), the worker env
#   and the few tools the entry points use, one store path per layer
#   (popularity order, at most 98 layers); it depends on those envs only, so
#   versions that differ only in nodes or models share it, layer for layer;
# - on top (`fromImage`), ONE layer holding exactly the version's own store
#   paths (tree, core, nodes, wrappers, models) and the root file
#   system bits. `includeStorePaths = false` keeps dockerTools from adding the
#   Python env's paths a second time. dockerTools counts the base's layers in
#   `maxLayers`: never more than 100 layers in all.
#
# NVIDIA container toolkit: it injects the driver's libraries (libcuda.so.1 ...)
# into /usr/lib64 or /usr/lib/x86_64-linux-gnu and its binaries need the
# /lib64 loader; LD_LIBRARY_PATH and the /lib64 link cover both.
{ pkgs, lib }:
let
  baseMaxLayers = 98;
  maxLayers = 100;
  driverLibPath = "/usr/lib64:/usr/lib/x86_64-linux-gnu:/usr/local/nvidia/lib64";

  # Image config: plain data (the golden tests compare it).
  config = { id, entrypoint, withModels }: {
    Entrypoint = [ entrypoint ];
    WorkingDir = "/var/lib/comfyui";
    Env = [
      "NVIDIA_VISIBLE_DEVICES=all"
      "NVIDIA_DRIVER_CAPABILITIES=compute,utility"
      "LD_LIBRARY_PATH=${driverLibPath}"
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
    };
  };

  # Root filesystem bits every image needs, made in the top image's last layer.
  extraCommands = ''
    mkdir -p tmp root etc lib64 var/lib/comfyui usr/lib64 usr/lib/x86_64-linux-gnu
    ln -sfn ${pkgs.glibc}/lib/ld-linux-x86-64.so.2 lib64/ld-linux-x86-64.so.2
    printf '%s\n' 'root:x:0:0:root:/root:${pkgs.runtimeShellPackage}/bin/bash' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' > etc/passwd
    printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' > etc/group
  '';
  # Modes survive only here (extraCommands' output is a store path: no sticky bit).
  fakeRootCommands = ''
    chmod 1777 tmp var/lib/comfyui
  '';

  # What the base holds besides the Python env: what bin/comfyui* (shell
  # scripts on runtimeShell using coreutils) and the root file system refer to.
  baseTools = [ pkgs.coreutils pkgs.runtimeShellPackage pkgs.cacert pkgs.glibc ];

  base = { venv, worker }:
    pkgs.dockerTools.buildLayeredImage {
      name = "comfyver-base";
      tag = null; # the output hash: one tag per Python env
      contents = [ venv worker ] ++ baseTools;
      maxLayers = baseMaxLayers;
    };

  # Copy the version's own store paths into the top layer.
  copyPaths = paths: ''
    mkdir -p nix/store
    for p in ${lib.concatStringsSep " " (map toString paths)}; do
      cp -a "$p" nix/store/
    done
  '';

  # versionPaths: every store path of the tree's closure that is not in the
  # base (comfyui.nix `ownPaths` + the tree itself).
  image = { id, tree, venv, worker, versionPaths, withModels }:
    pkgs.dockerTools.buildLayeredImage {
      name = "comfyver-${id}";
      tag = if withModels then "with-models" else "latest";
      fromImage = base { inherit venv worker; };
      includeStorePaths = false;
      config = config { inherit id withModels; entrypoint = "${tree}/bin/comfyui-handler"; };
      extraCommands = extraCommands + copyPaths versionPaths;
      inherit fakeRootCommands maxLayers;
    };
in
{
  inherit image base baseTools config extraCommands fakeRootCommands baseMaxLayers maxLayers driverLibPath;
}
