"""scripts/gpu_check.sh on a machine without a GPU: it starts, plans, applies the precision
rule to named cards, and refuses to measure without CUDA (the measuring itself needs a GPU)."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
gc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gc)


def run(*args, hide_gpu=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if hide_gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""     # a GPU machine too sees no CUDA here
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_refuses_cleanly_without_cuda():
    r = run()
    assert r.returncode == gc.NO_CUDA, r.stderr
    assert "no CUDA device" in r.stderr and "nothing was run" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize("name, cap, precision, scaler, peak", [
    ("Tesla T4", (7, 5), "fp16", True, 65.0),                 # bf16 "supported" but emulated
    ("Tesla V100-SXM2-16GB", (7, 0), "fp16", True, 125.0),
    ("NVIDIA A100-SXM4-40GB", (8, 0), "bf16", False, 312.0),
    ("NVIDIA L4", (8, 9), "bf16", False, 121.0),
    ("NVIDIA H100 80GB HBM3", (9, 0), "bf16", False, 989.0),
])
def test_precision_rule_per_card(name, cap, precision, scaler, peak):
    d = gc.describe_gpu(name, cap)
    assert (d["precision"], d["grad_scaler"], d["peak_tflops"]) == (precision, scaler, peak)


def test_dry_run_plans_the_gpu_book_and_benchmarks():
    r = run("--dry-run", "--assume", "Tesla T4:7.5", "--notebooks", "00", "02")
    assert r.returncode == 0, r.stderr
    assert "fp16 autocast with a GradScaler" in r.stdout
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["precision"] == "fp16" and out["capability"] == "7.5"
    book, *benches = out["plan"]
    assert book.endswith("-m llmlab.book --preset gpu --out " + str(ROOT / "book-gpu") + " 00 02")
    assert [b.split()[1] for b in benches] == [f"benchmarks/{n}.py" for n, _ in gc.BENCHMARKS]
    assert all("--preset gpu" in b for b in benches)


def test_every_planned_benchmark_takes_a_preset():
    for _, args in gc.BENCHMARKS:
        src = (ROOT / args[0]).read_text()
        assert '"--preset"' in src, args[0]


def test_assume_is_only_for_planning():
    r = run("--assume", "Tesla T4:7.5")
    assert r.returncode == 2 and "--assume only plans" in r.stderr
    r = run("--dry-run", "--assume", "T4")
    assert r.returncode == 2 and "NAME:MAJOR.MINOR" in r.stderr


def test_last_json_line():
    assert gc.last_json('noise\n{"a": 1}\n{"b": 2}\ntrailing') == {"b": 2}
    assert gc.last_json("no json here") is None
