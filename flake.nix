{
  description = "comfyver: reproducible ComfyUI environments for RunPod (one package, image and shell per version)";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    pyproject-nix = {
      url = "github:pyproject-nix/pyproject.nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    uv2nix = {
      url = "github:pyproject-nix/uv2nix";
      inputs.pyproject-nix.follows = "pyproject-nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    pyproject-build-systems = {
      url = "github:pyproject-nix/build-system-pkgs";
      inputs.pyproject-nix.follows = "pyproject-nix";
      inputs.uv2nix.follows = "uv2nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  # A team's binary cache, offered to whoever builds this flake (docs/nix.md, "Binary cache"). Nix asks
  # before it uses a flake's nixConfig (or follows accept-flake-config), so it stays optional. Uncomment
  # with your cache's URL and public key; no cache is named here because none is run for this repository.
  # nixConfig = {
  #   extra-substituters = [ "https://YOUR-CACHE.cachix.org" ];
  #   extra-trusted-public-keys = [ "YOUR-CACHE.cachix.org-1:PUBLIC-KEY-BASE64=" ];
  # };

  # Every folder in versions/ with a version.json (git-tracked: a flake sees
  # nothing else) becomes version-<id>, models-<id>, image-<id>,
  # image-<id>-with-models, devShells.<id> (no models) and devShells.<id>-with-models. flake.nix only wires; the
  # functions live in nix/.
  outputs = { self, nixpkgs, pyproject-nix, uv2nix, pyproject-build-systems }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      inherit (nixpkgs) lib;

      lockLib = import ./nix/lock.nix;
      sources = import ./nix/sources.nix { inherit pkgs; };
      models = import ./nix/models.nix { inherit pkgs lib; };
      python = import ./nix/python.nix { inherit pkgs lib pyproject-nix uv2nix pyproject-build-systems; };
      comfyui = import ./nix/comfyui.nix { inherit pkgs lib; };
      image = import ./nix/image.nix { inherit pkgs lib; };
      shell = import ./nix/shell.nix { inherit pkgs; };

      versionsDir = ./versions;
      ids = lockLib.ids versionsDir;
      # versions with the same Python project share one evaluated env (python.nix envTable)
      envs = python.envTable (map (id: versionsDir + "/${id}") ids);
      # the worker, once per interpreter
      workers = lib.genAttrs python.interpreterAttrs (attr: python.worker { root = ./.; python = pkgs.${attr}; });

      # One version, evaluated lazily: nothing here is read before it is used.
      version = id: rec {
        lock = lockLib.read versionsDir id;
        src = sources.fetch lock;
        venv = python.env { inherit id lock; table = envs; dir = versionsDir + "/${id}"; };
        modelFiles = models.fetch lock;
        modelsTree = models.tree id modelFiles;
        # version-<id>: ComfyUI alone (no worker: builds without the repository's uv.lock)
        tree = comfyui.tree {
          inherit id lock venv;
          sources = src;
          models = modelsTree;
        };
        # devShells.<id>: the same without models (they come from the model store, shell.nix)
        shellTree = comfyui.tree {
          inherit id lock venv;
          sources = src;
          models = null;
        };
        # image-<id>[-with-models]: the same plus bin/comfyui-handler, on flattened envs (image.nix)
        worker = workers.${python.pythonAttr id lock.python.requires};
        imageTree = withModels: comfyui.tree {
          inherit id lock;
          venv = image.flatten "comfyui-env" venv;
          worker = image.flatten "comfyver-env" worker;
          lockDigest = lockLib.digest versionsDir id;
          # versions/<id>/warmup.json, when the version has one: the worker runs it before taking jobs
          warmup = let f = versionsDir + "/${id}/warmup.json"; in
            if builtins.pathExists f then builtins.path { path = f; name = "comfyver-warmup-${id}.json"; } else null;
          # the lock itself, for the worker's model placement (COMFYVER_LOCK)
          lockFile = builtins.path { path = versionsDir + "/${id}/version.json"; name = "comfyver-lock-${id}.json"; };
          sources = src;
          models = if withModels then modelsTree else null;
        };
        mkImage = withModels: image.image { inherit id withModels; tree = imageTree withModels; };
      };
      versions = lib.genAttrs ids version;

      # comfyver itself (the CLI and the RunPod worker package `handler`); in images it runs on the version's
      # interpreter (one Python per image).
      comfyver = workers.python312 or workers.python311;

      perVersion = f: lib.listToAttrs (lib.concatMap (id: f id versions.${id}) ids);

      # checks: every output of a version evaluates, and its image's entrypoint runs a tiny CPU job
      # (EmptyImage -> SaveImage) in the built tree, with the real worker and ComfyUI.
      job = builtins.toJSON {
        "1" = { class_type = "EmptyImage"; inputs = { width = 8; height = 8; batch_size = 1; color = 0; }; };
        "2" = { class_type = "SaveImage"; inputs = { images = [ "1" 0 ]; filename_prefix = "check"; }; };
      };
      checksFor = id: v:
        let
          tree = v.imageTree false;
          # a port of its own per version: checks of several versions may run at once (no sandbox)
          port = toString (20000 + lib.mod (lib.fromHexString (builtins.substring 0 4 (builtins.hashString "sha256" id))) 20000);
        in [
          (lib.nameValuePair "eval-${id}" (pkgs.writeText "comfyver-eval-${id}" (lib.concatMapStringsSep "\n" (d: builtins.unsafeDiscardStringContext d.drvPath)
            [ v.tree v.modelsTree (v.mkImage false) (v.mkImage true) ])))
          (lib.nameValuePair "job-${id}" (pkgs.runCommand "comfyver-job-${id}" { inherit job; passAsFile = [ "job" ]; } ''
            export HOME=$TMPDIR COMFYUI_STATE_DIR=$TMPDIR/state COMFY_ARGS=--cpu COMFY_PORT=${port}
            printf '{"input": {"version_id": "${id}", "workflow": %s}}' "$(cat "$jobPath")" > job.json
            ${tree}/bin/comfyui-handler cli --input job.json --out "$TMPDIR/out" --json > result.json
            cp result.json $out
          ''))
        ];
    in
    {
      packages.${system} =
        perVersion (id: v: [
          (lib.nameValuePair "version-${id}" v.tree)
          (lib.nameValuePair "models-${id}" v.modelsTree)
          (lib.nameValuePair "image-${id}" (v.mkImage false))
          (lib.nameValuePair "image-${id}-with-models" (v.mkImage true))
        ])
        // { inherit comfyver; };

      checks.${system} = perVersion checksFor;

      devShells.${system} =
        perVersion (id: v: [
          (lib.nameValuePair id (shell.version { inherit id; inherit (v) venv; tree = v.shellTree; comfyver = v.worker; }))
          (lib.nameValuePair "${id}-with-models"
            (shell.version { inherit id; inherit (v) tree venv; comfyver = v.worker; withModels = true; }))
        ])
        // { default = shell.default { python = pkgs.python312 or pkgs.python311; }; };

      apps.${system}.comfyver = {
        type = "app";
        program = "${comfyver}/bin/comfyver";
      };
    };
}
