"""pyproject.toml and environment.yml must list the same dependencies."""
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {"pytorch": "torch"}

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", req)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def pyproject_deps() -> dict:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = data["project"]["dependencies"] + data["project"]["optional-dependencies"]["dev"]
    return dict(_split(r) for r in reqs)


def conda_deps() -> dict:
    deps, in_list = {}, False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if line.startswith("dependencies:"):
            in_list = True
            continue
        m = re.match(r"^  - ([^#]+)$", line)   # top-level entries only (not the pip: block)
        if in_list and m:
            name, spec = _split(m.group(1).strip())
            if name not in ("python", "pip"):
                deps[CONDA_TO_PYPI.get(name, name)] = spec
    return deps


def test_environment_yml_matches_pyproject():
    py, conda = pyproject_deps(), conda_deps()
    assert set(py) == set(conda), f"only in pyproject: {set(py) - set(conda)}; only in environment.yml: {set(conda) - set(py)}"
    for name, spec in py.items():
        assert conda[name] == spec, f"{name}: pyproject says {spec!r}, environment.yml says {conda[name]!r}"


def test_torch_has_a_lower_bound_only():
    spec = pyproject_deps()["torch"]
    assert spec.startswith(">=") and "," not in spec and "==" not in spec


def test_widgets_work_on_colab_and_datasketch_major_is_pinned():
    deps = pyproject_deps()
    assert deps["ipywidgets"] == ">=7.7,<9"
    assert re.fullmatch(r">=2\.\d+,<3", deps["datasketch"])


def test_python_range():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["requires-python"] == ">=3.10,<3.14"
