import json
import os

import pytest

from llmlab import artifacts
from llmlab.artifacts import ArtifactError, check, ensure
from llmlab.config import PRESETS, WorldConfig

CFG = WorldConfig(seed=1)


def _builder(calls):
    def build(tmp):
        calls.append(tmp)
        (tmp / "data.txt").write_text("hello " * 100)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.bin").write_bytes(b"\x00\x01" * 50)
        return {"n": 1}
    return build


def test_build_once_then_reuse(tmp_path):
    calls = []
    a = ensure("thing", "smoke", [CFG], _builder(calls), root=tmp_path, verbose=False)
    b = ensure("thing", "smoke", [CFG], _builder(calls), root=tmp_path, verbose=False)
    assert len(calls) == 1
    assert a.path == b.path == tmp_path / "smoke" / "thing"
    assert a.file("data.txt").read_text().startswith("hello")
    assert a.info == {"n": 1}
    meta = json.loads((a.path / "meta.json").read_text())
    assert meta["preset"] == "smoke" and meta["version"] == artifacts.__version__
    assert meta["config"][0]["seed"] == 1
    assert set(meta["files"]) == {"data.txt", "sub/x.bin"}
    with pytest.raises(KeyError, match="has no file"):
        a.file("nope.txt")


@pytest.mark.parametrize("damage, reason", [
    (lambda p: (p / "data.txt").write_text("hello"), "corrupted"),          # truncated
    (lambda p: (p / "data.txt").write_text("jello " * 100), "SHA-256"),     # same size, new bytes
    (lambda p: (p / "sub" / "x.bin").unlink(), "partial"),                  # a file is missing
    (lambda p: (p / "meta.json").unlink(), "partial"),                      # never finished
    (lambda p: (p / "meta.json").write_text("{not json"), "corrupted meta"),
])
def test_damaged_artifact_is_detected_and_rebuilt(tmp_path, damage, reason, capsys):
    calls = []
    a = ensure("thing", "smoke", [CFG], _builder(calls), root=tmp_path, verbose=False)
    damage(a.path)
    assert reason in check(a.path, artifacts._expected("smoke", [CFG], []))
    b = ensure("thing", "smoke", [CFG], _builder(calls), root=tmp_path)
    assert len(calls) == 2
    assert reason in capsys.readouterr().out
    assert check(b.path, artifacts._expected("smoke", [CFG], [])) is None


def test_stale_config_version_or_dependency_rebuilds(tmp_path, monkeypatch):
    calls = []
    dep = ensure("dep", "smoke", [CFG], _builder(calls), root=tmp_path, verbose=False)
    ensure("thing", "smoke", [CFG], _builder(calls), deps=[dep], root=tmp_path, verbose=False)
    assert len(calls) == 2
    ensure("thing", "smoke", [WorldConfig(seed=2)], _builder(calls), deps=[dep], root=tmp_path,
           verbose=False)
    assert len(calls) == 3                               # config changed
    dep2 = ensure("dep", "smoke", [WorldConfig(seed=3)], _builder(calls), root=tmp_path, verbose=False)
    ensure("thing", "smoke", [WorldConfig(seed=2)], _builder(calls), deps=[dep2], root=tmp_path,
           verbose=False)
    assert len(calls) == 5                               # its dependency was rebuilt
    monkeypatch.setattr(artifacts, "__version__", "99.0")
    ensure("thing", "smoke", [WorldConfig(seed=2)], _builder(calls), deps=[dep2], root=tmp_path,
           verbose=False)
    assert len(calls) == 6                               # another package version


def test_presets_are_cached_apart(tmp_path):
    calls = []
    a = ensure("thing", "smoke", [CFG], _builder(calls), root=tmp_path, verbose=False)
    b = ensure("thing", "cpu", [CFG], _builder(calls), root=tmp_path, verbose=False)
    assert a.path != b.path and len(calls) == 2


def test_failed_build_leaves_nothing_and_keeps_the_old(tmp_path):
    calls = []
    good = ensure("thing", "smoke", [CFG], _builder(calls), root=tmp_path, verbose=False)

    def broken(tmp):
        (tmp / "data.txt").write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        ensure("thing", "smoke", [WorldConfig(seed=9)], broken, root=tmp_path, verbose=False)
    # no temporary folder left behind, and the earlier artifact is untouched
    assert sorted(p.name for p in (tmp_path / "smoke").iterdir() if not p.name.endswith(".lock")) == ["thing"]
    assert (good.path / "data.txt").read_text().startswith("hello")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_unwritable_cache_is_a_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ArtifactError, match="not writable.*LLMLAB_CACHE"):
            ensure("thing", "smoke", [CFG], _builder([]), root=ro, verbose=False)
    finally:
        ro.chmod(0o700)


def test_unwritable_cache_is_a_clear_error_even_as_root(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file, not a folder")
    with pytest.raises(ArtifactError, match="not writable.*LLMLAB_CACHE.*Nothing already built"):
        ensure("thing", "smoke", [CFG], _builder([]), root=blocker, verbose=False)


def test_cache_root_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMLAB_CACHE", str(tmp_path / "c"))
    assert artifacts.cache_root() == tmp_path / "c"


def test_atomic_write(tmp_path):
    p = tmp_path / "a" / "f.txt"
    artifacts.atomic_write_text(p, "one")
    artifacts.atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert [x.name for x in p.parent.iterdir()] == ["f.txt"]


def test_code_change_makes_artifact_stale(tmp_path):
    calls = []
    ensure("thing", "smoke", [CFG], _builder(calls), code=[_builder], root=tmp_path, verbose=False)
    ensure("thing", "smoke", [CFG], _builder(calls), code=[_builder], root=tmp_path, verbose=False)
    assert len(calls) == 1
    ensure("thing", "smoke", [CFG], _builder(calls), code=[test_atomic_write], root=tmp_path,
           verbose=False)
    assert len(calls) == 2


def test_upstream_code_change_reaches_every_artifact_below(tmp_path):
    """crawl -> corpus -> tokens: editing the crawl's code must make tokens stale too."""
    calls = []
    build = _builder(calls)

    def chain(code):
        a = ensure("crawl", "smoke", [CFG], build, code=[code], root=tmp_path, verbose=False)
        b = ensure("corpus", "smoke", [CFG], build, deps=[a], root=tmp_path, verbose=False)
        return ensure("tokens", "smoke", [CFG], build, deps=[b], root=tmp_path, verbose=False)

    first = chain(_builder)
    assert len(calls) == 3
    chain(_builder)
    assert len(calls) == 3                        # nothing changed: all reused
    second = chain(test_atomic_write)             # only the crawl's code changed
    assert len(calls) == 6 and second.hash != first.hash
