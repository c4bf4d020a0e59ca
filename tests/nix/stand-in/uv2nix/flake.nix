{
  description = "Strict stand-in for uv2nix's lib.workspace (tests only, see ../README.md)";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    pyproject-nix = {
      url = "github:pyproject-nix/pyproject.nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = { self, nixpkgs, pyproject-nix }: {
    lib.workspace = import ./workspace.nix { inherit (nixpkgs) lib; };
  };
}
