"""The pretraining benchmark runs end to end (at the smoke preset) and reports what it claims."""
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pretrain_benchmark_prints_one_json_line():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pretrain.py"), "--preset",
                          "smoke", "--repeats", "2", "--steps", "1", "--threads", "1"],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["benchmark"] == "pretrain" and res["preset"] == "smoke"
    for key in ("speedup_vs_transformers", "speedup_vs_transformers_fused_gelu"):
        lo, hi = res[f"{key}_rounds_min_max"]
        assert 0 < lo <= res[key] <= hi
    assert 0 < res["cpu_mfu"] and math.isclose(res["headroom_at_matmul_peak"],
                                               1 / res["cpu_mfu"], rel_tol=1e-2)
    assert set(res["gelu_fwd_bwd_ms"]) == {"tanh, fused kernel (llmlab)",
                                           "exact (erf), fused kernel",
                                           "tanh, written out (GPT-2 code)"}


def test_gpu_part_runs_its_code_on_a_cpu():
    res = _load("pretrain").gpu_part(1, 1, device="cpu", preset_name="smoke", compile=False)
    assert res["gpu"] == "cpu" and res["gpu_precision"] == "fp32"
    assert res["gpu_tokens_per_sec"] > 0 and 0 < res["gpu_mfu"] < 2
