"""Lock format v1: every read validated; errors name the file, the JSON path and the problem."""

from __future__ import annotations

import copy
import json

import pytest
from comfyver.base import lockfile

GOOD = {
    "schema": 1,
    "id": "demo",
    "comfyui": {
        "original": {"type": "git", "url": "https://github.com/comfyanonymous/ComfyUI", "ref": "v0.3.75"},
        "locked": {"type": "git", "url": "https://github.com/comfyanonymous/ComfyUI", "rev": "a" * 40,
                   "hash": "sha256-" + "A" * 43 + "=", "submodules": False},
    },
    "nodes": {
        "rgthree-comfy": {
            "original": {"type": "registry", "id": "rgthree-comfy", "version": "1.0.2"},
            "locked": {"type": "zip", "url": "https://cdn.comfy.org/rgthree/1.0.2/node.zip",
                       "hash": "sha256-" + "B" * 43 + "=", "stripRoot": False},
        }
    },
    "models": {
        "checkpoints/sd/model.safetensors": {
            "original": {"url": "hf://org/repo/model.safetensors"},
            "locked": {"url": "https://huggingface.co/org/repo/resolve/" + "c" * 40 + "/model.safetensors",
                       "sha256": "d" * 64, "size": 12, "auth": "hf"},
        }
    },
    "python": {"requires": "==3.11.*", "torch": "cu128"},
    "workflows": ["workflows/a.json"],
}


def write(tmp_path, data) -> str:
    p = tmp_path / "version.json"
    p.write_text(json.dumps(data))
    return str(p)


def test_good_lock_reads(tmp_path):
    assert lockfile.read(write(tmp_path, GOOD))["id"] == "demo"


def mutate(fn):
    d = copy.deepcopy(GOOD)
    fn(d)
    return d


@pytest.mark.parametrize("change, where, what", [
    (lambda d: d["comfyui"]["locked"].update(rev="abc"), "$.comfyui.locked.rev", "does not match"),
    (lambda d: d["comfyui"]["locked"].pop("hash"), "$.comfyui.locked", "'hash' is a required property"),
    (lambda d: d.update(extra=1), "$", "Additional properties"),
    (lambda d: d["models"]["checkpoints/sd/model.safetensors"]["locked"].update(sha256="XYZ"),
     '$.models["checkpoints/sd/model.safetensors"].locked.sha256', "does not match"),
    (lambda d: d["nodes"]["rgthree-comfy"]["locked"].update(type="tarball"), '$.nodes["rgthree-comfy"].locked',
     "does not match any allowed form"),
    (lambda d: d["comfyui"]["original"].update(ref="--upload-pack=touch /tmp/x"), "$.comfyui.original.ref", "does not match"),
    (lambda d: d["python"].update(torch="rocm"), "$.python.torch", "is not one of"),
])
def test_invalid_lock_names_file_path_and_problem(tmp_path, change, where, what):
    path = write(tmp_path, mutate(change))
    with pytest.raises(lockfile.LockError) as e:
        lockfile.read(path)
    msg = str(e.value)
    assert path in msg and f"{where}:" in msg and what in msg


def test_unknown_schema_refused(tmp_path):
    for sv in (2, 0, "1", None):
        with pytest.raises(lockfile.LockError, match=r"\$\.schema: unsupported lock schema"):
            lockfile.read(write(tmp_path, mutate(lambda d, sv=sv: d.update(schema=sv))))


@pytest.mark.parametrize("key", ["checkpoints/../../etc/passwd", "/abs/model.bin", "checkpoints", "loras/./x",
                                 "loras\\..\\x"])
def test_model_paths_cannot_escape(tmp_path, key):
    d = mutate(lambda d: d["models"].update({key: d["models"].pop("checkpoints/sd/model.safetensors")}))
    with pytest.raises(lockfile.LockError) as e:
        lockfile.read(write(tmp_path, d))
    assert "$.models" in str(e.value)


@pytest.mark.parametrize("url", ["https://user:secret@example.com/m.bin", "https://example.com/m.bin?token=hf_abcdef",
                                 "https://example.com/m.bin?X-Amz-Signature=abc"])
