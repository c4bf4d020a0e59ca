{
  description = "Strict stand-in for the part of nixpkgs comfyver uses (tests only, see ../README.md)";

  outputs = { self }:
    let
      # Written by the tests: the host Python that has torch and ComfyUI's requirements.
      host = if builtins.pathExists ./host.json then builtins.fromJSON (builtins.readFile ./host.json) else { };
    in
    {
      lib = import ./lib.nix;
      legacyPackages.x86_64-linux = import ./pkgs.nix {
        inherit (self) lib;
        system = "x86_64-linux";
        hostPython = host.python or "/usr/bin/python3";
      };
    };
}
