# The stand-in stdenv's generic builder (tests only): the parts of nixpkgs'
# pkgs/stdenv/generic/setup.sh that the real pyproject.nix hooks and the real
# auto-patchelf.sh setup hook call, with the same names and semantics.
# Tools come from the host (there is no nixpkgs here), then from the inputs' bin/.
set -eu -o pipefail

# __structuredAttrs: the attributes are bash variables in .attrs.sh (outputs an associative array)
if [ -e "${NIX_BUILD_TOP:-.}/.attrs.sh" ]; then
    # shellcheck disable=SC1091
    source "$NIX_BUILD_TOP/.attrs.sh"
    export out="${outputs[out]}"
    unset outputs
    outputs=out
fi
export PATH="/usr/local/bin:/usr/bin:/bin"
export HOME=/homeless-shelter
: "${outputs:=out}"
: "${NIX_BUILD_CORES:=1}"
export NIX_BUILD_CORES

runHook() {
    local hookName="$1"; shift
    local hooksSlice="${hookName%Hook}Hooks[@]"
    local hook
    for hook in "_callImplicitHook 0 $hookName" ${!hooksSlice+"${!hooksSlice}"}; do
        _eval "$hook" "$@"
    done
    return 0
}

_callImplicitHook() {
    local def="$1" hookName="$2"
    if declare -F "$hookName" >/dev/null; then "$hookName"
    elif [ -n "${!hookName:-}" ]; then eval "${!hookName}"
    else return "$def"; fi
}

_eval() {
    if declare -F "$1" >/dev/null 2>&1; then "$@"; else eval "$1"; fi
}

addToSearchPath() {
    local varName="$1" dir="$2"
    if [ -d "$dir" ]; then export "${varName}=${dir}${!varName:+:${!varName}}"; fi
}

stripHash() {
    local strippedName
    strippedName="$(basename -- "$1")"
    if echo "$strippedName" | grep -q '^[a-z0-9]\{32\}-'; then
        echo "$strippedName" | cut -c34-
    else
        echo "$strippedName"
    fi
}

# concatTo ARRAY NAME...: append each NAME's words (a string) or elements (an array) to ARRAY.
concatTo() {
    local -n targetref="$1"; shift
    local name type
    for name in "$@"; do
        if type=$(declare -p "$name" 2>/dev/null); then
            local -n nameref="$name"
            case "${type#* }" in
                -a*|-A*) targetref+=("${nameref[@]}") ;;
                *) # shellcheck disable=SC2206
                   targetref+=(${nameref-}) ;;
            esac
        fi
    done
}

getAllOutputNames() { echo "$outputs"; }

# addEnvHooks OFFSET FUNC: as nixpkgs registers a hook at the target offset of the package whose setup hook
# calls it, FUNC runs for the inputs of the derivation being built (buildInputs and what they propagate),
# not for the native inputs: auto-patchelf's gatherLibraries sees the libraries the package links.
envHooks=()
addEnvHooks() { shift; envHooks+=("$@"); }

# Inputs: every native/build input and what it propagates (nix-support/propagated-*),
# depth first; each one's setup hook is sourced once.
declare -A _seen=()
_inputs=()
_hostInputs=()
findInputs() {
    local pkg="$1" host="$2" f p
    [ -n "$pkg" ] || return 0
    if [ -n "$host" ]; then _hostInputs+=("$pkg"); fi
    [ -z "${_seen[$pkg]:-}" ] || return 0
    _seen[$pkg]=1
    _inputs+=("$pkg")
    if [ -f "$pkg/nix-support/setup-hook" ]; then
        hostOffset=0 targetOffset=1
        # shellcheck disable=SC1091
        source "$pkg/nix-support/setup-hook"
    fi
    for f in propagated-build-inputs propagated-native-build-inputs; do
        if [ -f "$pkg/nix-support/$f" ]; then
            for p in $(cat "$pkg/nix-support/$f"); do findInputs "$p" "$host"; done
        fi
    done
}
for _p in ${nativeBuildInputs:-} ${propagatedNativeBuildInputs:-}; do findInputs "$_p" ""; done
for _p in ${buildInputs:-} ${propagatedBuildInputs:-}; do findInputs "$_p" 1; done
for _p in "${_inputs[@]}"; do
    if [ -d "$_p/bin" ]; then PATH="$_p/bin:$PATH"; fi
