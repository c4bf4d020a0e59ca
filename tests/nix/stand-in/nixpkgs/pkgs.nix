# Strict stand-in for the part of nixpkgs that comfyver's nix/ uses.
#
# Argument sets are copied from the real functions (see ../README.md for the
# source each one mirrors): an argument the real function does not take fails
# here with Nix's own "called with unexpected argument" error.
# Builders run host tools (/bin/bash, git, curl, unzip) because this Nix has no
# sandbox and there is no nixpkgs here; fetchurl is Nix's builtin fetcher.
{ lib, system, hostPython }:
let
  inherit (builtins) attrNames baseNameOf concatStringsSep derivation elem filter functionArgs head
    intersectAttrs isAttrs isFunction isList length mapAttrs removeAttrs toJSON;

  hostPath = "/usr/local/bin:/usr/bin:/bin";

  # A derivation built by a bash script with host tools.
  run = name: env: script: derivation ({
    inherit name system;
    builder = "/bin/bash";
    # ends with a builtin: bash must not exec a coreutils program last, which
    # closes the log pipe before it exits and Nix 2.8 then kills it (signal 9)
    args = [ "-c" "set -euo pipefail\n${script}\ntrue" ];
    PATH = hostPath;
  } // env);

  withPassthru = drv: passthru: drv // passthru;

  proxyImpureEnvVars = [ "http_proxy" "https_proxy" "ftp_proxy" "all_proxy" "no_proxy" "HTTP_PROXY" "HTTPS_PROXY" "FTP_PROXY" "ALL_PROXY" "NO_PROXY" ];

  # stdenv.mkDerivation: takes any attribute (like the real one); records them.
  mkDerivation = attrs:
    let
      a = if isFunction attrs then lib.fix attrs else attrs;
      passthru = a.passthru or { };
      env = removeAttrs a [ "passthru" "meta" "name" "pname" "version" ];
      name = a.name or "${a.pname}-${a.version}";
      drv = run name (mapAttrs (_: v: if isAttrs v && !(v ? outPath) then toJSON v else v) env) ''
        mkdir -p "$out/nix-support"
        echo "${name}" > "$out/nix-support/stand-in"
        if [ -n "''${buildCommand:-}" ]; then eval "$buildCommand"; fi
      '';
    in
    withPassthru drv (passthru // {
      inherit name passthru;  # as nixpkgs: passthru's attributes, and passthru itself
      overrideAttrs = f: mkDerivation (a // (if isFunction f then f a else f));
    } // (if a ? pname then { inherit (a) pname; } else { }) // (if a ? version then { inherit (a) version; } else { }));

  stdenv = {
    inherit mkDerivation; shell = "/bin/bash"; isLinux = true;
    cc.cc.lib = run "gcc-lib" { } ''mkdir -p "$out/lib"'';  # libstdc++ and libgcc_s in nixpkgs
  };

  # A host tool folder: $out/bin/<tool> -> the host's.
  hostTools = name: tools: run name { } ''
    mkdir -p "$out/bin"
    for t in ${concatStringsSep " " tools}; do
      p=$(command -v "$t"); ln -s "$p" "$out/bin/$t"
    done
  '';

  mkPython = version: minor:
    let
      drv = run "python3-${version}" { } ''
        mkdir -p "$out/bin"
        ln -s ${hostPython} "$out/bin/python3"
        ln -s python3 "$out/bin/python"
      '';
    in
    drv // {
      inherit version;
      pythonVersion = "3.${minor}";
      sitePackages = "lib/python3.${minor}/site-packages";
      interpreter = "${drv}/bin/python3";
      executable = "python3";
      pythonOnBuildForHost = drv;
    };

  self = {
    inherit lib system stdenv;
    buildPackages = self;
    pkgs = self;
    newScope = extra: fn: args: self.callPackage fn (extra // args);
    callPackage = fn: args:
      let f = if isFunction fn then fn else import fn; in
      f (intersectAttrs (functionArgs f) self // args);

    # nixpkgs pkgs/build-support/fetchurl/default.nix (no ellipsis there either)
    fetchurl =
      { url ? "", urls ? [ ], curlOpts ? "", curlOptsList ? [ ], name ? null, pname ? null, version ? null
      , hash ? "", outputHash ? "", outputHashAlgo ? "", sha1 ? "", sha256 ? "", sha512 ? ""
      , recursiveHash ? false, netrcPhase ? null, netrcImpureEnvVars ? [ ], postFetch ? ""
      , downloadToTemp ? false, executable ? false, showURLs ? false, meta ? { }, passthru ? { }
      , preferLocalBuild ? true, nativeBuildInputs ? [ ], derivationArgs ? { }
      }:
      let
        u = if url != "" then url else if urls != [ ] then head urls else throw "fetchurl requires either `url` or `urls` to be set";
        given = filter (h: h != "") [ hash outputHash sha1 sha256 sha512 ];
        h =
          if length given > 1 then throw "multiple hashes passed to fetchurl: ${u}"
          else if hash != "" then { outputHash = hash; }
          else if outputHash != "" then { inherit outputHash outputHashAlgo; }
          else if sha512 != "" then { outputHashAlgo = "sha512"; outputHash = sha512; }
          else if sha256 != "" then { outputHashAlgo = "sha256"; outputHash = sha256; }
          else if sha1 != "" then { outputHashAlgo = "sha1"; outputHash = sha1; }
          else throw "fetchurl requires a hash for fixed-output derivation: ${u}";
      in
      if postFetch != "" || downloadToTemp || recursiveHash then
        throw "stand-in fetchurl: postFetch/downloadToTemp/recursiveHash need the real curl builder"
      else
        withPassthru (derivation ({
          name = if pname != null && version != null then "${pname}-${version}" else if name != null then name else baseNameOf u;
          builder = "builtin:fetchurl";
          system = "builtin";
          url = u;
          outputHashMode = "flat";
          inherit executable preferLocalBuild;
          unpack = false;
          impureEnvVars = proxyImpureEnvVars ++ [ "NIX_CURL_FLAGS" "NIX_HASHED_MIRRORS" "NIX_CONNECT_TIMEOUT" ] ++ netrcImpureEnvVars;
          inherit netrcImpureEnvVars curlOpts;
        } // h // (if netrcPhase != null then { inherit netrcPhase; } else { }))) (passthru // { inherit url; });

    # nixpkgs pkgs/build-support/fetchgit/default.nix (lib.fetchers.withNormalizedHash adds hash/sha256)
    fetchgit =
      { url, tag ? null, rev ? null, name ? "source", leaveDotGit ? deepClone || fetchTags
      , outputHash ? "", outputHashAlgo ? null, fetchSubmodules ? true, deepClone ? false
      , branchName ? null, sparseCheckout ? [ ], nonConeMode ? rootDir != "", nativeBuildInputs ? [ ]
      , preFetch ? "", postFetch ? "", preferLocalBuild ? true, fetchLFS ? false
      , netrcPhase ? null, netrcImpureEnvVars ? [ ], meta ? { }, allowedRequisites ? null
      , fetchTags ? false, rootDir ? "", hash ? "", sha256 ? ""
      }:
      let
        h = if hash != "" then { outputHash = hash; }
            else if sha256 != "" then { outputHash = sha256; outputHashAlgo = "sha256"; }
            else if outputHash != "" then { inherit outputHash; outputHashAlgo = if outputHashAlgo == null then "" else outputHashAlgo; }
            else throw "fetchgit ${url}: no hash";
        r = if rev != null then rev else if tag != null then "refs/tags/${tag}" else "HEAD";
      in
      if leaveDotGit || deepClone || sparseCheckout != [ ] || rootDir != "" || fetchLFS then
        throw "stand-in fetchgit: leaveDotGit/deepClone/sparseCheckout/rootDir/fetchLFS are not used by comfyver"
      else
        run name ({
          inherit url;
          rev = r;
          fetchSubmodules = if fetchSubmodules then "1" else "";
          outputHashMode = "recursive";
          impureEnvVars = proxyImpureEnvVars ++ netrcImpureEnvVars;
          GIT_CONFIG_NOSYSTEM = "1";
          GIT_TERMINAL_PROMPT = "0";
          inherit preferLocalBuild;
        } // h) ''
          # the steps of nix-prefetch-git: init, fetch, checkout the rev, submodules, drop .git
          export HOME="$TMPDIR" GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*'
          git init -q "$out"
          cd "$out"
          git fetch -q --no-tags -- "$url" "$rev" 2>/dev/null \
            || git fetch -q --no-tags -- "$url" '+refs/heads/*:refs/remotes/origin/*' '+refs/tags/*:refs/tags/*'
          git -c advice.detachedHead=false checkout -q "$rev" --
          if [ -n "$fetchSubmodules" ]; then
            git -c protocol.file.allow=always submodule update -q --init --recursive
          fi
          find "$out" -name .git -prune -exec rm -rf {} +
        '';

    # nixpkgs pkgs/build-support/fetchzip/default.nix: its own arguments, the
    # rest goes to fetchurl, whose argument set is checked here.
    fetchzip =
      { url ? "", urls ? [ ], name ? "source", nativeBuildInputs ? [ ], postFetch ? "", extraPostFetch ? ""
      , stripRoot ? true, extension ? null, derivationArgs ? { }, ...
      }@args:
      let
        own = [ "url" "urls" "name" "nativeBuildInputs" "postFetch" "extraPostFetch" "stripRoot" "extension" "derivationArgs" ];
        rest = removeAttrs args own;
        unknown = filter (n: !(functionArgs self.fetchurl ? ${n})) (attrNames rest);
        h = if rest ? hash then { outputHash = rest.hash; }
            else if rest ? sha256 then { outputHash = rest.sha256; outputHashAlgo = "sha256"; }
            else throw "fetchzip: no hash";
        u = if url != "" then url else head urls;
      in
      if unknown != [ ] then throw "fetchurl: called with unexpected argument '${head unknown}' (through fetchzip)"
      else
        run name ({
          url = u;
          stripRoot = if stripRoot then "1" else "";
          extension = if extension == null then "" else extension;
          outputHashMode = "recursive";
          impureEnvVars = proxyImpureEnvVars ++ (rest.netrcImpureEnvVars or [ ]);
        } // h) ''
          # fetchurl (curl) + unpackFile (unzip) + fetchzip's postFetch, with host tools
          curl -sSfL -o "$TMPDIR/download.''${extension:-zip}" -- "$url"
          mkdir "$TMPDIR/unpack"
          cd "$TMPDIR/unpack"
          unzip -qq "$TMPDIR/download.''${extension:-zip}"
          chmod -R +w "$TMPDIR/unpack"
          if [ -n "$stripRoot" ]; then
            if [ "$(ls -A "$TMPDIR/unpack" | wc -l)" != 1 ]; then
              echo "error: zip file must contain a single file or directory."
              echo "hint: Pass stripRoot=false; to fetchzip to assume flat list of files."
              exit 1
            fi
            fn=$(cd "$TMPDIR/unpack" && ls -A)
            if [ -f "$TMPDIR/unpack/$fn" ]; then mkdir "$out"; fi
            mv "$TMPDIR/unpack/$fn" "$out"
          else
            mv "$TMPDIR/unpack" "$out"
          fi
          chmod 755 "$out"
        '';

    # nixpkgs pkgs/build-support/trivial-builders/default.nix
    runCommand = name: env: buildCommand:
      withPassthru (run name (removeAttrs env [ "passthru" "meta" ] // { inherit buildCommand; }) ''eval "$buildCommand"'')
        (env.passthru or { });

    writeText = name: text: run name { inherit text; } ''printf '%s' "$text" > "$out"'';

    writeShellScriptBin = name: text:
      run name { inherit text; } ''
        mkdir -p "$out/bin"
        { echo '#!/bin/bash'; printf '%s' "$text"; } > "$out/bin/${name}"
        chmod +x "$out/bin/${name}"
        bash -n "$out/bin/${name}"
      '';

    linkFarm = name: entries:
      let list = if isList entries then entries else lib.mapAttrsToList (n: p: { name = n; path = p; }) entries; in
      run name { } ''
        mkdir -p "$out"
        cd "$out"
        ${concatStringsSep "\n" (map (e: ''mkdir -p "$(dirname ${lib.escapeShellArg e.name})"; ln -s ${e.path} ${lib.escapeShellArg e.name}'') list)}
      '';

    # nixpkgs pkgs/build-support/mkshell/default.nix (it has an ellipsis: the
    # rest goes to mkDerivation; the ones comfyver may pass are listed)
    mkShell =
      { name ? "nix-shell", packages ? [ ], inputsFrom ? [ ], buildInputs ? [ ], nativeBuildInputs ? [ ]
      , propagatedBuildInputs ? [ ], propagatedNativeBuildInputs ? [ ], ...
      }@attrs:
      let
        rest = attrNames (removeAttrs attrs [ "name" "packages" "inputsFrom" "buildInputs" "nativeBuildInputs" "propagatedBuildInputs" "propagatedNativeBuildInputs" ]);
        bad = filter (n: !(elem n [ "shellHook" "env" "passthru" "meta" ])) rest;
      in
      if bad != [ ] then throw "stand-in mkShell: unexpected argument '${head bad}'"
      else run name {
        nativeBuildInputs = packages ++ nativeBuildInputs;
        inherit buildInputs;
        shellHook = attrs.shellHook or "";
      } ''echo "This derivation is not meant to be built, unless you want to capture the dependency closure." >&2; exit 1'';

    # nixpkgs pkgs/build-support/docker/default.nix: buildLayeredImage = streamLayeredImage's
    # arguments + compressor. The stand-in writes the image description
    # (image.json) and runs extraCommands in root/ instead of writing layer tars.
    dockerTools.buildLayeredImage =
      { name, tag ? null, fromImage ? null, contents ? [ ], config ? { }, architecture ? "amd64"
      , created ? "1970-01-01T00:00:01Z", mtime ? "1970-01-01T00:00:01Z", uid ? 0, gid ? 0
      , uname ? "root", gname ? "root", maxLayers ? 100, extraCommands ? "", fakeRootCommands ? ""
      , enableFakechroot ? false, includeStorePaths ? true, includeNixDB ? false, passthru ? { }
      , meta ? { }, layeringPipeline ? null, debug ? false, compressor ? "gz"
      }:
      let
        contentsList = if isList contents then contents else [ contents ];
        baseLayers = if fromImage == null then 0 else fromImage.maxLayers;
        description = toJSON {
          inherit name tag config maxLayers architecture created includeStorePaths;
          fromImage = if fromImage == null then null else "${fromImage}";
          contents = map toString contentsList;
        };
      in
      if maxLayers < 2 || maxLayers > 125 then throw "dockerTools: maxLayers must be in 2..125"
      else if baseLayers + 1 >= maxLayers then throw "dockerTools: the base image uses ${toString baseLayers} of maxLayers=${toString maxLayers}"
      else withPassthru (run "${name}.tar.gz" { inherit description extraCommands fakeRootCommands; } ''
        mkdir -p "$out/root"
        printf '%s' "$description" > "$out/image.json"
        (cd "$out/root" && eval "$extraCommands" && eval "$fakeRootCommands" && find . -mindepth 1 -printf '%m %p\n' | sort > "$out/modes.txt")
      '') (passthru // { inherit maxLayers; imageName = name; imageTag = tag; });

    # Python interpreters: the host's (the venv stand-in links to it).
    python311 = mkPython "3.11" "11";
    python312 = mkPython "3.12" "12";
    python313 = mkPython "3.13" "13";

    autoPatchelfHook = run "auto-patchelf-hook" { } ''mkdir -p "$out/nix-support"'';
    coreutils = hostTools "coreutils" [ "mkdir" "ln" "cp" "chmod" "rm" "mv" "cat" "echo" "ls" "env" "readlink" "dirname" "basename" "touch" ];
    bashInteractive = hostTools "bash-interactive" [ "bash" "sh" ];
    runtimeShellPackage = hostTools "bash" [ "bash" "sh" ];
    git = hostTools "git" [ "git" ];
    uv = hostTools "uv" [ "uv" ];
    skopeo = hostTools "skopeo" [ "skopeo" ];
    nix-prefetch-git = hostTools "nix-prefetch-git" [ "git" ];
    glibc = run "glibc" { } ''mkdir -p "$out/lib"; ln -s /lib64/ld-linux-x86-64.so.2 "$out/lib/ld-linux-x86-64.so.2"'';
    cacert = run "nss-cacert" { } ''mkdir -p "$out/etc/ssl/certs"; cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-bundle.crt"'';
  };
in
self
