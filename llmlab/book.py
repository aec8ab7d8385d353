"""The book command: run every notebook headless and write the executed copies and HTML.

    python -m llmlab.book                    # all notebooks, preset from $LLMLAB_PRESET or cpu
    python -m llmlab.book --preset smoke 00  # just notebook 00
    python -m llmlab.book --inplace          # maintainers: refresh the committed notebooks
                                             # and the README's table of minutes

Writes ``book/<notebook>.ipynb``, ``book/<notebook>.html`` and ``book/timings.json`` (minutes
per notebook, the numbers in the README's table). A notebook that fails stops the run with
its error; the notebooks already written are kept. A cell that gives no reply within the
preset's timeout (:data:`CELL_TIMEOUT`) is taken for a lost kernel message, not a slow cell --
the kernel can go idle without answering (ipython/ipykernel#1554; seen in notebook 02 with
ipykernel 6 and 7) -- and the notebook runs once more from the top with a fresh kernel
(artifacts already built are reused).

A stalled message can also come through late, at the timeout: in one run notebook 02's request
for the cell after its widget reached the kernel only when nbclient's 1200-s wait for the reply
ended (kernel and client both idle in between; jupyter/nbclient#312 reports the same after a
widget cell), so the notebook went on, 20 minutes late. The book's client
(:class:`PollingClient`) therefore waits for kernel messages in slices of a few seconds, each a
fresh poll of the socket (:func:`in_slices`), instead of one poll for the whole timeout.
"""
from __future__ import annotations

import argparse
import json
import re
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# seconds a cell may run before the book takes it for a hang; the longest cpu cell takes about
# 7.5 minutes on 2 cores (notebook 06's beta = 0 and small-beta runs, 120 iterations each), so a
# machine 2.5 times slower still fits; a gpu cell may train for much longer
CELL_TIMEOUT = {"smoke": 300, "cpu": 1200, "gpu": 7200}


def notebooks(selection=()) -> list[Path]:
    found = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if selection:
        found = [p for p in found if any(p.name.startswith(s) for s in selection)]
    return found


POLL_SLICE = 5.0     # seconds of one poll of a kernel socket (PollingClient)


def in_slices(get_msg, step: float = POLL_SLICE):
    """``get_msg(timeout)`` of a kernel client's channel, waiting in slices of at most ``step``
    seconds: each slice polls the socket afresh, so a message that one long poll missed is found
    by the next; :class:`queue.Empty` only once the whole ``timeout`` has passed (``None``: wait
    for ever, as the wrapped call would)."""
    from queue import Empty

    async def sliced(timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await get_msg(timeout=step if left is None else min(step, left))
            except Empty:
                if left is not None and left <= step:
                    raise

    return sliced


def polling_client():
    """nbclient's ``NotebookClient`` whose kernel client waits for shell and iopub messages
    :func:`in_slices` (see the module docstring)."""
    from nbclient import NotebookClient

    class PollingClient(NotebookClient):
        async def async_start_new_kernel_client(self):
            kc = await super().async_start_new_kernel_client()
            for channel in (kc.shell_channel, kc.iopub_channel):
                channel.get_msg = in_slices(channel.get_msg)
            return kc

    return PollingClient


def run(path: Path, out_dir: Path, inplace: bool, timeout: int) -> float:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    markers_to_tags(nb)
    t0 = time.perf_counter()
    nb = execute(nb, path, timeout, polling_client())
    minutes = (time.perf_counter() - t0) / 60
    finish_progress_bars(nb)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = path if inplace else out_dir / path.name
    tmp = target.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, target)
    html, _ = HTMLExporter().from_notebook_node(nb)
    (out_dir / path.with_suffix(".html").name).write_text(html, encoding="utf-8")
    return minutes


def execute(nb, path: Path, timeout: int, client_class, attempts: int = 2):
    """Execute ``nb`` with ``client_class`` (nbclient's ``NotebookClient``) and return the
    executed copy; a cell timeout or a dead kernel runs it again from the top with a fresh
    kernel, up to ``attempts`` runs in all (the last error is raised)."""
    import copy

    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    for attempt in range(1, attempts + 1):
        work = copy.deepcopy(nb)
        try:
            client_class(work, timeout=timeout, kernel_name="python3",
                         resources={"metadata": {"path": str(path.parent)}}).execute()
            return work
        except (CellTimeoutError, DeadKernelError) as exc:
            if attempt == attempts:
                raise
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"[book] {path.name}: {type(exc).__name__}: {why[:200]}; running it again from the "
                  f"top with a fresh kernel (run {attempt + 1} of {attempts}; built artifacts are reused)",
                  flush=True)


