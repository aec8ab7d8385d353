"""Checked exercises: every reference passes its checker, every classic wrong answer is caught
with its hint, the verdicts are friendly, and the two editions of the notebooks behave."""
import ast
import math
import os
import re
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from llmlab import exercises as E
from llmlab import reward

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WRONGS = [(name, w) for name, ex in E.EXERCISES.items() for w in ex.wrongs]


def exercise_cells(path: Path) -> list[tuple[str, object, object, object]]:
    """(name, instructions cell, solution cell, check cell) of each exercise of a notebook."""
    nb = nbformat.read(path, as_version=4)
    out = []
    for i, cell in enumerate(nb.cells):
        if E.SOLUTION_TAG in cell.metadata.get("tags", []):
            out.append((cell.metadata["exercise"], nb.cells[i - 1], cell, nb.cells[i + 1]))
    return out


SOLUTIONS = [(p.stem, *cells) for p in NOTEBOOKS for cells in exercise_cells(p)]


# ---- the checker ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(E.EXERCISES))
def test_every_reference_passes_its_own_checker(name, capsys):
    ex = E.EXERCISES[name]
    result = E.check(name, ex.reference)
    assert result.passed and result.n_cases == len(ex.fixed) + ex.n_random
    assert capsys.readouterr().out.startswith(f"✓ {name}: correct")


@pytest.mark.parametrize("name, wrong", WRONGS, ids=[f"{n}-{w.label}" for n, w in WRONGS])
def test_every_classic_wrong_answer_is_caught_with_its_hint(name, wrong, capsys):
    result = E.check(name, wrong.fn)
    out = capsys.readouterr().out
    assert result.status == "failed" and not result.passed
    assert result.wrong == wrong.label and result.hint == wrong.hint
    assert f"hint: {wrong.hint}" in out and "expected:" in out and "got:" in out


@pytest.mark.parametrize("name", list(E.EXERCISES))
def test_classic_wrong_answers_differ_from_the_reference_on_a_fixed_case(name):
    """A classic wrong answer the fixed cases cannot tell from the reference would only be
    caught by chance."""
    ex = E.EXERCISES[name]
    for w in ex.wrongs:
        assert any(E.difference(ex.reference(*args), w.fn(*args)) for args in ex.fixed), w.label


def test_verdict_by_hand_loss_on_prompt_tokens(capsys):
    E.check("make_targets", lambda ids, mask: (ids[:-1], ids[1:]))
    out = capsys.readouterr().out
    assert out.splitlines()[:5] == [
        "✗ make_targets: wrong output on fixed case 1 of 3 (0 passed before it).",
        "  input:", "    ids = [5, 6, 7, 8]", "    mask = [0, 0, 1, 1]",
        "  expected: ([5, 6, 7], [-100, 7, 8])"]
    assert "  got:      ([5, 6, 7], [6, 7, 8])" in out
    assert "at [1][0]: expected -100, got 6" in out
    assert "loss also trains the model to write the user's turn" in out


def test_an_unknown_mistake_gets_the_difference_without_a_hint(capsys):
    result = E.check("bt_loss", lambda w, l: (w - l).mean())
    assert result.status == "failed" and result.hint is None
    out = capsys.readouterr().out
    assert "hint:" not in out and "\n  expected 0.313262, got 1.0\n" in out     # a 0-d tensor: no index


def test_a_learner_function_that_raises_gets_a_friendly_verdict(capsys):
    def my_merge(ids, pair, new_id):
        out = []
        for i in range(len(ids)):
            if (ids[i], ids[i + 1]) == pair:          # IndexError at the last position
                out.append(new_id)
        return out

    result = E.check("bpe_merge", my_merge)
    out = capsys.readouterr().out
    assert result.status == "error" and not result.passed
    assert out.startswith("✗ bpe_merge: your function raised IndexError: list index out of range "
                          "on fixed case 1 of 7.")
    assert "raised in my_merge, line" in out and "(ids[i], ids[i + 1]) == pair" in out
    assert "ids = [1, 2, 3, 1, 2]" in out and "expected: [4, 3, 4]" in out
    assert "Traceback" not in out


def test_an_exception_with_a_known_cause_gets_its_hint(capsys):
    result = E.check("jaccard", lambda a, b: len(a & b) / len(a | b))
    assert result.status == "error" and result.case == (set(), set())
    assert "hint: two empty sets have an empty union" in capsys.readouterr().out


def test_a_stub_is_not_attempted_not_a_failure(capsys):
    def my_bt_loss(r_chosen, r_rejected):
        raise NotImplementedError("exercise bt_loss: write this function")

    result = E.check("bt_loss", my_bt_loss)
    assert result.status == "not attempted" and not result.passed and not result.attempted
    assert "not attempted yet" in capsys.readouterr().out


