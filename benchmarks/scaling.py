"""Benchmark of notebook 03: the IsoFLOP sweep's wall time and what it measures.

    python benchmarks/scaling.py                  # cpu preset
    python benchmarks/scaling.py --preset smoke

Runs the preset's whole sweep fresh (``llmlab.scaling.run_sweep``, no cache; on the fresh text of
``stages.get_sweep_data``, so no run reads a token twice), then fits it: how many budgets have
their minimum inside the widths trained (goal: 4 or more), Approach 1's exponent from the
training curves, the best loss and the fitted E in bits per byte beside the renderer's entropy
of the validation text, Approach 2's exponents a and b (N_opt ~ C^a, D_opt ~ C^b) with 10-90% residual-bootstrap
intervals, the tokens per parameter Approach 2 implies at the largest budget, and, as the
peer measured on the same runs, Approach 3's exponents. The published values sit beside them
(Hoffmann et al. 2022 Approach 2: a = 0.49, b = 0.51; Besiroglu et al. 2024's refit of
Approach 3: a = beta/(alpha+beta)). The sweep takes minutes, so it runs once (repeats = 1).
The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GOAL_SWEEP_SECONDS = {"smoke": 30.0, "cpu": 480.0}   # the issue: <= 8 min at cpu on 2 cores


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples (default: the preset's)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from llmlab import scaling, stages
    from llmlab.config import TrainConfig, get_preset
    from llmlab.device import pick_device
    from llmlab.packing import load_tokens

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    p = get_preset(args.preset)
    n_boot = args.n_boot or p.scaling.n_boot
    data = stages.get_sweep_data(p)        # fresh text, built through the cache if missing (not timed)
    train = load_tokens(data.file("train.bin"))
    val = load_tokens(data.file("val.bin"))

    t0 = time.perf_counter()
    rows = scaling.run_sweep(p.scaling, p.model, TrainConfig(), train, val, progress=True)
    wall = time.perf_counter() - t0
    for r in rows:
        print(f"C={r['budget']:.1e} width={r['n_embd']:4d} N={r['n_params']:>9,} D={r['tokens']:>10,} "
              f"steps={r['steps']:5d} epochs={r['epochs']:6.2f} loss={r['loss']:.4f} "
              f"({r['seconds']:.1f} s)", flush=True)

    fit2 = scaling.fit_isoflop(rows)
    boot = scaling.bootstrap_isoflop(rows, n_boot=n_boot, seed=0)
    C_max = float(fit2.budgets.max())
    i_max = int(np.argmax(fit2.budgets))
    N, D, L = (np.array([r[k] for r in rows], float) for k in ("n_params", "tokens", "loss"))
    law3, _ = scaling.fit_parametric(N, D, L, name="this sweep")
    boot3, boot3_at_bound = scaling.bootstrap_parametric(N, D, L, n_boot=min(n_boot, 100), start=law3,
                                                         return_at_bound=True)
    ident = scaling.identification(law3, boot3, boot3_at_bound)
    a3 = boot3[:, 4] / (boot3[:, 3] + boot3[:, 4])
    env = scaling.fit_envelope(rows)
    val_info = data.info["val"]
    bpb = lambda nats: round(nats / math.log(2) / val_info["bytes_per_token"], 4)
    bracketed = int(np.isfinite(fit2.n_opt).sum())

    out = {
        "benchmark": "scaling", "preset": p.name, "device": pick_device().type,
        "threads": torch.get_num_threads(), "repeats": 1,
        "sweep_wall_s": round(wall, 1), "goal_sweep_wall_s": GOAL_SWEEP_SECONDS.get(p.name),
        "runs": len(rows), "budgets": [float(c) for c in fit2.budgets],
        "widths": list(p.scaling.widths), "tokens_per_param_band": list(p.scaling.tokens_per_param),
        "max_epochs": round(max(r["epochs"] for r in rows), 4),
        "budgets_with_minimum_inside": bracketed,
        "fresh_train_tokens": data.info["train"]["tokens"],
        "val_pages_also_in_train": data.info["val_pages_also_in_train"],
        "approach1": {"a": None if math.isnan(env.a) else round(env.a, 4), "sizes_on_envelope": env.sizes},
        "entropy_floor_bits_per_byte": val_info["entropy_bits_per_byte"],
        "best_loss_bits_per_byte": bpb(min(r["loss"] for r in rows)),
        "fitted_E_bits_per_byte": None if ident["E"] else bpb(law3.E),
        "approach2": {
            "a": round(fit2.a, 4), "a_interval_10_90": [round(x, 4) for x in scaling.interval(boot["a"])],
            "b": round(fit2.b, 4), "b_interval_10_90": [round(x, 4) for x in scaling.interval(boot["b"])],
            "n_opt": [round(float(x)) if np.isfinite(x) else None for x in fit2.n_opt],
            "tokens_per_param_at_largest_budget": round(float(fit2.d_opt[i_max] / fit2.n_opt[i_max]), 2),
            "tokens_per_param_at_largest_budget_from_power_laws":
                round(float(fit2.d_opt_at(C_max) / fit2.n_opt_at(C_max)), 2),
            "bootstrap_resamples": n_boot, "bootstrap_failed": boot["n_failed"]},
        "peer_approach3_same_runs": {
            "E": round(law3.E, 4), "A": round(law3.A, 2), "B": round(law3.B, 2),
            "alpha": round(law3.alpha, 4), "beta": round(law3.beta, 4), "a": round(law3.a, 4),
            "a_interval_10_90": [round(x, 4) for x in scaling.interval(a3)],
            "tokens_per_param_at_largest_budget": round(float(law3.tokens_per_param(C_max)), 2),
            "not_identified": {k: v for k, v in ident.items() if v is not None}},
        "goals": {"budgets_with_minimum_inside": 4, "max_epochs": 1.0},
        "goals_met": {"budgets_with_minimum_inside": bracketed >= 4,
                      "max_epochs": max(r["epochs"] for r in rows) <= 1.0,
                      "sweep_wall_s": wall <= GOAL_SWEEP_SECONDS.get(p.name, float("inf"))},
        "published": {"chinchilla_approach2_a": 0.49, "chinchilla_approach2_b": 0.51,
                      "chinchilla_approach3_a": round(scaling.CHINCHILLA.a, 4),
                      "epoch_refit_a": round(scaling.EPOCH.a, 4),
                      "goal_a_b": "about 0.5 each (Hoffmann et al. 2022, Table 2)"},
    }
    print(json.dumps(_finite(out)))
    return 0


def _finite(x):
    """``x`` with every NaN or infinity replaced by None (strict JSON has no NaN)."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


if __name__ == "__main__":
    sys.exit(main())
