"""`comfyver push <id> --to REGISTRY/IMAGE[:TAG]`: copy the version's image to a registry."""

from __future__ import annotations

import json

from comfyver.base import project
from comfyver.cli.args import verb
from comfyver.ship import push


def register(sub) -> None:
    p = verb(sub, "push", run, help="push a version's OCI image to a container registry (skopeo)",
        description="Copy the image built by `nix build .#image-<id>` (docker-archive or streamLayeredImage "
                    "script, default ./result) to a registry with skopeo; layers the registry already has are "
                    "not sent again. The tag defaults to <id>-<first 12 hex of the lock digest>. Credentials: "
                    "$REGISTRY_USERNAME and $REGISTRY_PASSWORD, or --authfile. "
                    "Example: comfyver push sdxl-base --to ghcr.io/acme/comfyui")
    p.add_argument("version", metavar="ID", help="version id (versions/<id>/version.json)")
    p.add_argument("--to", required=True, metavar="REGISTRY/IMAGE[:TAG]", help="destination image")
    p.add_argument("--archive", metavar="FILE", help="image tar or stream script (default: ./result)")
    p.add_argument("--authfile", metavar="FILE", help="containers auth.json to use instead of $REGISTRY_USERNAME/PASSWORD")
    p.add_argument("--insecure", action="store_true",
                   help="plain HTTP / unverified TLS (automatic for localhost and 127.0.0.1)")
    p.add_argument("--retries", type=int, default=3, metavar="N", help="retries on network errors (default 3)")


def run(args) -> int:
    root = project.find_root()
    kw = dict(authfile=args.authfile, tls_verify=False if args.insecure else None, retries=args.retries)
    if args.json:
        result = push.push_version(root, args.version, args.to, args.archive, **kw)
    else:
        from rich.console import Console

        console = Console(stderr=True)
        with console.status(f"pushing {args.version} to {args.to}") as status:
            def on_line(line: str) -> None:
                console.print(f"  {line}", markup=False, highlight=False)
                status.update(f"pushing {args.version}: {line[:70]}")

            result = push.push_version(root, args.version, args.to, args.archive, on_line=on_line, **kw)
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        print(f"pushed {result.destination.tagged}")
        print(f"digest {result.digest}")
        print(f"image  {result.destination.with_digest(result.digest)}")
        print(f"layers {result.layers_sent} sent ({result.bytes_sent / 2**20:.1f} MiB), {result.layers_reused} already "
              f"in the registry (of {result.bytes_total / 2**20:.1f} MiB)")
    return 0
