"""Benchmark of notebook 05: the reward model against its label-noise ceiling and a length baseline.

    python benchmarks/reward.py                 # $LLMLAB_PRESET, else cpu (gpu with CUDA)
    python benchmarks/reward.py --preset smoke  # seconds

Trains the preset's reward model from the SFT model on the cached preference pairs
(``llmlab.stages.get_prefs``; the pairs and the SFT model are built first if missing), timing
the training, then measures it with ``llmlab.reward.evaluate``: held-out pairwise accuracy
(with its 95% interval, counted by prompt: ``reward.pair_share``) next to the ceiling that the labels' Bradley-Terry noise allows
and the length-only baseline, accuracy per category (each beside its own ceiling and the points
of the overall gap it holds), and the Spearman correlation of RM scores
with gold scores on fresh SFT samples.
Also the same model on pairs drawn like the held-out ones about the training side of the split
(``train_side``, with ``repeats``: its pairs that repeat a training pair, and ``unseen``: the
rest; each beside its own ceiling), and its
reward's two terms apart (``terms_gold_agreement``: how often the head alone, the likelihood term
alone and both order a held-out pair as the gold judge does). Its peers, measured in the same run
on the same pairs:
the classic reward model (the scalar head alone, ``likelihood_weight=None``, trained the same
way) and the SFT model's own likelihood with no preference training
(``llmlab.reward.likelihood_pairs``). Then the same training for ``compare_steps`` from SFT
weights and from a random init. Goals at the cpu preset: accuracy within 3 points of the
ceiling, at least 10 points above the length baseline, training <= 180 s on 2 cores.

The last line of stdout is one JSON object with every figure and the goals beside them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from llmlab import prefs, reward, stages  # noqa: E402
from llmlab.config import get_preset, pref_config, reward_config  # noqa: E402
from llmlab.device import pick_device, seed_everything  # noqa: E402

GOALS = {"max_gap_to_ceiling": 0.03, "min_gain_over_length": 0.10, "train_seconds": 180.0}


def train_one(p, tok, data, init: str, steps: int, device, likelihood: bool = True):
    """One reward-model run; returns (model, wall seconds). ``likelihood=False``: the classic
    head-only reward model."""
    rc = reward_config(p)
    block = p.model.block_size
    train_enc, _ = reward.encode_pairs(data["train"], tok, p.sft.template, block)
    val_enc, _ = reward.encode_pairs(data["val"], tok, p.sft.template, block)
    lm = stages.load_sft_model(p) if init == "sft" else None
    seed_everything(rc.seed)
    model = reward.reward_model_from(lm, p.model, rc.likelihood_weight if likelihood else None)
    cfg = reward.reward_train_config(rc, p.train, steps)
    t0 = time.perf_counter()
    reward.train_reward_model(model, train_enc, val_enc, cfg, tok.pad_id, device, progress=False)
    return model, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the 2-core target)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    p = get_preset(args.preset)
    pc, rc = pref_config(p), reward_config(p)
    device = pick_device()
    tok = stages.get_tokenizer(p)
    data = stages.load_prefs(p)
    print(f"[reward] pairs: {len(data['train'])} train, {len(data['val'])} held out; "
          f"{rc.max_steps} steps x {rc.batch_size} pairs", flush=True)
    model, seconds = train_one(p, tok, data, "sft", rc.max_steps, device)
    ev = reward.evaluate(model, tok, data["train"], data["val"], data["fresh"], pc.label_temperature,
                         p.sft.template)
    lo, hi = ev["accuracy_share"]["ci"]          # counted by prompt (reward.pair_share)
    print(f"[reward] held-out accuracy {reward.fmt_pair_share(ev['accuracy_share'])}; ceiling "
          f"{ev['ceiling']:.3f}; length-only {ev['length']['accuracy']:.3f}; {seconds:.1f} s", flush=True)
    # the same RM on pairs drawn like the held-out ones about the training side of the split
    side = reward.evaluate(model, tok, data["train"], data["train_side"], [], pc.label_temperature,
                           p.sft.template)
    print(f"[reward] training-side pairs: {reward.fmt_pair_share(side['accuracy_share'])}; ceiling "
          f"{side['ceiling']:.3f}", flush=True)

    def subset(ev_, keep):
        """accuracy, prompt-clustered interval and ceiling of the pairs ``keep`` selects"""
        sh = reward.accuracy_where(ev_, keep, pc.label_temperature)
        if not sh["n"]:
            return {"n": 0}
        return {"accuracy": round(sh["rate"], 4), "ci95": [round(x, 4) for x in sh["ci"]], "n": sh["n"],
                "prompts": sh["prompts"], "ceiling": round(sh["ceiling"], 4)}

    # the reward's two terms apart: how often each alone orders a held-out pair as the judge does
    val_enc, _ = reward.encode_pairs(data["val"], tok, p.sft.template, p.model.block_size)
    parts = reward.pair_parts(model, val_enc, tok.pad_id)
    terms = {"head": parts["head"], "likelihood": parts["likelihood"], "both": (ev["r_chosen"], ev["r_rejected"])}
    term_hits = {t: reward.gold_hits(ev["pairs"], *sc) for t, sc in terms.items()}
    terms_by_cat = {c: {t: round(sum(h for h, q in zip(hs, ev["pairs"]) if q["category"] == c)
                                 / sum(q["category"] == c for q in ev["pairs"]), 4) for t, hs in term_hits.items()}
                    for c in sorted({q["category"] for q in ev["pairs"]})}

    def per_category(pairs, r_w, r_l):
        out: dict = {}
        for q, a, b in zip(pairs, r_w, r_l):
            out.setdefault(q["category"], []).append(a > b)
        return {c: round(sum(v) / len(v), 4) for c, v in sorted(out.items())}

    head, head_seconds = train_one(p, tok, data, "sft", rc.max_steps, device, likelihood=False)
    ev_head = reward.evaluate(head, tok, data["train"], data["val"], data["fresh"],
                              pc.label_temperature, p.sft.template)
    print(f"[reward] head-only peer: {reward.fmt_pair_share(ev_head['accuracy_share'])} "
          f"({head_seconds:.1f} s)", flush=True)
    lp_w, lp_l = reward.likelihood_pairs(stages.load_sft_model(p, device), val_enc, tok.pad_id)
    lik = reward.pair_share([a > b for a, b in zip(lp_w, lp_l)], ev["pairs"])
    print(f"[reward] SFT likelihood alone: {reward.fmt_pair_share(lik)}", flush=True)
    init_acc = {}
    for init in ("sft", "random"):
        m, s = train_one(p, tok, data, init, rc.compare_steps, device)
        r_w, r_l = reward.score_pairs(m, val_enc, tok.pad_id)
        acc = reward.pair_share([a > b for a, b in zip(r_w, r_l)], ev["pairs"])
        init_acc[init] = round(acc["rate"], 4)
        print(f"[reward] {init} init, {rc.compare_steps} steps: {reward.fmt_pair_share(acc)} ({s:.1f} s)",
              flush=True)
    gap = ev["ceiling"] - ev["accuracy"]
    cat_ceiling = {c: prefs.ceiling_accuracy([q["gold_chosen"] - q["gold_rejected"] for q in ev["pairs"]
                                              if q["category"] == c], pc.label_temperature)
                   for c in ev["per_category_share"]}
    gain = ev["accuracy"] - ev["length"]["accuracy"]
    out = {
        "benchmark": "reward", "preset": p.name, "device": device.type, "threads": args.threads,
        "n_train_pairs": len(data["train"]), "n_val_pairs": ev["n"],
        "n_val_prompts": ev["accuracy_share"]["prompts"], "steps": rc.max_steps,
        "batch_size": rc.batch_size, "label_temperature": pc.label_temperature,
        "accuracy": round(ev["accuracy"], 4), "accuracy_ci95": [round(lo, 4), round(hi, 4)],
        "gold_accuracy": round(ev["gold_accuracy"], 4), "noise_ceiling": round(ev["ceiling"], 4),
        "length_baseline": round(ev["length"]["accuracy"], 4),
        "length_baseline_prefers": ev["length"]["prefers"],
        # each category's own label-noise ceiling, and how many points of the overall gap to the
        # ceiling it holds (its shortfall weighted by its share of the held-out pairs)
        "per_category": {c: {"accuracy": round(sh["rate"], 4), "ci95": [round(x, 4) for x in sh["ci"]],
                             "n": sh["n"], "prompts": sh["prompts"], "ceiling": round(cat_ceiling[c], 4),
                             "points_of_gap": round(100 * (cat_ceiling[c] - sh["rate"]) * sh["n"] / ev["n"], 2)}
                         for c, sh in ev["per_category_share"].items()},
        # the same model on pairs drawn like the held-out ones about the training side of the
        # split; "repeats": its pairs that repeat a training pair, "unseen": the rest
        "train_side": {**subset(side, lambda q: True),
                       "gap_to_ceiling": round(side["ceiling"] - side["accuracy"], 4),
                       "seen_pairs": sum(q["seen"] for q in side["pairs"]),
                       "repeats": subset(side, lambda q: q["seen"]),
                       "unseen": subset(side, lambda q: not q["seen"]),
                       "per_category": {c: subset(side, lambda q, c=c: q["category"] == c)
                                        for c in side["per_category_share"]}},
        # share of held-out pairs each term of the reward alone orders as the gold judge does
        "terms_gold_agreement": terms_by_cat,
        "spearman_gold": round(ev["spearman"], 4), "n_fresh": ev["n_fresh"], "ece": round(ev["ece"], 4),
        "likelihood_weight": {"start": rc.likelihood_weight,
                              "end": round(model.likelihood_weight.item(), 4)},
        "peers": {
            "head_only": {"accuracy": round(ev_head["accuracy"], 4),
                          "accuracy_ci95": [round(x, 4) for x in ev_head["accuracy_share"]["ci"]],
                          "per_category": {c: round(k / n, 4) for c, (k, n) in ev_head["per_category"].items()},
                          "spearman_gold": round(ev_head["spearman"], 4),
                          "train_seconds": round(head_seconds, 2)},
            "sft_likelihood": {"accuracy": round(lik["rate"], 4),
                               "accuracy_ci95": [round(x, 4) for x in lik["ci"]],
                               "per_category": per_category(ev["pairs"], lp_w, lp_l)},
        },
        "train_seconds": round(seconds, 2), "compare_steps": rc.compare_steps,
        "init_accuracy": init_acc, "gap_to_ceiling": round(gap, 4), "gain_over_length": round(gain, 4),
        "goals": GOALS,
        "met": {"max_gap_to_ceiling": gap <= GOALS["max_gap_to_ceiling"],
                "min_gain_over_length": gain >= GOALS["min_gain_over_length"],
                "train_seconds": seconds <= GOALS["train_seconds"]},
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