def test_an_endless_loop_is_stopped_and_reported(capsys, monkeypatch):
    monkeypatch.setattr(E, "TIME_LIMIT_S", 0.2)

    def my_jaccard(a, b):
        while True:
            pass

    assert E.check("jaccard", my_jaccard).status == "error"
    assert "did not finish within 0.2 s on fixed case 1" in capsys.readouterr().out


def test_the_learner_cannot_change_the_reference_input():
    def my_merge(ids, pair, new_id):                  # right answer, but empties its input
        out = E.EXERCISES["bpe_merge"].reference(list(ids), pair, new_id)
        ids.clear()
        return out

    assert E.check("bpe_merge", my_merge, quiet=True).passed


def test_misuse_of_check_is_one_line(capsys):
    assert E.check("no_such", len).status == "error"
    assert E.check("bt_loss", 3.0).status == "error"
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("? no exercise named 'no_such'; the exercises are: bpe_merge")
    assert "without calling it" in out[1]


def test_random_cases_are_seeded_and_vary_with_the_seed():
    ex = E.EXERCISES["make_targets"]
    a, b, c = E.cases(ex, 0), E.cases(ex, 0), E.cases(ex, 1)
    assert a == b and a != c and len(a) == len(ex.fixed) + ex.n_random


def test_every_exercised_notebook_function_is_the_package_one():
    from llmlab import beyond, chat, dpo, generate, model, ppo, scaling, sft, tokenizer
    from llmlab.data import dedup

    refs = {n: ex.reference for n, ex in E.EXERCISES.items()}
    assert refs["bpe_merge"] is tokenizer.merge and refs["jaccard"] is dedup.jaccard
    assert refs["causal_mask"] is model.causal_mask and refs["attention"] is model.attention_naive
    assert refs["make_targets"] is chat.make_targets and refs["masked_nll"] is sft.masked_nll
    assert refs["bt_loss"] is reward.bt_loss and refs["reward_at_last"] is model.gather_at
    assert refs["gae"] is ppo.gae and refs["dpo_loss"] is dpo.dpo_loss
    assert refs["kl_rewards"] is ppo.penalised_rewards
    assert refs["group_advantages"] is beyond.group_advantages
    assert refs["compute_optimal"] is scaling.ScalingLaw.optimal
    assert refs["filter_logits"] is generate.filter_logits


def test_worked_examples_of_02_03_06_07_are_the_packages():
    """The worked values the exercise texts quote are the package's."""
    from llmlab import dpo, generate, ppo, scaling

    assert "`tensor([[-inf, 3.0, 2.0]])`" in E.instructions_markdown("filter_logits")
    assert generate.filter_logits(torch.tensor([[1.0, 3.0, 2.0]]), 2, None).tolist() == [[-math.inf, 3.0, 2.0]]
    assert "only the 3.0 stays (its probability is already 0.67)" in E.instructions_markdown("filter_logits")
    assert generate.filter_logits(torch.tensor([[1.0, 3.0, 2.0]]), None, 0.5).tolist() == [[-math.inf, 3.0, -math.inf]]
    assert round(torch.softmax(torch.tensor([1.0, 3.0, 2.0]), 0)[1].item(), 2) == 0.67
    assert "N_opt ≈ 2.78e9" in E.instructions_markdown("compute_optimal")
    assert "D_opt ≈ 6.00e10" in E.instructions_markdown("compute_optimal")
    N, D = scaling.EPOCH.optimal(1e21)
    assert f"{N:.2e}" == "2.78e+09" and f"{D:.2e}" == "6.00e+10" and math.isclose(6 * N * D, 1e21)

    assert "(tensor([[0.5, 0.5]]), tensor([[1.0, 1.0]]))" in E.instructions_markdown("gae")
    adv, ret = ppo.gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2), 1.0, 1.0)
    assert adv.tolist() == [[0.5, 0.5]] and ret.tolist() == [[1.0, 1.0]]
    assert "tensor([[0.0, -0.05, 1.9, 0.0]])" in E.instructions_markdown("kl_rewards")
    r = ppo.penalised_rewards(torch.tensor([2.0]), torch.tensor([[0.0, 0.5, 1.0, 0.0]]),
                              torch.tensor([[0.0, 1.0, 1.0, 0.0]]), 0.1)
    assert torch.allclose(r, torch.tensor([[0.0, -0.05, 1.9, 0.0]]))
    assert "0.6931" in E.instructions_markdown("dpo_loss")
    z = torch.full((3,), -2.0)
    assert torch.allclose(dpo.dpo_loss(z, z, z, z, 0.3), torch.full((3,), math.log(2)))


def test_bt_loss_exercise_example_is_right():
    """The worked value the exercise text quotes is the package's loss at margin 1."""
    from llmlab import reward

    assert "0.3133" in E.instructions_markdown("bt_loss")
    got = reward.bt_loss(torch.tensor([1.0]), torch.tensor([0.0])).item()
    assert math.isclose(got, 0.3133, abs_tol=1e-4)


# ---- the notebooks: instructor edition -----------------------------------------------------


