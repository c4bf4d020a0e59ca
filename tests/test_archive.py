"""Archive extraction cannot write or point outside its folder, by any route (link chains, `..`, absolute
names, duplicates, entries below links): the review's exploit, then properties over generated archives."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
from comfyver.base.errors import ComfyverError
from comfyver.sources import archive
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_sources import make_zip

LINK, FILE, DIR = 0o120777, 0o100644, 0o40755


def extract(tmp_path: Path, entries, strip_root=False) -> Path:
    z = tmp_path / "a.zip"
    z.write_bytes(make_zip(entries))
    dest = tmp_path / "box" / "out"
    dest.parent.mkdir(parents=True, exist_ok=True)
    archive.extract_zip(z, dest, strip_root=strip_root, what="nodes.evil")
    return dest


def test_the_reviewed_symlink_chain_is_refused_and_writes_nothing(tmp_path):
    """u -> 8 levels up (lexically the root), esc -> a/b/.../u/../../.. (lexically depth 1, really 8 above)."""
    entries = [("a/b/c/d/e/f/g/h/u", b"../../../../../../../..", LINK),
               ("esc", b"a/b/c/d/e/f/g/h/u/../../../../../../../..", LINK),
               ("esc/tmp/PWNED.txt", b"pwned", FILE)]
    with pytest.raises(ComfyverError, match=r"nodes.evil"):
        extract(tmp_path, entries)
    assert not list(tmp_path.rglob("PWNED.txt")) and not (tmp_path / "box" / "out").exists()
    # even without the file, the link chain itself (which leaves the tree once resolved) is refused
    with pytest.raises(ComfyverError, match="link out of the tree"):
        extract(tmp_path, entries[:2])


@pytest.mark.parametrize("entries, needle", [
    ([("l", b".", LINK), ("l/x", b"1", FILE)], "below the link"),
    ([("f", b"1", FILE), ("f/x", b"1", FILE)], "below the file"),
    ([("x", b"1", FILE), ("x", b"2", FILE)], "appears twice"),
    ([("x", b"y", LINK), ("y", b"x", LINK)], "link out of the tree"),  # a loop
    ([("d/l", b"../../etc", LINK)], "link out of the tree"),
    ([("d/l", b"/etc", LINK)], "link out of the tree"),
    # the same path on a case-insensitive or normalising file system (macOS, Windows)
    ([("L", b"/etc", LINK), ("l/x", b"1", FILE)], "below the link|link out of the tree"),
    ([("Lib", b"..", LINK), ("lib/x", b"1", FILE)], "below the link|same path|link out"),
    ([("d/Up", b"..", LINK), ("up", b"..", LINK), ("d/up/up/x", b"1", FILE)], "below the link|same path"),
    ([("caf\u0065\u0301", b"1", FILE), ("caf\u00e9/x", b"1", FILE)], "below the file|same path"),
    ([("a", b"1", FILE), ("A/x", b"1", FILE)], "below the file|same path"),
    # two links that fold together: the checked target must be the one written (found by an outside review)
    ([("Evil", b"../../../../etc", LINK), ("evil", b"sub", LINK)], "same path as another entry|link out"),
    ([("evil", b"sub", LINK), ("Evil", b"../../../../etc", LINK)], "same path as another entry|link out"),
])
def test_tree_level_escapes_are_refused(tmp_path, entries, needle):
    with pytest.raises(ComfyverError, match=needle):
        extract(tmp_path, entries)


def test_names_that_differ_only_by_case_are_fine_when_nothing_can_escape(tmp_path):
    out = extract(tmp_path, [("README", b"1", FILE), ("readme", b"2", FILE), ("D/x", b"3", FILE), ("d/y", b"4", FILE)])
    assert (out / "readme").read_bytes() == b"2"


def test_links_inside_the_tree_still_work(tmp_path):
    out = extract(tmp_path, [("d/x.py", b"1", FILE), ("d/l", b"x.py", LINK), ("top", b"d/../d/l", LINK),
                             ("dangling", b"d/none", LINK)])
    assert (out / "top").read_bytes() == b"1" and os.readlink(out / "d" / "l") == "x.py"


# -- properties --------------------------------------------------------------------------------------
NAMES = st.sampled_from(["a", "b", "c", "..", ".", "esc"])
PATHS = st.lists(NAMES, min_size=1, max_size=5).map("/".join)
TARGETS = st.one_of(PATHS, PATHS.map(lambda p: "/" + p), st.sampled_from(["/", "/tmp", "../" * 6]))
ENTRY = st.one_of(
    st.tuples(PATHS, st.just(b"data"), st.just(FILE)),
    st.tuples(PATHS.map(lambda p: p + "/"), st.just(b""), st.just(DIR)),
    st.tuples(PATHS, TARGETS.map(str.encode), st.just(LINK)),
)


def inside(root: Path, p: Path) -> bool:
    r = Path(os.path.realpath(p))
    return r == root or root in r.parents


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(ENTRY, min_size=1, max_size=8), strip=st.booleans())
def test_no_generated_archive_escapes(tmp_path_factory, entries, strip):
    tmp = tmp_path_factory.mktemp("prop")
    sentinel = tmp / "box" / "sentinel"
    sentinel.parent.mkdir(parents=True)
    sentinel.write_text("untouched")
    before = sorted(str(p) for p in tmp.rglob("*"))
    try:
        out = extract(tmp, [(n, d, m) for n, d, m in entries], strip_root=strip)
    except ComfyverError:
        # refused: nothing was created anywhere
        assert sorted(str(p) for p in tmp.rglob("*") if p.name != "a.zip") == before
        return
    root = Path(os.path.realpath(out))
    for dirpath, dirnames, filenames in os.walk(out):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            assert inside(root, p), f"{p} -> {os.path.realpath(p)}"
    outside = sorted(str(p) for p in tmp.rglob("*") if p.name != "a.zip" and root not in p.parents and p != out)
    assert outside == before and sentinel.read_text() == "untouched"


def test_backslash_names_are_refused(tmp_path):
    with pytest.raises(ComfyverError, match="escapes the target"):
        extract(tmp_path, [("..\\..\\evil.py", b"x", FILE)])


def test_a_link_with_an_empty_target_is_a_clear_error(tmp_path):
    """Found by fuzz/archive_extract.py: os.symlink("") raised a bare FileNotFoundError."""
    with pytest.raises(ComfyverError, match="empty or invalid target"):
        extract(tmp_path, [("x.py", b"", LINK)])
    assert not (tmp_path / "box" / "out").exists()


def test_the_fuzz_target_runs_clean_for_a_bounded_time(tmp_path):
    """fuzz/archive_extract.py (atheris, coverage-guided) for 20 s: no escape, no crash."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "fuzz" / "archive_extract.py"), "-max_total_time=20",
                        f"-artifact_prefix={tmp_path}/"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = int(r.stderr.rsplit("Done ", 1)[1].split()[0])
    assert runs > 1000
    print(f"fuzz: {runs} executions in 20 s")


