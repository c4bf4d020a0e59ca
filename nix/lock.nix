# Read and validate versions/<id>/version.json (schema 1) in plain Nix.
#
# The JSON Schema scripts/comfyver/base/schema/version-1.schema.json is the source of
# truth; this file checks what Nix relies on, so that a bad lock fails at
# evaluation with a message naming the version, the field and what to do next.
# Only builtins are used: the checks run the same with nixpkgs and its stand-in.
let
  inherit (builtins)
    all attrNames isAttrs isBool isInt isList isString match throw typeOf elem;

  fail = id: field: msg:
    throw "comfyver: version '${id}': ${field}: ${msg} (fix versions/${id}/version.json, e.g. with `comfyver update ${id}`, then commit it)";

  show = v: if isString v then "\"${v}\"" else if v == null then "null" else "a ${typeOf v}";

  matches = re: v: isString v && match re v != null;

  need = id: field: ok: what: v: if ok v then v else fail id field "expected ${what}, got ${show v}";

  sri = id: field: need id field (matches "sha256-[A-Za-z0-9+/]{43}=") "an SRI sha256 hash (\"sha256-\" and 44 base64 characters)";
  hex = id: field: need id field (matches "[0-9a-f]{64}") "a sha256 in hex (64 lowercase hex digits)";
  rev = id: field: need id field (matches "[0-9a-f]{40}") "a full git commit (40 lowercase hex digits)";
  bool = id: field: need id field isBool "true or false";
  # scheme checked, no whitespace, no user:password@, no token in the query
  url = schemes: shown: id: field: v:
    let v' = need id field (matches "(${schemes})://[^[:space:]]+") "a URL (${shown}) without spaces" v; in
    if match "[a-z]+://[^/@]*:[^/@]*@.*" v' != null then fail id field "the URL carries a password; remove it (tokens come from HF_TOKEN / CIVITAI_TOKEN at build time)"
    else if match ".*[?&]([Tt]oken|access_token|api_?key)=.*" v' != null then fail id field "the URL carries a token in its query; remove it (tokens come from HF_TOKEN / CIVITAI_TOKEN at build time)"
    else v';
  gitUrl = url "https?|file|ssh|git" "https, http, file, ssh or git";
  fetchUrl = url "https?|file|gs" "https, http, file or gs";

  # Only the keys the schema allows; an unknown key is most likely a typo.
  onlyKeys = id: field: allowed: v:
    if !isAttrs v then fail id field "expected an object, got ${show v}"
    else
      let extra = builtins.filter (k: !elem k allowed) (attrNames v);
      in if extra == [ ] then v
         else fail id field "unknown key '${builtins.head extra}' (allowed: ${builtins.concatStringsSep ", " allowed})";

  has = id: field: v: key:
    if v ? ${key} then v.${key} else fail id "${field}.${key}" "missing";

  gitLocked = id: field: l:
    let l' = onlyKeys id field [ "type" "url" "rev" "ref" "hash" "submodules" ] l; in {
      type = need id "${field}.type" (v: v == "git") "\"git\"" (has id field l' "type");
      url = gitUrl id "${field}.url" (has id field l' "url");
      rev = rev id "${field}.rev" (has id field l' "rev");
      hash = sri id "${field}.hash" (has id field l' "hash");
      submodules = bool id "${field}.submodules" (has id field l' "submodules");
    } // (if l' ? ref then { ref = need id "${field}.ref" isString "a string" l'.ref; } else { });

  zipLocked = id: field: l:
    let l' = onlyKeys id field [ "type" "url" "hash" "stripRoot" "version" ] l; in {
      type = "zip";
      url = fetchUrl id "${field}.url" (has id field l' "url");
      hash = sri id "${field}.hash" (has id field l' "hash");
      stripRoot = bool id "${field}.stripRoot" (has id field l' "stripRoot");
    } // (if l' ? version then { version = need id "${field}.version" isString "a string" l'.version; } else { });

  nodeName = "[A-Za-z0-9][A-Za-z0-9._-]{0,99}";
  # first segment a plain folder name; no empty, "." or ".." segments; no backslash
  modelPath = p:
    isString p
    && match "[A-Za-z0-9_][A-Za-z0-9_.-]*(/[^/\\\\]+)+" p != null
    && all (seg: seg != "." && seg != "..") (builtins.filter isString (builtins.split "/" p));

  node = id: name: n:
    let
      field = "nodes.${name}";
      n' = onlyKeys id field [ "original" "locked" "provides" "writable" ] n;
      locked = has id field n' "locked";
      type = if isAttrs locked && locked ? type then locked.type else null;
    in
    if match nodeName name == null then fail id field "node name must match ${nodeName}"
    else {
      original = has id field n' "original";
      locked =
        if type == "git" then gitLocked id "${field}.locked" locked
        else if type == "zip" then zipLocked id "${field}.locked" locked
        else fail id "${field}.locked.type" "expected \"git\" or \"zip\", got ${show type}";
      provides = if n' ? provides then need id "${field}.provides" isList "a list" n'.provides else [ ];
      writable = if n' ? writable then bool id "${field}.writable" n'.writable else false;
    };

  model = id: path: m:
    let
      field = "models.\"${path}\"";
      m' = onlyKeys id field [ "original" "locked" "from" ] m;
      l = onlyKeys id "${field}.locked" [ "url" "sha256" "size" "auth" "unverified" ] (has id field m' "locked");
    in
    if !modelPath path then fail id field "a model path is <folder>/<file> inside the models tree (no '..', no leading '/')"
    else {
      original = has id field m' "original";
      locked = {
        url = fetchUrl id "${field}.locked.url" (has id "${field}.locked" l "url");
        sha256 = hex id "${field}.locked.sha256" (has id "${field}.locked" l "sha256");
        size = need id "${field}.locked.size" (v: isInt v && v >= 0) "a size in bytes" (has id "${field}.locked" l "size");
        auth = if l ? auth then need id "${field}.locked.auth" (v: elem v [ "hf" "civitai" "gcs" ]) "\"hf\", \"civitai\" or \"gcs\"" l.auth else null;
      } // (if l ? unverified then {
        # sha256 and size given, not measured (lock --sha256 --size): the fixed-output fetch verifies the bytes
        unverified = need id "${field}.locked.unverified" (v: v == true) "true" l.unverified;
      } else { });
    } // (if m' ? from then {
      # the source was named by a workflow (comfyver fetches it from public addresses only)
      from = need id "${field}.from" (v: v == "workflow") "\"workflow\"" m'.from;
    } else { });

  torchFlavours = [ "cu128" "cu126" "cu124" "cu121" "cpu" "pypi" ];
  platforms = [ "linux-x86_64" "macos-arm64" ];

  validate = id: lock:
    let
      l = onlyKeys id "version.json" [ "schema" "id" "description" "comfyui" "nodes" "models" "python" "workflows" "choices" ] lock;
      py = onlyKeys id "python" [ "requires" "torch" "extra" "constraints" "platforms" ] (has id "version.json" l "python");
      core = onlyKeys id "comfyui" [ "original" "locked" ] (has id "version.json" l "comfyui");
      nodes = has id "version.json" l "nodes";
      models = has id "version.json" l "models";
    in
    if match "[a-z0-9][a-z0-9_-]{0,63}" id == null then
      throw "comfyver: versions/${id}: a version folder name must match [a-z0-9][a-z0-9_-]{0,63}; rename the folder"
    else if id == "default" then
      throw "comfyver: versions/default: \"default\" is reserved (devShells.default is the comfyver shell); rename the folder"
    else if (l.schema or null) != 1 then fail id "schema" "expected 1, got ${show (l.schema or null)}; this lock was written by another comfyver"
    else if (l.id or null) != id then fail id "id" "expected \"${id}\" (the folder name), got ${show (l.id or null)}"
    else if !isAttrs nodes then fail id "nodes" "expected an object, got ${show nodes}"
    else if !isAttrs models then fail id "models" "expected an object, got ${show models}"
    else {
      inherit id;
      description = l.description or "";
      comfyui = {
        original = has id "comfyui" core "original";
        locked = gitLocked id "comfyui.locked" (has id "comfyui" core "locked");
      };
      nodes = builtins.mapAttrs (node id) nodes;
      models = builtins.mapAttrs (model id) models;
      python = {
        requires = need id "python.requires" (v: isString v && v != "") "a Python version specifier such as \"==3.12.*\"" (has id "python" py "requires");
        torch = need id "python.torch" (v: elem v torchFlavours) "one of ${builtins.concatStringsSep ", " torchFlavours}" (has id "python" py "torch");
      } // (if py ? extra then {
        extra = need id "python.extra" (v: isList v && builtins.all isString v) "a list of requirement strings" py.extra;
      } else { }) // (if py ? constraints then {
        # uv's constraint-dependencies (import --from-install: the venv's versions); uv.lock already holds their effect
        constraints = need id "python.constraints" (v: isList v && builtins.all isString v) "a list of requirement strings" py.constraints;
      } else { }) // (if py ? platforms then {
        # what the Python lock is resolved for (comfyver lock --platform); the flake builds x86_64-linux only
        platforms =
          let ps = need id "python.platforms" (v: isList v && v != [ ] && builtins.all (p: elem p platforms) v)
                     "a non-empty list of ${builtins.concatStringsSep ", " platforms}" py.platforms;
          in if elem "linux-x86_64" ps then ps
             else fail id "python.platforms" "the Python lock is resolved for ${builtins.concatStringsSep ", " ps} only, and the flake builds x86_64-linux; re-lock with `comfyver lock ${id} --platform linux-x86_64`";
      } else { });
      workflows = need id "workflows" isList "a list" (l.workflows or [ ]);
    };

  # versionsDir: a path (e.g. ./versions); id: a folder name in it.
  read = versionsDir: id:
    let file = versionsDir + "/${id}/version.json"; in
    if !builtins.pathExists file then
      throw "comfyver: version '${id}': versions/${id}/version.json is missing (is it committed? a flake only sees git-tracked files)"
    else validate id (builtins.fromJSON (builtins.readFile file));

  # sha256 hex of the lock's canonical JSON (sorted keys, no spaces): comfyver's lockfile.lock_digest, which the
  # handler compares with a job's lock_digest (COMFYVER_LOCK_DIGEST).
  digest = versionsDir: id:
    builtins.hashString "sha256" (builtins.toJSON (builtins.fromJSON (builtins.readFile (versionsDir + "/${id}/version.json"))));

  # Every version folder: names of directories in versionsDir holding a version.json.
  ids = versionsDir:
    if !builtins.pathExists versionsDir then [ ]
    else
      let entries = builtins.readDir versionsDir; in
      builtins.filter (n: entries.${n} == "directory" && builtins.pathExists (versionsDir + "/${n}/version.json")) (attrNames entries);
in
{
  inherit validate read digest ids fail;
}