def test_secrets_in_urls_refused(tmp_path, url):
    d = mutate(lambda d: d["models"]["checkpoints/sd/model.safetensors"]["locked"].update(url=url))
    with pytest.raises(lockfile.LockError) as e:
        lockfile.read(write(tmp_path, d))
    assert "secret" in str(e.value) or "credentials" in str(e.value)
    assert "hf_abcdef" not in str(e.value) and "secret@" not in str(e.value)


def test_not_json_and_missing(tmp_path):
    p = tmp_path / "version.json"
    p.write_text("{ nope")
    with pytest.raises(lockfile.LockError, match="not valid JSON"):
        lockfile.read(p)
    with pytest.raises(lockfile.LockError, match="no such version lock"):
        lockfile.read(tmp_path / "absent.json")


def test_write_is_atomic_and_validated(tmp_path):
    p = tmp_path / "version.json"
    lockfile.write(p, GOOD)
    before = p.read_text()
    with pytest.raises(lockfile.LockError):
        lockfile.write(p, mutate(lambda d: d.update(schema=9)))
    assert p.read_text() == before
    assert [x.name for x in tmp_path.iterdir()] == ["version.json"]  # no temp files left


def test_lock_digest_is_canonical():
    a = copy.deepcopy(GOOD)
    b = json.loads(json.dumps(GOOD, sort_keys=True))
    assert lockfile.lock_digest(a) == lockfile.lock_digest(b)
    assert lockfile.lock_digest(mutate(lambda d: d["python"].update(torch="cpu"))) != lockfile.lock_digest(a)


def test_a_node_named_like_the_core_input_is_refused(tmp_path):
    d = mutate(lambda d: d["nodes"].update({"comfyui": d["nodes"].pop("rgthree-comfy")}))
    with pytest.raises(lockfile.LockError, match=r'\$\.nodes\["comfyui"\]: .*reserved'):
        lockfile.read(write(tmp_path, d))


def test_reserved_version_id_is_refused_everywhere(tmp_path):
    from comfyver.base.errors import UsageError

    with pytest.raises(UsageError, match="reserved"):
        lockfile.check_version_id("default")
    with pytest.raises(lockfile.LockError, match=r"\$\.id: 'default' is reserved"):
        lockfile.read(write(tmp_path, mutate(lambda d: d.update(id="default"))))


def test_lock_id_must_equal_its_folder_whatever_reads_it(tmp_path):
    vdir = tmp_path / "versions" / "other"
    vdir.mkdir(parents=True)
    (vdir / "version.json").write_text(json.dumps(GOOD))  # id "demo"
    with pytest.raises(lockfile.LockError, match="is 'demo' but the folder is 'other'"):
        lockfile.read(vdir / "version.json")


@pytest.mark.parametrize("bad", ["nl\n", "demo\n", "x" * 64 + "\n"])
def test_a_trailing_newline_is_not_part_of_a_valid_id(bad):
    """`$` also matches before a final newline: ids and node names are matched to their very end."""
    from comfyver.base.errors import UsageError

    with pytest.raises(UsageError):
        lockfile.check_version_id(bad)
    assert not lockfile.NODE_NAME_RE.match(bad)
    from jsonschema import Draft202012Validator

    schema = json.loads((lockfile.Path(lockfile.__file__).parent / "schema" / "version-1.schema.json").read_text())
    assert not Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/versionId"}).is_valid(bad)
    assert Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/versionId"}).is_valid("nl")


MODEL = ("models", "checkpoints/sd/model.safetensors")


@pytest.mark.parametrize("path", [
    ("comfyui", "locked", "rev"), ("comfyui", "locked", "hash"), ("comfyui", "locked", "url"),
    ("comfyui", "original", "url"), ("nodes", "rgthree-comfy", "locked", "url"),
    ("nodes", "rgthree-comfy", "original", "id"), (*MODEL, "locked", "sha256"), (*MODEL, "locked", "url"),
    (*MODEL, "original", "url"), ("workflows", 0), ("id",)])
