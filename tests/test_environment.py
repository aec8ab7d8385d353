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


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def runtime_deps() -> dict:
    """What installing llmlab alone (as on Colab) asks for."""
    return dict(_split(r) for r in pyproject()["dependencies"])


def extra(name: str) -> dict:
    return dict(_split(r) for r in pyproject()["optional-dependencies"][name])


def pyproject_deps() -> dict:
    """What a local `pip install -e ".[dev]"` asks for: the runtime list, then the `dev` extra
    with its `llmlab[lab]` expanded (an extra's range wins over the runtime one)."""
    deps = runtime_deps()
    dev = extra("dev")
    for name, spec in dev.items():
        if name == "llmlab":
            for sub in re.findall(r"\w+", spec):
                deps.update(extra(sub))
        else:
            deps[name] = spec
    return deps


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
    deps = runtime_deps()
    assert deps["ipywidgets"] == ">=7.7,<9"          # Colab's 7.7.1 is kept
    assert re.fullmatch(r">=2\.\d+,<3", deps["datasketch"])


def test_jupyterlab_is_an_extra_with_ipywidgets_8():
    """Installing llmlab into Colab's kernel must not pull JupyterLab and jupyter_server (which
    upgrade Colab's jupyter_client); a local JupyterLab 4 renders only ipywidgets 8."""
    assert not {"jupyterlab", "notebook", "jupyter-server"} & set(runtime_deps())
    lab = extra("lab")
    assert lab["jupyterlab"] == ">=4,<5" and lab["ipywidgets"] == ">=8,<9"
    assert extra("dev")["llmlab"] == "[lab]"          # the README's local install gets the lab
    assert pyproject_deps()["ipywidgets"] == ">=8,<9"


# the import name of each runtime dependency that has one; the others are needed by a
# dependency (lxml_html_clean: trafilatura's lxml.html.clean) or only by the notebooks
IMPORT_NAMES = {"torch": "torch", "numpy": "numpy", "matplotlib": "matplotlib",
                "ipywidgets": "ipywidgets", "datasketch": "datasketch", "warcio": "warcio",
                "tqdm": "tqdm", "trafilatura": "trafilatura", "tiktoken": "tiktoken",
                "tokenizers": "tokenizers", "regex": "regex", "scipy": "scipy", "pandas": "pandas"}


def imported_modules() -> set:
    """Top-level modules imported by the package and by the notebooks' code cells."""
    import ast
    import json

    sources = [p.read_text() for p in (ROOT / "llmlab").rglob("*.py")]
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "code":
                sources.append("\n".join(line for line in "".join(cell["source"]).splitlines()
                                         if not line.lstrip().startswith(("%", "!"))))
    mods = set()
    for src in sources:
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                mods.add(node.module.split(".")[0])
    return mods


def test_runtime_dependencies_are_what_the_package_imports():
    mods = imported_modules()
    deps = runtime_deps()
    assert set(deps) - set(IMPORT_NAMES) == {"lxml-html-clean"}, set(deps) - set(IMPORT_NAMES)
    unused = {d for d, m in IMPORT_NAMES.items() if d in deps and m not in mods}
    assert not unused, f"runtime dependencies nothing imports: {unused}"
    missing = {m for d, m in IMPORT_NAMES.items() if m in mods and d not in deps}
    assert not missing, f"imported but not runtime dependencies: {missing}"
    # imported only by the commands of a local install (book, student edition, the GPT-2
    # converter) or by IPython's own stack, so not runtime dependencies
    third_party = mods - set(sys.stdlib_module_names) - {"llmlab"} - set(IMPORT_NAMES.values())
    assert third_party <= {"nbformat", "nbclient", "nbconvert", "transformers", "IPython",
                           "matplotlib_inline", "ipykernel"}, third_party


def test_python_range():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["requires-python"] == ">=3.10,<3.14"