def test_notebooks_hold_the_exercises_of_their_stage():
    found = {}
    for stem, name, *_ in SOLUTIONS:
        found.setdefault(stem[:2], []).append(name)
    assert found == {"01": ["jaccard", "bpe_merge"], "02": ["causal_mask", "attention", "filter_logits"], "03": ["compute_optimal"],
                     "04": ["make_targets", "masked_nll"], "05": ["bt_loss", "reward_at_last"],
                     "06": ["kl_rewards", "gae"], "07": ["dpo_loss"], "08": ["group_advantages"]}
    for name, ex in E.EXERCISES.items():        # every registered exercise is in its own notebook
        assert name in found.get(ex.notebook, []), name


@pytest.mark.parametrize("stem, name, task, solution, check", SOLUTIONS,
                         ids=[f"{s[0][:2]}-{s[1]}" for s in SOLUTIONS])
def test_instructor_solution_passes_its_check(stem, name, task, solution, check, capsys):
    assert task.cell_type == "markdown" and task.source == E.instructions_markdown(name)
    assert E.CHECK_TAG in check.metadata["tags"] and check.metadata["exercise"] == name
    learner = re.fullmatch(rf'from llmlab import exercises\nexercises\.check\("{name}", (\w+)\);',
                           check.source).group(1)
    ns = {}
    exec(compile(solution.source, f"<{stem} {name} solution>", "exec"), ns)
    assert E.check(name, ns[learner]).passed, capsys.readouterr().out


# ---- the notebooks: student edition --------------------------------------------------------


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    assert E.main(["student", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_edition_has_no_solutions_and_no_outputs(path, student):
    nb = nbformat.read(student / path.name, as_version=4)
    original = nbformat.read(path, as_version=4)
    assert len(nb.cells) == len(original.cells) and "widgets" not in nb.metadata
    for mine, theirs in zip(nb.cells, original.cells):
        if mine.cell_type == "code":
            assert mine.outputs == [] and mine.execution_count is None
        if E.SOLUTION_TAG not in theirs.metadata.get("tags", []):
            assert mine.source == theirs.source
            continue
        name = theirs.metadata["exercise"]
        for fn in (n for n in ast.parse(mine.source).body if isinstance(n, ast.FunctionDef)):
            docstring, body = fn.body[0], fn.body[1:]
            assert isinstance(docstring.value, ast.Constant) and len(body) == 1
            assert isinstance(body[0], ast.Raise) and "NotImplementedError" in ast.unparse(body[0])
        solution_lines = [l.strip() for l in theirs.source.splitlines()[1:]
                          if l.strip() and not l.lstrip().startswith(("def ", "import ", "from "))]
        assert not any(l in mine.source for l in solution_lines), name
        # the stub runs and its check says "not attempted yet", without failing
        ns = {}
        exec(mine.source, ns)
        learner = re.search(r'check\("\w+", (\w+)\)', original.cells[
            original.cells.index(theirs) + 1].source).group(1)
        assert E.check(name, ns[learner], quiet=True).status == "not attempted"


@pytest.mark.slow
def test_student_edition_of_notebook_04_runs_end_to_end(student, monkeypatch):
    """The whole student notebook at the smoke preset (its artifacts built in this test's
    cache): no cell fails, and every check says "not attempted yet"."""
    from nbclient import NotebookClient

    monkeypatch.setenv("LLMLAB_PRESET", "smoke")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    path = student / "04_sft.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(student)}}).execute()
    checks = [c for c in nb.cells if E.CHECK_TAG in c.metadata.get("tags", [])]
    assert len(checks) == 2
    for c in checks:
        text = "".join(o.get("text", "") for o in c.outputs)
        assert "not attempted yet" in text, text
    assert not any(o.output_type == "error" for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)


def test_a_tuple_of_tensors_is_shown_part_by_part(capsys):
    """GAE returns (advantages, returns): a verdict shows each part under its index."""
    result = E.check("gae", E.EXERCISES["gae"].wrongs[3].fn)      # returns without the values
    out = capsys.readouterr().out
    assert result.wrong == "returns without the values"
    assert "expected: a tuple of 2:\n    [0] tensor of shape" in out and "\n    [1] tensor of shape" in out
    assert "at [1]: first difference" in out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_later_cell_calls_a_learners_function(path):
    """In the student edition a learner's function is a stub that raises until written: only its
    check cell may call it, so the rest of the notebook runs top to bottom either way."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if E.SOLUTION_TAG not in cell.metadata.get("tags", []):
            continue
        names = [n.name for n in ast.parse(cell.source).body if isinstance(n, ast.FunctionDef)]
        assert names, (path.name, i)
        for j, other in enumerate(nb.cells):
            if other.cell_type != "code" or j == i or E.CHECK_TAG in other.metadata.get("tags", []):
                continue
            for name in names:
                assert not re.search(rf"\b{name}\b", other.source), (path.name, name, j)