def test_a_trailing_newline_is_refused_in_every_patterned_field(tmp_path, path):
    """JSON Schema `pattern` is searched with Python's `re`, whose `$` also matches before a final newline:
    `rev\\n` or `sha256\\n` would split a line of the exported install script (issue 24 L12)."""
    def add_newline(d):
        *parents, last = path
        for p in parents:
            d = d[p]
        d[last] += "\n"

    with pytest.raises(lockfile.LockError, match="does not match"):
        lockfile.read(write(tmp_path, mutate(add_newline)))


def test_a_trailing_newline_in_a_pinned_sha256_is_refused(tmp_path):
    def pin(d):
        d["models"]["checkpoints/sd/model.safetensors"]["original"].update(sha256="d" * 64 + "\n", size=12)

    with pytest.raises(lockfile.LockError, match="does not match"):
        lockfile.read(write(tmp_path, mutate(pin)))


# -- the lock's TypedDicts (lockfile.Lock ...) against the JSON Schema: the two cannot drift -----------------------

def _schema_objects():
    s = lockfile.schema()
    d, p = s["$defs"], s["properties"]
    return [
        (lockfile.Lock, s),
        (lockfile.Core, p["comfyui"]),
        (lockfile.Python, p["python"]),
        (lockfile.GitOriginal, d["gitOriginal"]),
        (lockfile.GitLocked, d["gitLocked"]),
        (lockfile.RegistryOriginal, d["registryOriginal"]),
        (lockfile.LocalOriginal, d["localOriginal"]),
        (lockfile.ZipLocked, d["zipLocked"]),
        (lockfile.Node, d["node"]),
        (lockfile.Model, d["model"]),
        (lockfile.ModelOriginal, d["model"]["properties"]["original"]),
        (lockfile.ModelLocked, d["model"]["properties"]["locked"]),
    ]


@pytest.mark.parametrize(("td", "obj"), _schema_objects(), ids=lambda x: getattr(x, "__name__", ""))
def test_typeddict_keys_match_the_schema(td, obj):
    """Each TypedDict has exactly the schema object's properties, required where the schema requires them."""
    assert obj.get("additionalProperties") is False, "a closed object in the schema: its keys are all named"
    assert set(td.__annotations__) == set(obj["properties"]), td.__name__
    assert td.__required_keys__ == set(obj.get("required", [])), td.__name__
    assert td.__optional_keys__ == set(obj["properties"]) - set(obj.get("required", [])), td.__name__


def test_every_closed_object_of_the_schema_has_its_typeddict():
    """A new object in the schema (a new $defs entry or a new object property) needs its TypedDict here too."""
    s = lockfile.schema()
    covered = {id(obj) for _, obj in _schema_objects()}

    def closed(obj, where):
        if isinstance(obj, dict):
            if obj.get("type") == "object" and obj.get("additionalProperties") is False:
                yield where, obj
            for k, v in obj.items():
                yield from closed(v, f"{where}.{k}")
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                yield from closed(v, f"{where}[{i}]")

    missing = [where for where, obj in closed(s, "$") if id(obj) not in covered]
    assert not missing, f"schema objects without a TypedDict in base/lockfile.py: {missing}"


def test_typed_literals_match_the_schema():
    """The const/enum values the TypedDicts spell as Literal are the schema's."""
    from typing import get_args

    s = lockfile.schema()
    d = s["$defs"]
    assert set(get_args(lockfile.Torch)) == set(s["properties"]["python"]["properties"]["torch"]["enum"])
    assert set(get_args(lockfile.Platform)) == set(s["properties"]["python"]["properties"]["platforms"]["items"]["enum"])
    auth = lockfile.ModelLocked.__annotations__["auth"]
    assert set(get_args(get_args(auth)[0])) == set(d["model"]["properties"]["locked"]["properties"]["auth"]["enum"])
    assert get_args(lockfile.Lock.__annotations__["schema"]) == (s["properties"]["schema"]["const"],)
    for td, name in [(lockfile.GitOriginal, "gitOriginal"), (lockfile.GitLocked, "gitLocked"),
                     (lockfile.RegistryOriginal, "registryOriginal"), (lockfile.LocalOriginal, "localOriginal"),
                     (lockfile.ZipLocked, "zipLocked")]:
        assert get_args(td.__annotations__["type"]) == (d[name]["properties"]["type"]["const"],), name
