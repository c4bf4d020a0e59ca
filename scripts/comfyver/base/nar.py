"""NAR (Nix ARchive) serialisation and hashing in pure Python.

`nar_hash(path)` gives the same digest as `nix-hash --type sha256 PATH`,
`nix hash path PATH` and the `hash` that `pkgs.fetchgit` / `fetchzip` check:
sha256 over the bytes `nix-store --dump PATH` writes.

Format (Eelco Dolstra's thesis, section 5.2.1; nix src/libutil/archive.cc):
every token is a length-prefixed string (u64 little endian, bytes, zero pad
to 8); a node is `( type regular [executable ""] contents <bytes> )`,
`( type symlink target <t> )` or `( type directory entry ( name <n> node <node> ) ... )`
with entries sorted by the raw bytes of their names. Only the owner-exec
bit matters; ownership, times and other permission bits are dropped.

`git_tree_nar_hash(repo, rev)` computes the same hash as a checkout of `rev`
with `.git` removed, but straight from git's object store: no checkout is
written. The caller must fall back to a checkout where git would transform
content on checkout (see `gitsource.checkout_transforms`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import subprocess
from collections.abc import Callable, Iterable, Iterator

NAR_MAGIC = b"nix-archive-1"
BUF = 1 << 20
NIX_BASE32 = "0123456789abcdfghijklmnpqrsvwxyz"


def _tok(data: bytes) -> bytes:
    n = len(data)
    return n.to_bytes(8, "little") + data + b"\0" * (-n % 8)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 8)


# Constant prefixes, precomputed once.
_OPEN = _tok(b"(")
_CLOSE = _tok(b")")
_REG = _OPEN + _tok(b"type") + _tok(b"regular")
_EXEC = _tok(b"executable") + _tok(b"")
_CONTENTS = _tok(b"contents")
_SYMLINK = _OPEN + _tok(b"type") + _tok(b"symlink") + _tok(b"target")
_DIR = _OPEN + _tok(b"type") + _tok(b"directory")
_ENTRY = _tok(b"entry") + _OPEN + _tok(b"name")
_NODE = _tok(b"node")


def _dump(path: bytes, emit: Callable[[bytes | memoryview], None]) -> None:
    st = os.lstat(path)
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        emit(_SYMLINK + _tok(os.readlink(path)) + _CLOSE)
    elif stat.S_ISREG(mode):
        emit(_REG + (_EXEC if mode & stat.S_IXUSR else b"") + _CONTENTS)
        size = st.st_size
        emit(size.to_bytes(8, "little"))
        done = 0
        with open(path, "rb", buffering=0) as f:
            buf = bytearray(BUF)
            view = memoryview(buf)
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                emit(view[:n])
                done += n
        if done != size:
            raise OSError(f"{os.fsdecode(path)}: file changed size while hashing")
        emit(_pad(size) + _CLOSE)
    elif stat.S_ISDIR(mode):
        emit(_DIR)
        for name in sorted(os.listdir(path)):
            emit(_ENTRY + _tok(name) + _NODE)
            _dump(os.path.join(path, name), emit)
            emit(_CLOSE)
        emit(_CLOSE)
    else:
        raise ValueError(f"{os.fsdecode(path)}: cannot archive a {stat.filemode(mode)[0]!r} file (only files, dirs, symlinks)")


def _dump_excluding(path: bytes, rel: bytes, skip: set[bytes], emit: Callable[[bytes | memoryview], None]) -> None:
    if rel and not any(s.startswith(rel + b"/") for s in skip):
        _dump(path, emit)  # nothing below is excluded: the plain walker
        return
    emit(_DIR)
    for name in sorted(os.listdir(path)):
        r = rel + b"/" + name if rel else name
        if r in skip:
            continue
        emit(_ENTRY + _tok(name) + _NODE)
        _dump_excluding(os.path.join(path, name), r, skip, emit)
        emit(_CLOSE)
    emit(_CLOSE)


def dump(path: str | os.PathLike[str], emit: Callable[[bytes | memoryview], None], exclude: Iterable[str] = ()) -> None:
    """Stream the NAR serialisation of `path` into `emit` (== nix-store --dump).

    `exclude`: relative paths (posix, under a directory `path`) left out, as if absent."""
    emit(_tok(NAR_MAGIC))
    skip = {os.fsencode(s) for s in exclude}
    if skip:
        _dump_excluding(os.fsencode(path), b"", skip, emit)
    else:
        _dump(os.fsencode(path), emit)


def nar_bytes(path: str | os.PathLike[str]) -> bytes:
    out = bytearray()
    dump(path, out.extend)
    return bytes(out)


def nar_hash(path: str | os.PathLike[str], exclude: Iterable[str] = ()) -> bytes:
    """sha256 digest of the NAR of `path` (with the relative paths in `exclude` left out)."""
    h = hashlib.sha256()
    dump(path, h.update, exclude)
    return h.digest()


def flat_hash(path: str | os.PathLike[str]) -> bytes:
    """sha256 digest of a file's bytes (a flat fixed-output hash)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(BUF)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.digest()


