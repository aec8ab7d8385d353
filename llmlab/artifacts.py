"""The artifact cache: every stage's outputs, per preset, built once and checked on every use.

An artifact is a folder ``<cache>/<preset>/<name>/`` holding the stage's files and a
``meta.json`` that records the preset, the package version, the config (and its hash), the
hashes of the artifacts it was built from, and the size and SHA-256 of every file.

- **Atomic**: a build writes into a temporary folder next to the final one and renames it
  into place only once every file and ``meta.json`` are written, so an interrupted build never
  leaves a half-written artifact where a reader would find it.
- **Checked**: :func:`ensure` re-reads ``meta.json`` and re-hashes the files; a partial,
  corrupted or stale artifact (other config, other version, a dependency rebuilt) is reported
  and rebuilt, never silently used.
- **Standalone notebooks**: each notebook asks ``llmlab.stages`` for what it needs; a missing
  prerequisite is rebuilt by the package's stage functions, not by running other notebooks.

The cache lives in ``$LLMLAB_CACHE`` if set, else ``.llmlab_cache/`` at the repository root
(git-ignored), else ``~/.cache/llmlab`` for a non-editable install (as on Colab).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from . import __version__
from .config import config_dict, config_hash

META = "meta.json"
CACHE_ENV = "LLMLAB_CACHE"


class ArtifactError(RuntimeError):
    """An artifact could not be built or stored; the message says where and why."""


def cache_root() -> Path:
    """Where artifacts live (see the module docstring)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists():
        return repo / ".llmlab_cache"
    return Path.home() / ".cache" / "llmlab"


@dataclass(frozen=True)
class Artifact:
    """A built, checked artifact: its folder and its metadata."""

    name: str
    path: Path
    meta: dict

    def file(self, filename: str) -> Path:
        """The path of one of the artifact's files (it must be recorded in ``meta.json``)."""
        if filename not in self.meta["files"]:
            raise KeyError(f"artifact {self.name!r} has no file {filename!r}; "
                           f"it has {sorted(self.meta['files'])}")
        return self.path / filename

    @property
    def info(self) -> dict:
        """What the build function returned (counts, timings, metrics)."""
        return self.meta.get("info", {})

    @property
    def hash(self) -> str:
        return self.meta["config_hash"]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def code_hash(code: Iterable) -> str:
    """A short hash of the source of the modules or functions a build runs (a module may be
    given by name, as :func:`code_of` lists them).

    Artifacts record it, so editing a stage's code makes its old outputs stale.
    """
    import importlib
    import inspect

    h = hashlib.sha256()
    for obj in code:
        if isinstance(obj, str):
            obj = importlib.import_module(obj)
        h.update(inspect.getsource(obj).encode())
    return h.hexdigest()[:8]


# --------------------------------------------------------------------------------------------
# The code an artifact depends on, derived from its recipe's imports
# --------------------------------------------------------------------------------------------

PACKAGE_DIR = Path(__file__).resolve().parent


def _module_file(name: str, root: Path = PACKAGE_DIR) -> Path | None:
    """The file of llmlab module ``name`` (``llmlab.data.pipeline``), or None if there is none."""
    parts = name.split(".")[1:]
    base = root.joinpath(*parts)
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def module_imports(name: str, root: Path = PACKAGE_DIR) -> set[str]:
    """The llmlab modules that module ``name`` imports anywhere in its file (top level or inside
    a function), read from its syntax tree with :mod:`ast` without importing anything."""
    import ast

    path = _module_file(name, root)
    if path is None:
        return set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "llmlab"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "llmlab":
                continue
            for a in node.names:               # "from . import train" names a module
                sub = f"{target}.{a.name}"
                out.add(sub if _module_file(sub, root) else target)
    return {m for m in out if m != name and _module_file(m, root) is not None}


