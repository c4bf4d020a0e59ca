#!/usr/bin/env bash
# Push store paths, with their closures, to a Nix binary cache, signed with the cache's key.
#
#   NIX_CACHE_URL='s3://my-nix-cache?endpoint=https://s3.example.com&region=auto' \
#   NIX_SIGNING_KEY="$(cat cache-secret-key)" nix/push-cache.sh ./result ...
#
# NIX_CACHE_URL: any store URL `nix copy --to` takes (s3://, file://, ssh://; compression=zstd is added
# unless it names one); S3 keys come from the
# usual AWS_* variables. NIX_SIGNING_KEY: the secret key's text (`nix-store
# --generate-binary-cache-key NAME secret public`). The key is written to a temporary file readable only
# by this user, removed on exit, and never appears on a command line.
set -euo pipefail
: "${NIX_CACHE_URL:?set NIX_CACHE_URL to the cache (e.g. s3://bucket?endpoint=https://...&region=...)}"
: "${NIX_SIGNING_KEY:?set NIX_SIGNING_KEY to the secret key of the cache (nix-store --generate-binary-cache-key)}"
[ "$#" -gt 0 ] || { echo "usage: nix/push-cache.sh STORE-PATH-OR-RESULT-LINK..." >&2; exit 2; }
umask 077
key=$(mktemp)
trap 'rm -f "$key"' EXIT
printf '%s\n' "$NIX_SIGNING_KEY" > "$key"
case "$NIX_CACHE_URL" in *\?*) sep='&' ;; *) sep='?' ;; esac
# zstd unless the URL says otherwise: Nix's default (xz) takes most of an hour on a 7 GB CUDA env
case "$NIX_CACHE_URL" in *compression=*) extra="" ;; *) extra="&compression=zstd" ;; esac
nix --extra-experimental-features nix-command copy --to "${NIX_CACHE_URL}${sep}secret-key=${key}${extra}" "$@"
