"""Benchmark of notebook 04: base versus SFT on the held-out prompts, with and without loss masking.

    python benchmarks/sft.py                 # cpu preset
    python benchmarks/sft.py --preset smoke  # seconds

Fine-tunes the preset's base model twice from the same start -- loss on reply tokens only
(the SFT model) and loss on every token (the ablation) -- timing each run, then scores the
base model and both fine-tuned models on the same held-out prompts (``llmlab.evaluate.evaluate_chat``):
format adherence, factual accuracy on held-out facts the base model knows, "I don't know" on
unknown entities and refusals of decline requests. Goals at the cpu preset: format >= 0.95,
factual >= 0.80, SFT wall time <= 180 s on 2 cores.

The last line of stdout is one JSON object with every figure and the goals beside them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from llmlab import evaluate, sft, stages  # noqa: E402
from llmlab.config import get_preset  # noqa: E402
from llmlab.device import pick_device, seed_everything  # noqa: E402

GOALS = {"format": 0.95, "factual": 0.80, "sft_seconds": 180.0}


def run_sft(p, tok, data, train_on_prompt: bool, device) -> tuple:
    """One fine-tuning run from the base model; returns (model, wall seconds, result)."""
    c = p.sft
    block = p.model.block_size
    train_enc, _ = sft.encode_examples(data["train"], tok, c.template, block, train_on_prompt)
    val_enc, _ = sft.encode_examples(data["val"], tok, c.template, block, train_on_prompt)
    seed_everything(c.seed)
    model = stages.load_base_model(p, device=device)
    cfg = sft.sft_train_config(c, p.train)
    t0 = time.perf_counter()
    res = sft.sft_train(model, train_enc, val_enc, cfg, tok.pad_id, device=device, progress=False)
    return model, time.perf_counter() - t0, res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--repeats", type=int, default=1, help="SFT runs per variant (median time)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the 2-core target)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    p = get_preset(args.preset)
    device = pick_device()
    tok = stages.get_tokenizer(p)
    data = stages.load_sft_data(p)
    world = stages.get_world(p)
    facts = {f.id: f for f in world.facts}
    items = data["eval"]
    base = stages.load_base_model(p, device=device)
    eval_facts = [facts[i["fact_id"]] for i in items if i["kind"] == "fact"]
    known = evaluate.base_knows(base, tok, eval_facts)
    print(f"[sft] held-out prompts: {len(items)}; held-out facts the base model knows: "
          f"{sum(known.values())}/{len(known)}", flush=True)
    rows = {"base": evaluate.evaluate_chat(base, tok, items, p.sft.template, known, p.sft.max_new_tokens)}
    seconds = {}
    for name, train_on_prompt in (("sft_masked", False), ("sft_unmasked", True)):
        times = []
        for r in range(args.repeats):
            model, s, res = run_sft(p, tok, data, train_on_prompt, device)
            times.append(s)
            print(f"[sft] {name} run {r + 1}: {s:.1f} s, final val loss "
                  f"{res.val_losses[-1][1]:.3f}", flush=True)
        seconds[name] = round(statistics.median(times), 2)
        rows[name] = evaluate.evaluate_chat(model, tok, items, p.sft.template, known, p.sft.max_new_tokens)
    table = {k: evaluate.metrics_row(v) for k, v in rows.items()}
    for k, v in table.items():
        print(f"[sft] {k:13s} " + "  ".join(f"{m}={x}" for m, x in v.items()), flush=True)
    masked = table["sft_masked"]
    out = {
        "benchmark": "sft", "preset": p.name, "device": device.type, "threads": args.threads,
        "steps": p.sft.max_steps, "n_train": len(data["train"]), "n_eval": len(items),
        "n_factual_known": rows["base"]["n_factual"], "metrics": table,
        "sft_seconds": seconds, "repeats": args.repeats, "goals": GOALS,
        "met": {"format": masked["format"] >= GOALS["format"],
                "factual": masked["factual"] is not None and masked["factual"] >= GOALS["factual"],
                "sft_seconds": seconds["sft_masked"] <= GOALS["sft_seconds"]},
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
