"""Run notebook 03's IsoFLOP sweep at the gpu preset and write ``data/sweep_gpu.csv``.

    python scripts/sweep_gpu.py                 # gpu preset, writes data/sweep_gpu.csv
    python scripts/sweep_gpu.py --preset cpu --out /tmp/sweep_cpu.csv   # same code, any preset

The sweep is ``llmlab.scaling.run_sweep`` with the preset's ``ScalingConfig`` (the same function
the notebook's ``stages.get_sweep`` calls), on the preset's fresh sweep text
(``stages.get_sweep_data``: every run reads each token at most once; built through the cache
if missing). The CSV starts with ``#`` lines that say what made it: preset, device, torch
version, date and wall time; notebook 03 overlays it when present. Only this script writes it.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="gpu")
    ap.add_argument("--out", default=str(ROOT / "data" / "sweep_gpu.csv"))
    args = ap.parse_args(argv)

    import torch

    from llmlab import scaling, stages
    from llmlab.artifacts import atomic_write_text
    from llmlab.config import TrainConfig, get_preset
    from llmlab.device import describe
    from llmlab.packing import load_tokens

    p = get_preset(args.preset)
    env = describe()
    data = stages.get_sweep_data(p)
    train = load_tokens(data.file("train.bin"))
    val = load_tokens(data.file("val.bin"))
    for r in scaling.plan_sweep(p.scaling, p.model):
        print(f"plan: C={r['budget']:.1e} width={r['n_embd']} N={r['n_params']:,} steps={r['steps']} "
              f"epochs={r['tokens'] / len(train):.2f}", flush=True)
    t0 = time.perf_counter()
    rows = scaling.run_sweep(p.scaling, p.model, TrainConfig(), train, val)
    wall = time.perf_counter() - t0
    device = env.get("gpu", env["device"])
    header = "\n".join([
        f"IsoFLOP sweep of llmlab at preset '{p.name}', made by scripts/sweep_gpu.py "
        f"(llmlab.scaling.run_sweep)",
        f"device: {device} ({env['precision']}), torch {torch.__version__}, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, wall {wall:.0f} s",
        f"loss = final validation loss in nats per token of the '{p.name}' preset's tokenizer "
        f"(vocabulary {p.model.vocab_size})",
    ])
    out = Path(args.out)
    atomic_write_text(out, scaling.rows_to_csv(rows, header))
    fit = scaling.fit_isoflop(rows)
    print(f"wrote {out.name}: {len(rows)} runs in {wall:.0f} s; a = {fit.a:.3f}, b = {fit.b:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
