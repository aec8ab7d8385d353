"""The base model of a preset: how well it learned, and how long notebook 02's training takes.

    python benchmarks/base_model.py [--preset cpu] [--reuse]

Trains the preset's base model exactly as notebook 02 does (``llmlab.train.pretrain``: the
same config, seed and token files) and times it; ``--reuse`` loads the cached artifact
instead and reports the wall time recorded when it was built. Then measures, on the model:

- validation loss over the whole of ``val.bin`` (``train.loss_over``) and bits per byte,
  next to the world's renderer entropy (``World.entropy_bits_per_byte``), the data's
  irreducible bits per byte;
- knowledge-probe accuracy by how often a fact was seen in pretraining (goal: >= 90% on
  facts seen at least five times), before training (same init) and after;
- grammar minimal pairs.

Cores and the load average are printed too: other work on the machine slows training.
The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmlab import packing, probes, stages  # noqa: E402
from llmlab.config import get_preset  # noqa: E402
from llmlab.device import seed_everything  # noqa: E402
from llmlab.model import GPT  # noqa: E402
from llmlab.train import bits_per_byte, bytes_of_tokens, loss_over, pretrain  # noqa: E402

GOAL_SEEN5_ACCURACY = 0.90
GOAL_TRAIN_SECONDS = 360.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--reuse", action="store_true", help="use the cached base model")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's own, the machine's cores)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    p = get_preset(args.preset)
    world = stages.get_world(p)
    tok = stages.get_tokenizer(p)
    tokens = stages.get_tokens(p)
    val = packing.load_tokens(tokens.file("val.bin"))
    counts = stages.pretraining_fact_counts(p)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    seed_everything(p.train.seed)
    untrained = GPT(p.model)
    before = probes.accuracy_by_seen(probes.knowledge_probes(untrained, tok, world, counts))

    if args.reuse:
        art = stages.get_base_model(p, progress=False)
        model = stages.load_base_model(p)
        train_seconds = art.info["wall_seconds"]
        tok_s, mfu_ = art.info["tokens_per_sec"], art.info["mfu"]
    else:
        t0 = time.perf_counter()
        model, res = pretrain(p.model, p.train, packing.load_tokens(tokens.file("train.bin")), val,
                              device="cpu", progress=False)
        train_seconds = time.perf_counter() - t0
        tok_s, mfu_ = res.tokens_per_sec, res.mfu
        print(f"trained {res.steps} steps in {train_seconds:.1f} s", file=sys.stderr)
    model.eval()
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    vloss = loss_over(model, val)
    bpb = bits_per_byte(vloss, len(val), bytes_of_tokens(tok, val))
    records = probes.knowledge_probes(model, tok, world, counts)
    after = probes.accuracy_by_seen(records)
    grammar = probes.score_grammar(model, tok, probes.grammar_probes(world))

    def rnd(d):
        return {k: {kk: round(vv, 4) if isinstance(vv, float) else vv for kk, vv in v.items()}
                for k, v in d.items()}

    out = {"benchmark": "base_model", "preset": p.name, "cpu_threads": torch.get_num_threads(),
           "load_average_before": load_before, "load_average_after": load_after,
           "reused_artifact": args.reuse,
           "train_wall_seconds": round(train_seconds, 1), "goal_train_seconds": GOAL_TRAIN_SECONDS,
           "steps": p.train.max_steps, "tokens_per_sec": round(tok_s, 1), "mfu": round(mfu_, 4),
           "val_loss_nats_per_token": round(vloss, 4), "val_bits_per_byte": round(bpb, 4),
           "world_entropy_bits_per_byte": round(world.entropy_bits_per_byte(), 4),
           "knowledge_before": rnd(before), "knowledge_after": rnd(after),
           "seen5_accuracy": round(after["seen >= 5"]["accuracy"], 4),
           "goal_seen5_accuracy": GOAL_SEEN5_ACCURACY,
           "grammar_accuracy": {k: round(v[0], 4) for k, v in grammar.items()}}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