# -- hash encodings ----------------------------------------------------------

def to_sri(digest: bytes) -> str:
    return "sha256-" + base64.b64encode(digest).decode()


def to_base32(digest: bytes) -> str:
    """Nix's base32 (nix-hash --to-base32): own alphabet, least significant first."""
    n_chars = (len(digest) * 8 - 1) // 5 + 1
    out = []
    for n in range(n_chars - 1, -1, -1):
        b = n * 5
        i, j = divmod(b, 8)
        c = digest[i] >> j
        if i + 1 < len(digest):
            c |= digest[i + 1] << (8 - j)
        out.append(NIX_BASE32[c & 0x1F])
    return "".join(out)


def from_base32(s: str) -> bytes:
    size = len(s) * 5 // 8
    out = bytearray(size)
    for n, ch in enumerate(reversed(s)):
        d = NIX_BASE32.find(ch)
        if d < 0:
            raise ValueError(f"invalid Nix base32 character {ch!r}")
        b = n * 5
        i, j = divmod(b, 8)
        out[i] |= (d << j) & 0xFF
        carry = d >> (8 - j)
        if i + 1 < size:
            out[i + 1] |= carry
        elif carry:
            raise ValueError(f"invalid Nix base32 hash {s!r}")
    return bytes(out)


def parse_hash(s: str) -> bytes:
    """Parse an SRI (`sha256-<b64>`), hex (64) or Nix base32 (52) sha256 hash."""
    if s.startswith("sha256-"):
        d = base64.b64decode(s[7:], validate=True)
    elif s.startswith("sha256:"):
        return parse_hash(s[7:])
    elif len(s) == 64:
        d = bytes.fromhex(s)
    elif len(s) == 52:
        d = from_base32(s)
    else:
        raise ValueError(f"not a sha256 hash: {s!r}")
    if len(d) != 32:
        raise ValueError(f"not a sha256 hash: {s!r}")
    return d


def encode(digest: bytes, form: str) -> str:
    if form == "sri":
        return to_sri(digest)
    if form == "hex":
        return digest.hex()
    if form == "base32":
        return to_base32(digest)
    raise ValueError(f"unknown hash form {form!r} (sri, hex, base32)")


# -- NAR straight from git objects ---------------------------------------------

class GitTree:
    __slots__ = ("attributes", "entries")

    def __init__(self) -> None:
        # name (bytes) -> (mode, oid) for blobs/links, or GitTree for dirs
        self.entries: dict[bytes, GitTree | tuple[bytes, bytes]] = {}
        self.attributes: list[bytes] = []  # root only: oids of every .gitattributes blob


