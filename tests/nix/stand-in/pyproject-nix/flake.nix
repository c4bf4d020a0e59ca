{
  description = "Strict stand-in for pyproject.nix's build.packages (tests only, see ../README.md)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }: {
    build.packages = import ./packages.nix;
    lib = { };
  };
}
