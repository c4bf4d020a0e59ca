#!/usr/bin/env bash
# Push store paths, with their closures, to a Nix binary cache, signed with the cache's key.
#
#   NIX_CACHE_URL='s3://my-nix-cache?endpoint=https://s3.example.com&region=auto' \
#   NIX_SIGNING_KEY="$(cat cache-secret-key)" nix/push-cache.sh ./result ...
#
# NIX_CACHE_URL: any store URL `nix copy --to` takes (s3://, file://, ssh://; compression=zstd is added
# unless it names one); S3 keys come from the
# usual AWS_* variables. NIX_SIGNING_KEY: the secret key's text (`nix-store
# --generate-binary-cache-key NAME secret public`). The key never appears on a command line and no file
# holds it, even after a kill -9: a temporary file (readable only by this user) is opened and deleted
# before the key is written into it, and nix reads it through the open descriptor (/dev/fd/4).
set -euo pipefail
: "${NIX_CACHE_URL:?set NIX_CACHE_URL to the cache (e.g. s3://bucket?endpoint=https://...&region=...)}"
: "${NIX_SIGNING_KEY:?set NIX_SIGNING_KEY to the secret key of the cache (nix-store --generate-binary-cache-key)}"
[ "$#" -gt 0 ] || { echo "usage: nix/push-cache.sh STORE-PATH-OR-RESULT-LINK..." >&2; exit 2; }
umask 077
key=$(mktemp)
exec 3>"$key" 4<"$key"  # 3 writes, 4 reads from the start (on macOS /dev/fd/N shares N's offset)
rm -f "$key"
printf '%s\n' "$NIX_SIGNING_KEY" >&3
exec 3>&-
case "$NIX_CACHE_URL" in *\?*) sep='&' ;; *) sep='?' ;; esac
# zstd unless the URL says otherwise: Nix's default (xz) takes most of an hour on a 7 GB CUDA env
case "$NIX_CACHE_URL" in *compression=*) extra="" ;; *) extra="&compression=zstd" ;; esac
nix --extra-experimental-features nix-command copy --to "${NIX_CACHE_URL}${sep}secret-key=/dev/fd/4${extra}" "$@"
