{
  description = "Stand-in nixpkgs for tests: nixpkgs' real lib, hand-written packages (see ../README.md)";

  outputs = { self }:
    let
      # Written by the tests (tests/nix/harness.py: stand_in_nixpkgs): the host's interpreters and tools.
      host = builtins.fromJSON (builtins.readFile ./host.json);
    in
    {
      # nixpkgs' lib/, copied in by the tests from ../shared/nix-inputs/nixpkgs-lib
      lib = import ./lib;
      legacyPackages.x86_64-linux = import ./pkgs.nix {
        inherit host;
        inherit (self) lib;
        system = "x86_64-linux";
      };
    };
}
