{
  description = "Strict stand-in for pyproject-nix/build-system-pkgs (tests only, see ../README.md)";

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
  };

  outputs = { self, nixpkgs, pyproject-nix, uv2nix }: {
    # build systems as packages of the Python set
    overlays.default = final: prev:
      builtins.listToAttrs (map (n: {
        name = n;
        value = final.stdenv.mkDerivation { pname = n; version = "0"; passthru.dependencies = [ ]; };
      }) [ "hatchling" "setuptools" "wheel" "flit-core" "poetry-core" ]);
  };
}
