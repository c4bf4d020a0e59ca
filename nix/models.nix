# Models: one `fetchurl` fixed-output derivation per model with the lock's
# sha256 as-is, a models tree (linkFarm) and extra_model_paths.yaml.
#
# Gated downloads: the token is read from the builder's environment at build
# time (`netrcImpureEnvVars`), never written into a derivation. With a
# nix-daemon the variable must be in the *daemon's* environment (docs/nix.md).
{ pkgs, lib }:
let
  inherit (builtins) attrNames concatStringsSep head isList map mapAttrs split substring stringLength;

  tokenVar = { hf = "HF_TOKEN"; civitai = "CIVITAI_TOKEN"; gcs = "GOOGLE_OAUTH_ACCESS_TOKEN"; };

  # A store path name: allowed characters only, bounded length.
  storeName = path:
    let
      base = baseNameOf path;
      safe = concatStringsSep "" (map (p: if isList p then "_" else p) (split "[^A-Za-z0-9+._?=-]" base));
    in "model-" + substring 0 200 safe;

  # gs://bucket/object is read over the JSON API's media endpoint of GCS.
  httpUrl = url:
    if substring 0 5 url == "gs://"
    then "https://storage.googleapis.com/" + substring 5 (stringLength url - 5) url
    else url;

  # Shell run by fetchurl's builder before curl (its `netrcPhase`): turns the
  # token variable into a curl config file with a Bearer header. curl does not
  # forward that header when a download redirects to another host (CDN).
  authArgs = path: auth:
    if auth == null then { }
    else
      let var = tokenVar.${auth}; in {
        netrcImpureEnvVars = [ var ];
        netrcPhase = ''
          : > netrc
          if [ -n "''${${var}:-}" ]; then
            printf 'header = "Authorization: Bearer %s"\n' "''$${var}" > auth-header.curlrc
            curlOpts="$curlOpts --config $PWD/auth-header.curlrc"
          else
            echo ${lib.escapeShellArg "comfyver: ${var} is not set in the builder's environment for model ${path}; with a nix-daemon set it in the daemon's environment (see docs/nix.md)"} >&2
          fi
        '';
      };

  # fetchurl arguments per model path: plain data (the golden tests compare it).
  plan = lock: mapAttrs (path: m: {
    name = storeName path;
    url = httpUrl m.locked.url;
    sha256 = m.locked.sha256;
  } // authArgs path m.locked.auth) lock.models;

  fetch = lock: mapAttrs (_: pkgs.fetchurl) (plan lock);

  # files: what `fetch` returns (model path -> fixed-output derivation)
  tree = id: files:
    pkgs.linkFarm "models-${id}" (lib.mapAttrsToList (path: drv: { name = path; path = drv; }) files);

  # Top-level model folders named in the lock, e.g. [ "checkpoints" "loras" ].
  folders = lock: lib.unique (map (p: head (lib.splitString "/" p)) (attrNames lock.models));

  # extra_model_paths.yaml for ComfyUI: every folder of the lock under basePath.
  extraModelPaths = basePath: folderNames:
    "comfyver:\n  base_path: ${basePath}\n"
    + concatStringsSep "" (map (f: "  ${f}: ${f}\n") folderNames);
in
{
  inherit plan fetch tree folders extraModelPaths storeName tokenVar;
}