# nbval's comment markers and the cell tags that mean the same (nbval reads both)
NBVAL_MARKERS = {"# NBVAL_CHECK_OUTPUT": "nbval-check-output",
                 "# NBVAL_IGNORE_OUTPUT": "nbval-ignore-output", "# NBVAL_SKIP": "nbval-skip",
                 "# NBVAL_RAISES_EXCEPTION": "nbval-raises-exception"}


def markers_to_tags(nb) -> int:
    """Move nbval's ``# NBVAL_...`` comment lines out of code cells into cell tags, so a
    learner reads the code without test markers (nbval honours the tags). Returns how many
    cells changed.

    >>> import nbformat
    >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\\nprint(1)")])
    >>> markers_to_tags(nb), nb.cells[0].source, nb.cells[0].metadata["tags"]
    (1, 'print(1)', ['nbval-check-output'])
    """
    changed = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        lines = cell.source.split("\n")
        keep = [line for line in lines if line.strip() not in NBVAL_MARKERS]
        if len(keep) == len(lines):
            continue
        tags = list(cell.metadata.get("tags", []))
        for line in lines:
            tag = NBVAL_MARKERS.get(line.strip())
            if tag and tag not in tags:
                tags.append(tag)
        cell.metadata["tags"] = tags
        cell.source = "\n".join(keep)
        changed += 1
    return changed


def finish_progress_bars(nb) -> int:
    """Write each tqdm bar's final state into its plain-text output; returns how many changed.

    A headless run saves a progress bar as a widget plus the text it had when first drawn
    ("0%| 0/900"). JupyterLab draws the widget from the saved state, but GitHub and other
    viewers without widgets show that text. The final state (tqdm's HBox of a description,
    a progress bar and a counter) is in the notebook's widget metadata.
    """
    import html

    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    models = state.get("state", {})

    def model(ref):
        return models.get(str(ref).replace("IPY_MODEL_", ""), {})

    changed = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get("application/vnd.jupyter.widget-view+json")
            box = model(view.get("model_id")) if view else {}
            kids = [model(c) for c in box.get("state", {}).get("children", [])]
            if box.get("model_name") != "HBoxModel" or [k.get("model_name") for k in kids] != [
                    "HTMLModel", "FloatProgressModel", "HTMLModel"]:
                continue
            left, bar, right = (k["state"] for k in kids)
            frac = bar.get("value", 0) / bar["max"] if bar.get("max") else 0.0
            filled = max(0, min(10, int(frac * 10)))
            text = (f"{left.get('value', '')}|{'█' * filled}{' ' * (10 - filled)}|"
                    f"{right.get('value', '')}")
            text = html.unescape(text).replace("\u2007", " ")
            changed += out["data"].get("text/plain") != text
            out["data"]["text/plain"] = text
    return changed


NOTEBOOK_TABLE = [
    # (notebook stem prefix, stage, what you build)
    ("00", "introduction", "the pipeline at a glance, presets, the synthetic world"),
    ("01", "data pipeline", "WARC crawl, extraction, exact and MinHash-LSH dedup, quality filters, data mix, byte-level BPE, packing"),
    ("02", "pretraining", "a GPT from its parts, next-token training, generation, probes of what it learned"),
    ("03", "scaling laws", "FLOPs accounting, an IsoFLOP sweep, Chinchilla fits, a compute-optimal calculator"),
    ("04", "supervised fine-tuning", "instruction data, chat templates, loss on responses only, base versus SFT"),
    ("05", "reward model", "a gold judge, preference pairs with known label noise, a Bradley-Terry reward model and what it gets wrong"),
    ("06", "RLHF with PPO", "four models, rollouts, a KL penalty, GAE and clipping; reward hacking measured against the gold judge"),
    ("07", "DPO", "the DPO loss and its implicit reward, DPO against PPO on the same pairs, IPO and failure modes"),
    ("08", "beyond RLHF", "best-of-N and rejection-sampling fine-tuning, GRPO, iterative DPO, AI feedback with a constitution; every method of 05-08 in one table"),
    ("09", "the whole pipeline", "training dynamics of every stage from the runs' logs, one model's journey from base to SFT to PPO and DPO, the pipeline at a glance here and at 7B"),
]
START, END = "<!-- notebook-table:start -->", "<!-- notebook-table:end -->"