def import_graph(root: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """Every llmlab module -> the llmlab modules it imports (the edges of the import graph)."""
    names = []
    for f in sorted(root.rglob("*.py")):
        parts = f.relative_to(root).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        names.append(".".join(("llmlab",) + parts))
    return {n: module_imports(n, root) for n in names}


# Modules every recipe imports whose source cannot change what a build computes: the configs
# enter an artifact's key by value (``config_hash``), this module is the cache itself, and the
# package's ``__init__`` holds the version (in the key too) and a map of the modules. Were their
# source hashed, adding a field for notebook 06 to config.py would retrain notebook 02.
NOT_CODE = frozenset({"llmlab", "llmlab.config", "llmlab.artifacts"})


def code_of(recipe) -> list[str]:
    """The modules whose source makes an artifact built by ``recipe`` stale: the recipe's own
    module and every llmlab module it imports, transitively (sorted names), less
    :data:`NOT_CODE` (configs count by value, not by source).

    >>> "llmlab.model" in code_of(__import__("llmlab.train").train.pretrain)
    True
    >>> "llmlab.config" in code_of(__import__("llmlab.train").train.pretrain)
    False
    """
    todo, seen = [recipe.__module__], set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += sorted(module_imports(name))
    return sorted(seen - NOT_CODE)


def _expected(preset: str, cfgs: Iterable, deps: Iterable[Artifact], code: Iterable = ()) -> dict:
    cfgs = list(cfgs)
    deps = list(deps)
    code = list(code)
    return {
        "preset": preset,
        "version": __version__,
        # a dependency enters through a hash of its whole key (config, code and its own
        # dependencies), so a change anywhere upstream makes every artifact below it stale
        "config_hash": (config_hash(*cfgs) + ("-" + code_hash(code) if code else "")
                        + "".join("-" + hashlib.sha256(d.hash.encode()).hexdigest()[:8]
                                  for d in deps)),
        "config": [config_dict(c) for c in cfgs],
        "deps": {d.name: d.hash for d in deps},
    }


def check(path: Path, expected: dict) -> str | None:
    """Why the artifact at ``path`` cannot be used, or None when it is complete and current."""
    meta_path = path / META
    if not path.exists():
        return "missing"
    if not meta_path.exists():
        return "partial (no meta.json)"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        return f"corrupted meta.json ({exc})"
    for key in ("preset", "version", "config_hash"):
        if meta.get(key) != expected[key]:
            return f"stale ({key} is {meta.get(key)!r}, expected {expected[key]!r})"
    for fname, rec in meta.get("files", {}).items():
        fpath = path / fname
        if not fpath.exists():
            return f"partial ({fname} is missing)"
        size = fpath.stat().st_size
        if size != rec["size"]:
            return f"corrupted ({fname} has {size} bytes, expected {rec['size']})"
        if sha256_file(fpath) != rec["sha256"]:
            return f"corrupted ({fname} does not match its recorded SHA-256)"
    return None


@contextlib.contextmanager
def _lock(lock_path: Path):
    """Serialise builds of one artifact across processes (POSIX flock; no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _writable_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise ArtifactError(
            f"the artifact folder {folder} is not writable ({exc.strerror or exc}); "
            f"set ${CACHE_ENV} to a writable folder. Nothing already built was touched."
        ) from exc


def ensure(name: str, preset: str, cfgs: Iterable, build: Callable[[Path], dict | None],
           deps: Iterable[Artifact] = (), code: Iterable = (), root: Path | None = None,
           verbose: bool = True) -> Artifact:
    """Return the artifact ``name`` for ``preset``, building it with ``build(tmp_dir)`` if needed.

    ``build`` writes its files into the folder it is given and may return a dict of facts about
    the build (stored as ``meta["info"]``). ``cfgs`` are the config dataclasses the build reads;
    ``deps`` the artifacts it reads; ``code`` the modules (or functions) whose source it runs,
    usually ``code_of(recipe)``.
    A change to any of them makes the old artifact stale.
    """
    cfgs, deps = list(cfgs), list(deps)
    root = Path(root) if root is not None else cache_root()
    folder = root / preset
    path = folder / name
    expected = _expected(preset, cfgs, deps, code)
    if check(path, expected) is None:
        return Artifact(name, path, json.loads((path / META).read_text()))
    _writable_dir(folder)
    with _lock(folder / f".{name}.lock"):
        reason = check(path, expected)  # another process may have built it meanwhile
        if reason is None:
            return Artifact(name, path, json.loads((path / META).read_text()))
        if verbose:
            print(f"[llmlab] building artifact '{name}' for preset '{preset}' ({reason})", flush=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=folder))
        try:
            t0 = time.perf_counter()
            info = build(tmp) or {}
            seconds = time.perf_counter() - t0
            files = {}
            for f in sorted(tmp.rglob("*")):
                if f.is_file():
                    rel = f.relative_to(tmp).as_posix()
                    files[rel] = {"size": f.stat().st_size, "sha256": sha256_file(f)}
            meta = dict(expected, name=name, files=files, info=info,
                        build_seconds=round(seconds, 3), built_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
            (tmp / META).write_text(json.dumps(meta, indent=1, default=str))
            if path.exists():
                trash = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=folder))
                os.replace(path, trash / name)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return Artifact(name, path, meta)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def clear(preset: str | None = None, root: Path | None = None) -> None:
    """Delete the cache of one preset (or all of them)."""
    root = Path(root) if root is not None else cache_root()
    target = root / preset if preset else root
    shutil.rmtree(target, ignore_errors=True)