def _raw_zip(tmp_path, build) -> Path:
    z = tmp_path / "raw.zip"
    with zipfile.ZipFile(z, "w") as zf:
        build(zf)
    return z


def test_every_unreadable_archive_is_a_clear_error(tmp_path):
    """Found by an outside review: these escaped as IndexError, BadZipFile, RuntimeError, FileExistsError."""
    def unnamed(zf):
        zf.writestr(zipfile.ZipInfo(""), b"x")

    def link_bad_crc(zf):
        info = zipfile.ZipInfo("l")
        info.external_attr = LINK << 16
        zf.writestr(info, b"target")
    z = _raw_zip(tmp_path, link_bad_crc)
    data = bytearray(z.read_bytes())
    data[data.find(b"target")] ^= 0xFF  # stored: the link's bytes no longer match their CRC
    z.write_bytes(bytes(data))
    with pytest.raises(ComfyverError, match="'l' is corrupt or unreadable"):
        archive.extract_zip(z, tmp_path / "o1", strip_root=False, what="nodes.bad")
    with pytest.raises(ComfyverError, match="has no name"):
        archive.extract_zip(_raw_zip(tmp_path, unnamed), tmp_path / "o2", strip_root=False, what="nodes.bad")
    (tmp_path / "exists").mkdir()
    with pytest.raises(ComfyverError, match="already exists"):
        extract_to = tmp_path / "exists"
        archive.extract_zip(_raw_zip(tmp_path, lambda zf: zf.writestr("a.py", b"1")), extract_to,
                            strip_root=False, what="nodes.bad")


def test_a_link_target_is_read_with_a_bound(tmp_path):
    """A deflated 'target' of 50 MB is refused after 4 KiB, not read into memory whole (twice)."""
    def bomb(zf):
        info = zipfile.ZipInfo("l")
        info.external_attr = LINK << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, b"a" * 50_000_000)
    with pytest.raises(ComfyverError, match="target over 4096 bytes"):
        archive.extract_zip(_raw_zip(tmp_path, bomb), tmp_path / "o", strip_root=False, what="nodes.bad")


def test_single_root_is_judged_on_normalised_names():
    assert not archive.has_single_root(["./a", "./b"])  # was True, then extraction refused it
    assert archive.has_single_root(["pack/", "pack/a.py", "pack/b/c.py"])
