# Stand-in for nixpkgs' packages (tests only; see ../README.md). `lib` is nixpkgs'
# REAL lib (copied in from ../shared/nix-inputs/nixpkgs-lib by the tests); only the
# packages are hand-written, with nixpkgs' argument sets and semantics:
# - callPackage/newScope are lib.callPackageWith (a scope passes only what a function asks for,
#   results are overridable);
# - stdenv.mkDerivation takes attrs or `finalAttrs: attrs`, has overrideAttrs/finalPackage/passthru/env,
#   and builds with a generic builder (setup.sh) that sources setup hooks and runs the phases the real
#   pyproject.nix hooks define;
# - autoPatchelfHook IS nixpkgs' auto-patchelf.sh running nixpkgs' auto-patchelf.py (pyelftools +
#   the host's patchelf); dockerTools.streamLayeredImage runs nixpkgs' closure-graph.py and
#   stream_layered_image.py, so images are real docker-archive tarballs.
# Builders run host tools (bash, coreutils, git, curl, unzip, patchelf): this Nix has no sandbox and
# there is no nixpkgs here. Interpreters are the host's (host.json, written by the tests).
{ lib, system, host }:
let
  inherit (builtins) attrNames baseNameOf concatStringsSep elem filter functionArgs head isAttrs isBool
    isFunction isList isPath length mapAttrs readFile removeAttrs replaceStrings toJSON;

  hostPath = "/usr/local/bin:/usr/bin:/bin";
  platform = lib.systems.elaborate system;

  # A derivation built by a bash script with host tools.
  run = name: env: script: derivation ({
    inherit name system;
    builder = "/bin/bash";
    # ends with a builtin: bash must not exec a coreutils program last, which
    # closes the log pipe before it exits and Nix 2.8 then kills it (signal 9)
    args = [ "-c" "set -euo pipefail\n${script}\ntrue" ];
    PATH = hostPath;
  } // env);

  withPassthru = drv: passthru: drv // passthru // { inherit passthru; };

  proxyImpureEnvVars = [ "http_proxy" "https_proxy" "ftp_proxy" "all_proxy" "no_proxy" "HTTP_PROXY" "HTTPS_PROXY" "FTP_PROXY" "ALL_PROXY" "NO_PROXY" ];

  # A value as the derivation's environment sees it (nixpkgs drops nulls; lists of inputs become
  # space-separated store paths; attribute sets that are not derivations have no string form).
  envValue = v:
    if v == null then null
    else if isBool v then (if v then "1" else "")
    else if isList v then map (x: if isPath x then "${x}" else x) (filter (x: x != null) v)
    else if isFunction v then null
    else if isAttrs v && !(v ? outPath) then null
    else v;

  # stdenv.mkDerivation (nixpkgs pkgs/stdenv/generic/make-derivation.nix, makeDerivationExtensible).
  mkDerivation = fnOrAttrs: extensible (if isFunction fnOrAttrs then fnOrAttrs else _: fnOrAttrs);
  extensible = rattrs:
    let
      args = rattrs (args // { inherit finalPackage overrideAttrs; });
      overrideAttrs = f0:
        let f = self: super: let x = f0 super; in if isFunction x then f0 self super else x;
        in extensible (self: let super = rattrs self; in super // f self super);
      finalPackage = build args overrideAttrs;
    in
    finalPackage;
  build = args: overrideAttrs:
    let
      name = args.name or "${args.pname}-${args.version}";
      passthru = args.passthru or { };
      own = removeAttrs args [ "passthru" "meta" "env" "finalPackage" "overrideAttrs" "pos" "name" ];
      # lazy in every value, as nixpkgs': the names never depend on the package set
      structured = args.__structuredAttrs or false;  # then values go to .attrs.json as they are
      envAttrs = mapAttrs (_: v: if structured && !isFunction v then v else envValue v) (own // (args.env or { }));
      drv = derivation (envAttrs // {
        __ignoreNulls = true;
        inherit name system;
        builder = "/bin/bash";
        args = [ "-c" ''source ${./setup.sh}; genericBuild; true'' ];
        outputs = args.outputs or [ "out" ];
      });
    in
    drv // passthru // {
      inherit name passthru overrideAttrs;
      meta = args.meta or { };
      drvAttrs = args;
    } // lib.optionalAttrs (args ? pname) { inherit (args) pname; }
      // lib.optionalAttrs (args ? version) { inherit (args) version; };

  # The host's shared libraries, as a package with lib/ (what a nixpkgs library output holds): copies, not
  # links (auto-patchelf.py resolves links, and a host folder must not end up in a RUNPATH).
  hostLibs = name: sonames: hostLibsAnd name sonames "";
  hostLibsAnd = name: sonames: more: run name { } ''
    ${more}
    mkdir -p "$out/lib"
    for so in ${concatStringsSep " " sonames}; do
      for d in /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu /usr/lib64 /lib64; do
        if [ -e "$d/$so" ]; then cp -L "$d/$so" "$out/lib/$so"; break; fi
      done
    done
  '';

  # A host tool folder: $out/bin/<tool> -> the host's.
  hostTools = name: tools: run name { } ''
    mkdir -p "$out/bin"
    for t in ${concatStringsSep " " tools}; do
      p=$(command -v "$t"); ln -s "$p" "$out/bin/$t"
    done
  '';

  glibc = hostLibsAnd "glibc-${host.glibcVersion}" [ "libc.so.6" "libm.so.6" "libdl.so.2" "libpthread.so.0" "librt.so.1" "libutil.so.1" "libresolv.so.2" "libmvec.so.1" "libanl.so.1" "libcrypt.so.1" "ld-linux-x86-64.so.2" ] ''mkdir -p "$out/bin"; cp /sbin/ldconfig "$out/bin/ldconfig"''
    // { pname = "glibc"; version = host.glibcVersion; linuxHeaders.version = "6.1"; bin = glibcBin; };
  # glibc.bin/bin/ldconfig as nixpkgs builds it: its dont-use-system-ld-so-cache.patch compiles in
  # PREFIX "/etc/ld.so.cache" and PREFIX "/etc/ld.so.conf", PREFIX being glibc's out path (which holds neither),
  # so `ldconfig -p` fails there and a caller's -C/-f win. Here: Debian's ldconfig given those two first.
  # (glibc's own bin/ldconfig above, Debian's as it is, stays: glibc's path is in every patched wheel.)
  glibcBin = run "glibc-${host.glibcVersion}-bin" { } ''
    mkdir -p "$out/bin" "$out/libexec"
    cp /sbin/ldconfig "$out/libexec/ldconfig"
    printf '#!/bin/bash\nexec %s -C %s -f %s "$@"\n' "$out/libexec/ldconfig" ${glibc}/etc/ld.so.cache ${glibc}/etc/ld.so.conf > "$out/bin/ldconfig"
    chmod +x "$out/bin/ldconfig"
  '';
  gccLib = hostLibs "gcc-lib" [ "libstdc++.so.6" "libgcc_s.so.1" "libgomp.so.1" "libquadmath.so.0" "libatomic.so.1" ];
  zlib = hostLibs "zlib" [ "libz.so.1" ];

  # nix-support/dynamic-linker and orig-libc: what auto-patchelf.py reads from $NIX_BINTOOLS.
  bintools = run "bintools-wrapper" { } ''
    mkdir -p "$out/nix-support"
    echo /lib64/ld-linux-x86-64.so.2 > "$out/nix-support/dynamic-linker"
    echo ${glibc} > "$out/nix-support/orig-libc"
  '';

  stdenv = {
    inherit mkDerivation;
    shell = "/bin/bash";
    isLinux = true;
    isDarwin = false;
    system = system;
    buildPlatform = platform;
    hostPlatform = platform;
    targetPlatform = platform;
    # the C compiler wrapper (bin/cc): the host's gcc
    cc = hostTools "gcc-wrapper" [ "cc" "gcc" ] // { cc.lib = gccLib; libc = glibc; inherit bintools; };
  };

  # nixpkgs pkgs/build-support/setup-hooks/make-setup-hook.nix
  makeSetupHook =
    { name ? lib.warn "calling makeSetupHook without passing a name is deprecated." "hook"
    , propagatedBuildInputs ? [ ], depsTargetTargetPropagated ? [ ], meta ? { }, passthru ? { }
    , substitutions ? { }
    }: script:
    let
      str = v: if v == null then "" else if isPath v then "${v}" else toString v;
      names = attrNames substitutions;
      text = replaceStrings (map (n: "@${n}@") names) (map (n: str substitutions.${n}) names) (readFile script);
    in
    mkDerivation {
      inherit name meta passthru;
      hook = self.writeText "${name}.sh" text;
      propagated = filter (x: x != null) propagatedBuildInputs;
      buildCommand = ''
        mkdir -p "$out/nix-support"
        cp "$hook" "$out/nix-support/setup-hook"
        if [ -n "$propagated" ]; then echo $propagated > "$out/nix-support/propagated-build-inputs"; fi
      '';
    };

  # An interpreter: the host's, in a prefix that looks like nixpkgs' python3 (bin/, lib/, include/).
  mkPython = minor: hostPython:
    let
      pythonVersion = "3.${minor}";
      full = host.pythonVersions.${pythonVersion};
      drv = run "python3-${full}" { } ''
        real=$(readlink -f ${hostPython})
        prefix=$(dirname "$(dirname "$real")")
        mkdir -p "$out/bin"
        ln -s "$real" "$out/bin/python${pythonVersion}"
        ln -s python${pythonVersion} "$out/bin/python3"
        ln -s python3 "$out/bin/python"
        ln -s "$prefix/lib" "$out/lib"
        ln -s "$prefix/include" "$out/include"
      '';
      self' = drv // rec {
        pname = "python3";
        version = full;
        inherit pythonVersion stdenv;
        implementation = "cpython";
        sourceVersion = let v = lib.splitVersion full; in { major = head v; minor = builtins.elemAt v 1; patch = builtins.elemAt v 2; suffix = ""; };
        libPrefix = "python${pythonVersion}";
        executable = "python${pythonVersion}";
        sitePackages = "lib/${libPrefix}/site-packages";
        interpreter = "${drv}/bin/${executable}";
        isPy3k = true;
        pythonOnBuildForHost = self';
        pythonAtLeast = lib.versionAtLeast pythonVersion;
        pythonOlder = lib.versionOlder pythonVersion;
        passthru = { inherit pythonVersion implementation sourceVersion executable sitePackages interpreter pythonOnBuildForHost; };
      };
    in
    self';

  pythons = lib.mapAttrs' (v: p: lib.nameValuePair "python3${lib.removePrefix "3." v}" (mkPython (lib.removePrefix "3." v) p)) host.pythons;

  self = pythons // {
    inherit lib system stdenv makeSetupHook glibc zlib;
    buildPackages = self;
    pkgs = self;
    callPackage = lib.callPackageWith self;
    newScope = extra: lib.callPackageWith (self // extra);
    callPackages = lib.callPackagesWith self;

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
      mkDerivation ({ inherit name buildCommand; } // env);
    runCommandLocal = self.runCommand;

    writeText = name: text: run name { inherit text; passAsFile = [ "text" ]; } ''cp "$textPath" "$out"'';

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

    # nixpkgs pkgs/build-support/replace-vars (no @name@ may be left)
    replaceVars = path: attrs:
      let
        names = attrNames attrs;
        text = replaceStrings (map (n: "@${n}@") names) (map (n: toString attrs.${n}) names) (readFile path);
      in
      self.writeText (baseNameOf path) text;

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
      else mkDerivation {
        inherit name buildInputs;
        nativeBuildInputs = packages ++ nativeBuildInputs;
        shellHook = attrs.shellHook or "";
        env = attrs.env or { };
        # nixpkgs' mkShell builds: its output is the shell's environment, with a warning
        buildCommand = ''{ echo "------------------------------------------------------------"; echo " WARNING: the existence of this path is not guaranteed."; echo " It is an internal implementation detail for pkgs.mkShell."; echo "------------------------------------------------------------"; echo; export; } >> "$out"'';
      };

    # pkgs/development/interpreters/python/manylinux: the libraries manylinux wheels may link
    pythonManylinuxPackages = rec {
      manylinux1 = [ glibc gccLib zlib (hostLibs "manylinux-host-libs" [ "libGL.so.1" "libX11.so.6" "libglib-2.0.so.0" ]) ];
      manylinux2010 = manylinux1;
      manylinux2014 = manylinux1;
    };

    # What build-system-pkgs' overlay takes from nixpkgs' own Python packages
    # (pkgs/development/python-modules/setuptools-scm/setup-hook.sh)
    python3Packages.setuptools-scm.setupHook = self.writeText "setup-hook.sh" ''
      if [ -z "''${dontSetSetuptoolsScmVersion-}" ]; then export SETUPTOOLS_SCM_PRETEND_VERSION="$version"; fi
    '';

    # autoPatchelfHook: nixpkgs' setup hook and script (copied in by the tests: scripts/)
    auto-patchelf = self.writeShellScriptBin "auto-patchelf" ''
      export PATH=${hostPath}
      exec ${host.pelfPython} ${self.replaceVars ./scripts/auto-patchelf.py { defaultBintools = bintools; }} "$@"
    '';
    autoPatchelfHook = makeSetupHook {
      name = "auto-patchelf-hook";
      propagatedBuildInputs = [ self.auto-patchelf bintools ];
      substitutions.hostPlatform = platform.config;
    } ./scripts/auto-patchelf.sh;

    coreutils = hostTools "coreutils" [ "mkdir" "ln" "cp" "chmod" "rm" "mv" "cat" "echo" "ls" "env" "readlink" "dirname" "basename" "touch" ];
    bashInteractive = hostTools "bash-interactive" [ "bash" "sh" ];
    runtimeShellPackage = hostTools "bash" [ "bash" "sh" ];
    git = hostTools "git" [ "git" ];
    patchelf = hostTools "patchelf" [ "patchelf" ];
    unzip = hostTools "unzip" [ "unzip" ];
    uv = run "uv" { } ''mkdir -p "$out/bin"; ln -s ${host.uv} "$out/bin/uv"'';
    skopeo = hostTools "skopeo" [ "skopeo" ];
    nix-prefetch-git = hostTools "nix-prefetch-git" [ "git" ];
    cacert = run "nss-cacert" { } ''mkdir -p "$out/etc/ssl/certs"; cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-bundle.crt"'';

    # nixpkgs pkgs/build-support/docker/default.nix. streamLayeredImage as nixpkgs builds it: a customisation
    # layer (the contents linked into /, extraCommands, fakeRootCommands, as a tar), the closure of that
    # layer and the base config ordered by nixpkgs' closure-graph.py (references-by-popularity), the first
    # maxLayers - 1 paths one layer each and the rest in one layer, and nixpkgs' stream_layered_image.py
    # writing the docker-archive. buildLayeredImage compresses that stream (compressor: none, gz, zstd).
    # fakeRootCommands run as the build user (root here: this Nix has no build users), not under fakeroot.
    dockerTools = rec {
      streamLayeredImage =
        { name, tag ? null, fromImage ? null, contents ? [ ], config ? { }, architecture ? "amd64"
        , created ? "1970-01-01T00:00:01Z", mtime ? "1970-01-01T00:00:01Z", uid ? 0, gid ? 0
        , uname ? "root", gname ? "root", maxLayers ? 100, extraCommands ? "", fakeRootCommands ? ""
        , enableFakechroot ? false, includeStorePaths ? true, includeNixDB ? false, passthru ? { }
        , meta ? { }, layeringPipeline ? null, debug ? false, extraExcludePaths ? [ ]
        }:
        let
          contentsList = if isList contents then contents else [ contents ];
          baseJson = self.writeText "${name}-base.json" (toJSON { inherit config architecture; os = "linux"; });
          customisationLayer = mkDerivation {
            name = "${name}-customisation-layer";
            paths = contentsList;
            inherit extraCommands fakeRootCommands;
            buildCommand = ''
              mkdir -p root
              for p in $paths; do (cd "$p" && find . -mindepth 1 \( -type d -printf 'd %p\n' -o -printf 'l %p\n' \)) | while read -r kind rel; do
                if [ "$kind" = d ]; then mkdir -p "root/$rel"; elif [ ! -e "root/$rel" ]; then ln -s "$p/''${rel#./}" "root/$rel"; fi
              done; done
              (cd root && eval "$extraCommands")
              (cd root && eval "$fakeRootCommands")
              mkdir -p "$out"
              tar -C root --sort=name --numeric-owner --owner=0 --group=0 --mtime=@1 --hard-dereference -cf "$out/layer.tar" .
              sha256sum "$out/layer.tar" | cut -f 1 -d ' ' > "$out/checksum"
            '';
          };
          closureRoots = lib.optionals includeStorePaths [ baseJson customisationLayer ];
          excludePaths = extraExcludePaths ++ [ baseJson customisationLayer ];
          layers = mkDerivation {
            name = "${name}-layers.json";
            __structuredAttrs = true;
            exportReferencesGraph.graph = closureRoots;
            exclude = map toString excludePaths;
            inherit maxLayers;
            buildCommand = ''
              ${host.pelfPython} ${./scripts/closure-graph.py} "$NIX_BUILD_TOP/.attrs.json" graph > paths
              ${host.pelfPython} -c '
              import json, sys
              attrs = json.load(open(sys.argv[1]))
              exclude = set(attrs["exclude"])
              paths = [p for p in open("paths").read().split() if p not in exclude]
              n = attrs["maxLayers"] - 1
              layers = [[p] for p in paths[:n - 1]] + ([paths[n - 1:]] if paths[n - 1:] else [])
              json.dump(layers, open(attrs["outputs"]["out"], "w"))
              ' "$NIX_BUILD_TOP/.attrs.json"
            '';
          };
          conf = self.runCommand "${name}-conf.json" {
            inherit layers baseJson customisationLayer created mtime uid gid uname gname;
            repoTag = "${lib.toLower name}:${if tag == null then "latest" else tag}";
          } ''
            ${host.pelfPython} -c '
            import json, os
            e = os.environ
            conf = json.load(open(e["baseJson"]))
            conf.update(store_dir="/nix/store", from_image=None, store_layers=json.load(open(e["layers"])),
                        customisation_layer=e["customisationLayer"], repo_tag=e["repoTag"], created=e["created"],
                        mtime=e["mtime"], uid=e["uid"], gid=e["gid"], uname=e["uname"], gname=e["gname"])
            json.dump(conf, open(e["out"], "w"), indent=1)
            '
          '';
        in
        if fromImage != null || layeringPipeline != null || includeNixDB || enableFakechroot then
          throw "stand-in dockerTools: fromImage/layeringPipeline/includeNixDB/enableFakechroot are not used by comfyver"
        else if maxLayers < 2 then throw "the maxLayers argument of dockerTools.buildLayeredImage function must be greather than 1 (current value: ${toString maxLayers})"
        else (self.writeShellScriptBin "stream-${name}" ''
          exec ${host.pelfPython} ${./scripts/stream_layered_image.py} ${conf} "$@"
        '') // passthru // { inherit conf; imageTag = if tag == null then "latest" else tag; isExe = true; };

      buildLayeredImage = { compressor ? "gz", ... }@args:
        let
          stream = streamLayeredImage (removeAttrs args [ "compressor" ]);
          compress = { none = "cat"; gz = "gzip -1 -n"; zstd = "zstd -T0 -q"; }.${compressor}
            or (throw "dockerTools: unknown compressor ${compressor}");
          ext = { none = ""; gz = ".gz"; zstd = ".zst"; }.${compressor};
        in
        # as nixpkgs: the image's passthru is { imageTag, stream }; the caller's passthru is on `stream`
        self.runCommand "${baseNameOf args.name}.tar${ext}" {
          passthru = { inherit (stream) imageTag; inherit stream; };
        } "${stream}/bin/stream-${args.name} | ${compress} > $out";
    };
  };
in
self