def readme_table(timings: dict) -> str:
    """The README's notebook table, minutes taken from the book command's measured timings."""
    present = {p.stem[:2]: p.stem for p in notebooks()}
    lines = ["| notebook | stage | what you build | cpu preset, 2 cores (min) | gpu preset (min) |",
             "|---|---|---|---|---|"]
    for num, stage, what in NOTEBOOK_TABLE:
        stem = present.get(num)
        if stem is None:
            continue
        cpu = timings.get("cpu", {}).get(stem)
        gpu = timings.get("gpu", {}).get(stem)
        lines.append(f"| [{stem}](notebooks/{stem}.ipynb) | {stage} | {what} | "
                     f"{'%.1f' % cpu if cpu is not None else 'not yet measured'} | "
                     f"{'%.1f' % gpu if gpu is not None else 'not yet measured'} |")
    cpu_total = sum(timings.get("cpu", {}).get(s, 0) for s in present.values())
    if all(s in timings.get("cpu", {}) for s in present.values()):
        lines.append(f"| **all** | | | **{cpu_total:.1f}** | |")
    return "\n".join(lines)


def readme_timings(text: str) -> dict:
    """The minutes the README's table already holds, ``{preset: {notebook: minutes}}``, so a
    book run over a few notebooks keeps the others' measured minutes (``book/timings.json``
    does not travel with a clone).

    >>> row = "| [02_pretraining](notebooks/02_pretraining.ipynb) | pretraining | x | 3.7 | not yet measured |"
    >>> readme_timings(f"{START}\\n{row}\\n{END}")
    {'cpu': {'02_pretraining': 3.7}}
    """
    if START not in text or END not in text:
        return {}
    out: dict = {}
    for line in text.split(START, 1)[1].split(END, 1)[0].splitlines():
        m = re.match(r"\| \[(\w+)\]\([^)]*\) \|[^|]*\|[^|]*\| ([^|]*) \| ([^|]*) \|", line)
        if m:
            for preset, cell in (("cpu", m.group(2)), ("gpu", m.group(3))):
                try:
                    out.setdefault(preset, {})[m.group(1)] = float(cell)
                except ValueError:
                    pass
    return out


def update_readme(timings: dict, readme: Path | None = None) -> None:
    """Replace the table between the README's notebook-table markers."""
    readme = readme or REPO / "README.md"
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        return
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{readme_table(timings)}\n{END}{tail}", encoding="utf-8")


def usage_error(message: str) -> int:
    """Print one line, ``book: error: <message>``, to stderr; return exit status 2 (as argparse).

    A user's mistake (an unknown preset or notebook) gets this line, not a traceback.
    """
    print(f"book: error: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("select", nargs="*", help="notebook number prefixes (default: all)")
    ap.add_argument("--preset", default=None, help="smoke, cpu or gpu (default: $LLMLAB_PRESET or cpu)")
    ap.add_argument("--out", default=str(REPO / "book"), help="output folder")
    ap.add_argument("--inplace", action="store_true", help="overwrite the notebooks in notebooks/")
    ap.add_argument("--timeout", type=int, default=None,
                    help="seconds allowed per cell (default: the preset's, CELL_TIMEOUT)")
    args = ap.parse_args(argv)
    preset = args.preset or os.environ.get("LLMLAB_PRESET") or "cpu"
    from .config import get_preset

    try:
        get_preset(preset)  # a clear error for an unknown name, before any notebook runs
    except ValueError as exc:
        return usage_error(str(exc))
    paths = notebooks(args.select)
    if not paths:
        found = ", ".join(p.stem[:2] for p in notebooks())
        return usage_error(f"no notebook matches {' '.join(args.select)!r}; "
                           f"notebooks are: {found}")
    os.environ["LLMLAB_PRESET"] = preset
    timeout = args.timeout or CELL_TIMEOUT.get(preset, 1800)
    out = Path(args.out)
    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    if args.inplace:   # keep the minutes the README holds for notebooks this run does not touch
        for p, rows in readme_timings((REPO / "README.md").read_text(encoding="utf-8")).items():
            timings[p] = rows | timings.get(p, {})
    for path in paths:
        print(f"[book] {path.name} at preset {preset} ...", flush=True)
        minutes = run(path, out, args.inplace, timeout)
        timings.setdefault(preset, {})[path.stem] = round(minutes, 2)
        out.mkdir(parents=True, exist_ok=True)
        timings_path.write_text(json.dumps(timings, indent=1))
        print(f"[book] {path.name}: {minutes:.2f} min", flush=True)
        if args.inplace:
            update_readme(timings)
    total = sum(timings.get(preset, {}).get(p.stem, 0) for p in paths)
    print(f"[book] done: {len(paths)} notebooks in {total:.1f} min; executed copies and HTML in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
