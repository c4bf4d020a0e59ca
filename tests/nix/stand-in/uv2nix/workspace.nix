# uv2nix lib/workspace.nix: loadWorkspace { workspaceRoot, config, uvLock, pyproject }
# -> { config, requires-python, mkPyprojectOverlay, mkEditablePyprojectOverlay, deps }.
# The stand-in reads the real uv.lock (TOML) and makes one package per locked
# package (its chosen wheel's url and hash recorded), dependencies as in the lock.
{ lib }:
let
  inherit (builtins) any attrNames filter hasContext head isAttrs isFunction isPath isString listToAttrs map
    match elem;

  isLocal = p: p.source ? editable || p.source ? virtual || p.source ? directory;

  # the wheel uv would install on x86_64 Linux
  pickWheel = p:
    let
      wheels = p.wheels or [ ];
      fits = w: match ".*(manylinux[^/]*x86_64|linux_x86_64|-none-any)\\.whl" w.url != null;
      ok = filter fits wheels;
    in if ok != [ ] then head ok else null;
in
{
  loadWorkspace =
    { workspaceRoot
    , config ? { }
    , uvLock ? lib.importTOML (workspaceRoot + "/uv.lock")
    , pyproject ? lib.importTOML (workspaceRoot + "/pyproject.toml")
    }:
    assert (isPath workspaceRoot || (isString workspaceRoot && hasContext workspaceRoot) || (isAttrs workspaceRoot && workspaceRoot ? outPath));
    assert isAttrs config || isFunction config;
    let
      lockVersion = uvLock.version or (throw "uv2nix: ${toString workspaceRoot}/uv.lock has no version: not a uv.lock");
      packages = if lockVersion == 1 then uvLock.package else throw "uv2nix: unsupported uv.lock version ${toString lockVersion}";
      locals = filter isLocal packages;
      # a name locked twice (different markers): the first is kept
      byName = listToAttrs (map (p: { name = p.name; value = p; }) packages);

      mkPackage = final: p:
        let
          wheel = pickWheel p;
        in
        final.stdenv.mkDerivation {
          pname = p.name;
          inherit (p) version;
          wheelUrl = if isLocal p then "" else if wheel == null then throw "uv2nix: ${p.name} ${p.version} has no wheel for x86_64 Linux in uv.lock; sourcePreference = \"wheel\" needs one" else wheel.url;
          wheelHash = if isLocal p || wheel == null then "" else wheel.hash;
          # as uv2nix's mkSpec: name -> extras
          passthru.dependencies = listToAttrs (map (d: { name = d.name; value = d.extra or [ ]; }) (p.dependencies or [ ]));
          passthru.optional-dependencies = builtins.mapAttrs (_: ds: listToAttrs (map (d: { name = d.name; value = d.extra or [ ]; }) ds))
            (p.optional-dependencies or { });
        };

      deps = {
        default = listToAttrs (map (p: { name = p.name; value = pyproject.tool.uv.default-groups or [ ]; }) locals);
        all = listToAttrs (map (p: { name = p.name; value = attrNames (p.optional-dependencies or { }) ++ attrNames (p.dev-dependencies or { }); }) locals);
        optionals = listToAttrs (map (p: { name = p.name; value = attrNames (p.optional-dependencies or { }); }) locals);
        groups = listToAttrs (map (p: { name = p.name; value = attrNames (p.dev-dependencies or { }); }) locals);
      };
    in
    {
      config = { no-binary = false; no-build = false; } // (if isFunction config then config { } else config);
      requires-python = uvLock.requires-python or null;
      inherit deps;

      mkPyprojectOverlay =
        { sourcePreference ? throw "No sourcePreference was passed, and could not be automatically inferred from workspace config"
        , environ ? { }
        , dependencies ? deps.all
        , pythonVersion ? null
        }:
        assert elem sourcePreference [ "wheel" "sdist" ] || throw "uv2nix: sourcePreference must be \"wheel\" or \"sdist\", got ${toString sourcePreference}";
        final: prev: builtins.mapAttrs (_: mkPackage final) byName;

      mkEditablePyprojectOverlay = { root ? toString workspaceRoot, members ? map (p: p.name) locals }:
        final: prev: { };
    };
}