def git_tree(repo: str, rev: str) -> GitTree:
    """The whole tree of `rev` from one `git ls-tree -r`."""
    out = subprocess.run(
        ["git", "-C", repo, "ls-tree", "-r", "-z", "--full-tree", rev, "--"],
        check=True, capture_output=True,
    ).stdout
    root = GitTree()
    for rec in out.split(b"\0"):
        if not rec:
            continue
        meta, path = rec.split(b"\t", 1)
        mode, kind, oid = meta.split(b" ")
        if mode == b"160000":
            # a gitlink (submodule) checks out as an empty directory
            node: GitTree | tuple[bytes, bytes] = GitTree()
        else:
            node = (mode, oid)
        parts = path.split(b"/")
        cur = root
        for p in parts[:-1]:
            nxt = cur.entries.get(p)
            if nxt is None:
                nxt = cur.entries[p] = GitTree()
            cur = nxt  # type: ignore[assignment]
        cur.entries[parts[-1]] = node
        if parts[-1] == b".gitattributes" and kind == b"blob":
            root.attributes.append(oid)
    return root


def _blob_order(tree: GitTree) -> Iterator[bytes]:
    for name in sorted(tree.entries):
        node = tree.entries[name]
        if isinstance(node, GitTree):
            yield from _blob_order(node)
        else:
            yield node[1]


def git_tree_nar_hash(repo: str, rev: str, root: GitTree | None = None) -> bytes:
    """NAR sha256 of the tree at `rev` as a checkout without `.git` would hash.

    Reads blobs with one `git cat-file --batch` process, streaming them in
    NAR order. The top-level `.git` never exists in a tree object, so nothing
    needs removing.
    """
    root = root or git_tree(repo, rev)
    h = hashlib.sha256()
    emit = h.update
    order = list(_blob_order(root))
    proc = subprocess.Popen(
        ["git", "-C", repo, "cat-file", "--batch", "--buffer"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    assert proc.stdin and proc.stdout
    # feed all requests from a thread so a full pipe never dead-locks us
    import threading

    stdin = proc.stdin

    def feed() -> None:
        try:
            for oid in order:
                stdin.write(oid + b"\n")
            stdin.close()
        except BrokenPipeError:
            pass

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    rd = proc.stdout

    def read_blob(expect: bytes) -> Iterator[bytes]:
        header = rd.readline()
        oid, kind, size_s = header.rstrip(b"\n").split(b" ")
        if oid != expect or kind != b"blob":
            raise RuntimeError(f"git cat-file: unexpected {header!r} for {expect!r}")
        size = int(size_s)
        yield size.to_bytes(8, "little")  # marker consumed by caller
        left = size
        while left:
            chunk = rd.read(min(left, BUF))
            if not chunk:
                raise RuntimeError("git cat-file: short read")
            left -= len(chunk)
            yield chunk
        rd.read(1)  # trailing LF

    def walk(tree: GitTree) -> None:
        emit(_DIR)
        for name in sorted(tree.entries):
            node = tree.entries[name]
            emit(_ENTRY + _tok(name) + _NODE)
            if isinstance(node, GitTree):
                walk(node)
            else:
                mode, oid = node
                parts = read_blob(oid)
                size = int.from_bytes(next(parts), "little")
                if mode == b"120000":
                    emit(_SYMLINK + _tok(b"".join(parts)) + _CLOSE)
                else:
                    emit(_REG + (_EXEC if mode == b"100755" else b"") + _CONTENTS
                         + size.to_bytes(8, "little"))
                    for chunk in parts:
                        emit(chunk)
                    emit(_pad(size) + _CLOSE)
            emit(_CLOSE)
        emit(_CLOSE)

    try:
        emit(_tok(NAR_MAGIC))
        walk(root)
    finally:
        t.join()
        proc.stdout.close()
        proc.wait()
    if proc.returncode:
        raise RuntimeError(f"git cat-file failed in {repo}")
    return h.digest()
