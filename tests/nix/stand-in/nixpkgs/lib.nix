# The subset of nixpkgs' `lib` that comfyver's nix/ uses, with the same
# semantics (nixpkgs lib/{attrsets,lists,strings,fixed-points,trivial}.nix).
# A function missing here is a function nix/ must not start using untested.
let
  inherit (builtins) foldl' elem filter head tail length concatLists concatMap listToAttrs attrNames
    concatStringsSep substring stringLength split isList isFunction mapAttrs;
in
rec {
  # trivial / fixed points
  id = x: x;
  fix = f: let x = f x; in x;
  extends = overlay: f: final: let prev = f final; in prev // overlay final prev;
  composeExtensions = f: g: final: prev:
    let fApplied = f final prev; prev' = prev // fApplied; in fApplied // g final prev';
  composeManyExtensions = foldl' (acc: o: composeExtensions acc o) (final: prev: { });

  # lists
  inherit head elem filter concatMap;
  reverseList = xs: let l = length xs; in builtins.genList (n: builtins.elemAt xs (l - n - 1)) l;
  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];

  # attrsets
  nameValuePair = name: value: { inherit name value; };
  genAttrs = names: f: listToAttrs (map (n: nameValuePair n (f n)) names);
  mapAttrsToList = f: attrs: map (n: f n attrs.${n}) (attrNames attrs);
  inherit listToAttrs mapAttrs attrNames;
  attrValues = builtins.attrValues;

  # strings
  hasPrefix = pref: str: substring 0 (stringLength pref) str == pref;
  removePrefix = pref: str:
    if hasPrefix pref str then substring (stringLength pref) (stringLength str - stringLength pref) str else str;
  optionalString = cond: s: if cond then s else "";
  inherit concatStringsSep;
  concatMapStrings = f: list: concatStringsSep "" (map f list);
  splitString = sep: s:
    let
      escaped = concatStringsSep "" (map (c: if elem c [ "." "*" "+" "?" "(" ")" "[" "]" "{" "}" "|" "^" "$" "\\" ] then "\\" + c else c)
        (filter (x: x != "") (map (x: if isList x then "" else x) (split "" sep)) ++ [ ]));
    in filter (x: !isList x) (split (if escaped == "" then sep else escaped) s);
  escapeShellArg = arg: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString arg) + "'";
  makeSearchPath = sub: paths: concatStringsSep ":" (map (p: "${p}/${sub}") (filter (p: p != null) paths));
  makeBinPath = makeSearchPath "bin";

  # files
  importTOML = path: builtins.fromTOML (builtins.readFile path);
  importJSON = path: builtins.fromJSON (builtins.readFile path);
}
