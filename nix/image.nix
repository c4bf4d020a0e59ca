# A layered OCI image per version (dockerTools), entrypoint the RunPod handler.
#
# Two images stacked: a base holding the Python env (Python, torch, the CUDA
# wheels) and one on top with ComfyUI, the nodes, the handler (and the models
# for image-<id>-with-models). Versions that differ only in nodes or models
# share the base image's layers byte for byte. dockerTools counts the layers
# of `fromImage` in `maxLayers`: the base has at most 80 layers and the whole
# image at most 100.
#
# NVIDIA container toolkit: it injects the driver's libraries (libcuda.so.1 ...)
# into /usr/lib64 or /usr/lib/x86_64-linux-gnu and its binaries need the
# /lib64 loader; LD_LIBRARY_PATH and the /lib64 link cover both.
{ pkgs, lib }:
let
  baseMaxLayers = 80;
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
    printf '%s\n' 'root:x:0:0:root:/root:${pkgs.bashInteractive}/bin/bash' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' > etc/passwd
    printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' > etc/group
  '';
  # Modes survive only here (extraCommands' output is a store path: no sticky bit).
  fakeRootCommands = ''
    chmod 1777 tmp var/lib/comfyui
  '';

  base = { venv }:
    pkgs.dockerTools.buildLayeredImage {
      name = "comfyver-base";
      tag = null; # the output hash: one tag per Python env
      contents = [ venv ];
      maxLayers = baseMaxLayers;
    };

  image = { id, tree, venv, withModels }:
    pkgs.dockerTools.buildLayeredImage {
      name = "comfyver-${id}";
      tag = if withModels then "with-models" else "latest";
      fromImage = base { inherit venv; };
      contents = [ tree pkgs.coreutils pkgs.bashInteractive pkgs.cacert ];
      config = config { inherit id withModels; entrypoint = "${tree}/bin/comfyui-handler"; };
      inherit extraCommands fakeRootCommands;
      inherit maxLayers;
    };
in
{
  inherit image base config extraCommands fakeRootCommands baseMaxLayers maxLayers driverLibPath;
}