done
declare -A _hooked=()
for _p in "${_hostInputs[@]}"; do
    [ -z "${_hooked[$_p]:-}" ] || continue
    _hooked[$_p]=1
    for _h in "${envHooks[@]}"; do "$_h" "$_p"; done
done
unset _p _h

unpackPhase() {
    runHook preUnpack
    if [ -d "$src" ]; then
        cp -r --no-preserve=mode "$src" "${sourceRoot:-source}"
    else
        case "$src" in
            *.zip|*.whl) mkdir -p source && unzip -qq "$src" -d source ;;
            *) mkdir -p source && tar -xf "$src" -C source --strip-components=1 ;;
        esac
    fi
    chmod -R u+w -- "${sourceRoot:-source}"
    cd "${sourceRoot:-source}"
    runHook postUnpack
}

patchPhase() {
    runHook prePatch
    local p
    for p in ${patches:-}; do patch -p1 < "$p"; done
    runHook postPatch
}

configurePhase() { runHook preConfigure; runHook postConfigure; }
buildPhase() { runHook preBuild; runHook postBuild; }
checkPhase() { runHook preCheck; runHook postCheck; }
installCheckPhase() { runHook preInstallCheck; runHook postInstallCheck; }
distPhase() { runHook preDist; runHook postDist; }
installPhase() {
    runHook preInstall
    echo "stand-in stdenv: no installPhase for $name" >&2
    return 1
}

# What the real fixupPhase records for later builds: propagated inputs; then postFixup (autoPatchelf).
fixupPhase() {
    runHook preFixup
    local output
    for output in $(getAllOutputNames); do
        [ -e "${!output}" ] || continue
        runHook fixupOutput
    done
    if [ -n "${propagatedBuildInputs:-}" ]; then
        mkdir -p "$out/nix-support"
        echo $propagatedBuildInputs > "$out/nix-support/propagated-build-inputs"
    fi
    if [ -n "${propagatedNativeBuildInputs:-}" ]; then
        mkdir -p "$out/nix-support"
        echo $propagatedNativeBuildInputs > "$out/nix-support/propagated-native-build-inputs"
    fi
    if [ -n "${setupHook:-}" ]; then
        mkdir -p "$out/nix-support"
        cp "$setupHook" "$out/nix-support/setup-hook"
    fi
    runHook postFixup
}

genericBuild() {
    if [ -n "${buildCommand:-}" ]; then
        eval "$buildCommand"
        return
    fi
    local phases="${prePhases:-} unpackPhase patchPhase ${preConfigurePhases:-} configurePhase ${preBuildPhases:-} buildPhase checkPhase ${preInstallPhases:-} installPhase ${preFixupPhases:-} fixupPhase installCheckPhase ${preDistPhases:-} distPhase ${postPhases:-}"
    local curPhase skip
    cd "$NIX_BUILD_TOP"
    for curPhase in $phases; do
        skip=
        case "$curPhase" in
            unpackPhase) [ -z "${dontUnpack:-}" ] || skip=1 ;;
            patchPhase) [ -z "${dontPatch:-}" ] || skip=1 ;;
            configurePhase) [ -z "${dontConfigure:-}" ] || skip=1 ;;
            buildPhase) [ -z "${dontBuild:-}" ] || skip=1 ;;
            checkPhase) [ -n "${doCheck:-}" ] || skip=1 ;;
            installPhase) [ -z "${dontInstall:-}" ] || skip=1 ;;
            fixupPhase) [ -z "${dontFixup:-}" ] || skip=1 ;;
            installCheckPhase) [ -n "${doInstallCheck:-}" ] || skip=1 ;;
            distPhase) [ -n "${doDist:-}" ] || skip=1 ;;
        esac
        [ -z "$skip" ] || continue
        if [ -n "${!curPhase:-}" ]; then eval "${!curPhase}"; else "$curPhase"; fi
    done
}

# As nixpkgs' setup.sh ends: the builder's own options again (bash -e; no -u, no pipefail in phases).
set +u +o pipefail
