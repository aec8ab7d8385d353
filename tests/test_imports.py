"""The package's import graph, read with ``ast``: no cycle, and only entry points and notebook
helpers import ``stages`` (the artifact chain); artifact staleness follows a recipe's code."""
import inspect

from llmlab import artifacts, stages
from llmlab.artifacts import code_of, ensure, import_graph

# modules allowed to know the artifact chain: the command line and the notebook helpers
MAY_IMPORT_STAGES = {"llmlab.__main__", "llmlab.nb", "llmlab.stages"}


def find_cycle(graph: dict) -> list | None:
    """One import cycle of ``graph`` as a list of modules, or None (depth-first search)."""
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        state[n] = "done"
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_find_cycle_by_hand():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_import_graph_reads_relative_and_function_level_imports():
    g = import_graph()
    assert "llmlab.model" in g["llmlab.train"]                       # top level, relative
    assert "llmlab.train" in g["llmlab.scaling"]                     # inside a function
    assert "llmlab.data.crawl" in g["llmlab.data.pipeline"]          # "from . import crawl"
    assert "llmlab.stages" in g["llmlab.__main__"]


def test_no_import_cycle_in_llmlab():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_only_entry_points_and_notebook_helpers_import_stages():
    offenders = sorted(m for m, deps in import_graph().items()
                       if "llmlab.stages" in deps and m not in MAY_IMPORT_STAGES)
    assert offenders == []


def test_stages_holds_declarations_whose_code_comes_from_recipes():
    src = inspect.getsource(stages)
    assert "code=[" not in src                     # no hand-kept lists of code
    assert src.count("code=code_of(") == src.count("return ensure(")
    from llmlab import scaling, sft, train
    assert {"llmlab.scaling", "llmlab.train", "llmlab.model"} <= set(code_of(scaling.build_sweep))
    assert "llmlab.sft" not in code_of(train.build_base_model)
    assert "llmlab.stages" not in code_of(sft.build_sft_model)


def test_changing_a_recipes_module_makes_its_artifact_stale(tmp_path, monkeypatch):
    from llmlab import scaling

    builds = []

    def build(tmp):
        builds.append(1)
        (tmp / "x.txt").write_text("x")

    def get():
        return ensure("thing", "smoke", [], build, code=code_of(scaling.build_sweep), root=tmp_path)

    get()
    get()
    assert len(builds) == 1                                   # cached
    real = inspect.getsource

    def edited(name):                                         # an edit to one module's source
        def getsource(obj):
            return real(obj) + ("\n# edited\n" if getattr(obj, "__name__", "") == name else "")
        return getsource

    monkeypatch.setattr(inspect, "getsource", edited("llmlab.sft"))   # not the sweep's code
    get()
    assert len(builds) == 1
    monkeypatch.setattr(inspect, "getsource", edited("llmlab.config"))  # configs count by value
    get()
    assert len(builds) == 1
    monkeypatch.setattr(inspect, "getsource", edited("llmlab.model"))  # imported by scaling
    get()
    assert len(builds) == 2
    assert artifacts.check(tmp_path / "smoke" / "thing", artifacts._expected(
        "smoke", [], [], code_of(scaling.build_sweep))) is None
