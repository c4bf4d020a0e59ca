# pyproject.nix build/packages.nix: `callPackage pyproject-nix.build.packages { python; }`
# gives a scope with overrideScope and mkVirtualEnv name spec. Packages come from
# overlays (uv2nix's mkPyprojectOverlay, build-system-pkgs). The stand-in venv
# links the host Python (which has the real packages) and records the resolved set.
{ python, newScope, buildPackages, stdenv, pkgs }:
let
  inherit (pkgs) lib;
  inherit (builtins) attrNames concatStringsSep genericClosure map;

  mkVirtualEnv = final: name: spec:
    let
      pkgOf = n: final.${n} or (throw "mkVirtualEnv ${name}: '${n}' is not in the Python package set");
      closure = genericClosure {
        startSet = map (n: { key = n; }) (attrNames spec);
        operator = item: map (d: { key = d; }) (attrNames ((pkgOf item.key).passthru.dependencies or { }));
      };
      members = map (i: pkgOf i.key) closure;
    in
    pkgs.runCommand name { } ''
      mkdir -p "$out/bin" "$out/${python.sitePackages}"
      ln -s ${python}/bin/python3 "$out/bin/python"
      ln -s ${python}/bin/python3 "$out/bin/python3"
      printf '%s\n' ${concatStringsSep " " (map (p: "${p.pname}=${p.version}=${p}") members)} > "$out/packages.txt"
    '';

  scope = f:
    let self = f self; in
    self // { overrideScope = g: scope (lib.extends g f); };
in
scope (final: {
  inherit python stdenv pkgs;
  mkVirtualEnv = mkVirtualEnv final;
})
