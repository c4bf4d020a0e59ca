# The ComfyUI core and every custom node as fixed-output derivations carrying
# exactly the lock's hash: git inputs through `fetchgit` (NAR hash of the checkout
# without .git), registry zips through `fetchzip` (NAR hash of the unpacked tree).
{ pkgs }:
let
  # Store names do not carry the version id: two versions locking the same
  # input at the same hash share one store path.
  git = name: l: {
    fetcher = "fetchgit";
    args = {
      name = "${name}-source";
      inherit (l) url rev hash;
      fetchSubmodules = l.submodules;
    };
  };
  zip = name: l: {
    fetcher = "fetchzip";
    args = {
      name = "${name}-source";
      inherit (l) url hash stripRoot;
      extension = "zip";
    };
  };
  node = name: n:
    if (n.original.type or null) == "local" then
      # import --from-install --allow-dirty: the archive exists in the importing machine's comfyver cache only
      throw ("comfyver: node ${name} was recorded as it was on disk (import --from-install --allow-dirty); its archive "
        + "is in the importing machine's comfyver cache, which Nix cannot fetch. Realize the version on that machine "
        + "with `comfyver realize`, or push the pack's changes and pin it by commit (`comfyver add-node`)")
    else (if n.locked.type == "git" then git else zip) "node-${name}" n.locked;

  # What is fetched and how: plain data (the golden tests compare it).
  plan = lock: {
    comfyui = git "comfyui" lock.comfyui.locked;
    nodes = builtins.mapAttrs node lock.nodes;
  };

  call = p: pkgs.${p.fetcher} p.args;
in
{
  inherit plan;
  fetch = lock:
    let p = plan lock; in {
      comfyui = call p.comfyui;
      nodes = builtins.mapAttrs (_: call) p.nodes;
    };
}
