"""Benchmark of notebook 07: DPO against SFT and PPO on the same pairs, prompts and gold judge.

    python benchmarks/dpo.py                 # $LLMLAB_PRESET, else cpu (gpu with CUDA)
    python benchmarks/dpo.py --preset smoke  # seconds

Trains one DPO run per beta of ``DPOConfig.betas`` from the SFT model on notebook 05's
preference pairs (``llmlab.stages.load_prefs``), timing each, and measures

- the implicit reward's accuracy on every held-out pair, next to notebook 05's reward model's;
- gold reward, proxy (RM) reward and KL to the reference on notebook 06's held-out prompts with
  ``llmlab.ppo.evaluate_policy`` for each beta, and the same numbers for SFT and PPO (main run and
  beta = 0) from the cached PPO runs (``llmlab.stages.get_ppo``; built first if missing);
- the held-out behaviour shares of SFT, PPO and DPO (main beta);
- wall time and state memory (parameters, gradients and AdamW state, ``dpo.state_memory``) of
  DPO's two models against PPO's four;
- the main run repeated with the other batch-order seeds of ``DPOConfig.seeds`` (notebook 07's
  repeats), each paired to SFT: a paired interval covers the replies sampled and the prompts, not
  the training run's own randomness, and the repeats show how far that moves the result;
- the same DPO on the on-policy pairs alone (two of the SFT model's own samples each, the DPO
  paper's setting; notebook 07's ``on_policy`` runs) at the main seed and each repeat's, paired
  to SFT (the second reading of the gold goal below).

Goals at the cpu preset: DPO (main beta) raises the gold reward over SFT (the paired 95% interval
of its gold difference to SFT, prompt by prompt on the same prompts, lies above 0), uses at most half of
PPO's model memory, and trains all its betas in at most 4 minutes on 2 cores. The frontier
comparison with PPO is reported, not a goal. The gold goal is read twice: on all of notebook 05's
pairs (``gold_over_sft``, the main run: the same pairs the reward model learned from, most
of them (about 87% at the cpu preset) written by templates, not by the policy) and on its on-policy pairs alone
(``gold_over_sft_on_policy_pairs``, at every batch-order seed: the setting of the DPO paper,
whose pairs are sampled from the reference policy).

The last line of stdout is one JSON object with every figure and the goals beside them.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from llmlab import beyond, dpo, ppo, prefs, stages  # noqa: E402
from llmlab.config import dpo_config, get_preset, ppo_config  # noqa: E402
from llmlab.device import pick_device, seed_everything  # noqa: E402

GOALS = {"gold_over_sft": "paired 95% interval above 0",
         "gold_over_sft_on_policy_pairs": "paired 95% interval above 0 at every batch-order seed",
         "max_memory_ratio": 0.5, "train_seconds": 240.0}


def summary(e: dict) -> dict:
    """The figures of one ``ppo.evaluate_policy`` result."""
    return {"gold": round(e["gold"], 4), "gold_ci95": [round(x, 4) for x in e["gold_ci"]],
            "proxy": round(e["proxy"], 4), "kl": round(e["kl"], 4),
            "kl_ci95": [round(x, 4) for x in e["kl_ci"]], "length_chars": round(e["length"], 1),
            "shares": {k: {"rate": round(v["rate"], 4), "k": v["k"], "n": v["n"],
                           "ci95": [round(x, 4) for x in v["ci"]]} for k, v in e["shares"].items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the 2-core target)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    p = get_preset(args.preset)
    dc, pc = dpo_config(p), ppo_config(p)
    device = pick_device()
    tok = stages.get_tokenizer(p)
    data = stages.load_prefs(p)
    sft_model = stages.load_sft_model(p, device)
    rm = stages.load_reward_model(p, device)
    rm_info = stages.get_reward_model(p).info
    world = stages.get_world(p)
    values = prefs.relation_values(world)
    items = ppo.prompt_sets(world, p.sft, pc)["eval"]
    ppo_main, ppo_beta0 = stages.get_ppo(p, "main"), stages.get_ppo(p, "beta0")
    block, template = p.model.block_size, p.sft.template
    val_enc, _ = dpo.encode_pairs(data["val"], tok, template, block)
    cfg = dpo.dpo_train_config(dc, p.train)
    print(f"[dpo] pairs: {len(data['train'])} train, {len(val_enc)} held out; {dc.max_steps} steps x "
          f"{dc.batch_size} pairs per beta; betas {list(dc.betas)}", flush=True)

    runs, seconds, main_policy, main_e = {}, {}, None, None
    for beta in dc.betas:
        seed_everything(dc.seed)
        policy = copy.deepcopy(sft_model).train()
        ref = copy.deepcopy(sft_model).eval()
        t0 = time.perf_counter()
        dpo.train_dpo(policy, ref, data["train"], val_enc, cfg, tok.pad_id, beta, device=device,
                      progress=False, tok=tok, template=template)
        seconds[beta] = time.perf_counter() - t0
        acc = dpo.implicit_accuracy(policy, ref, val_enc, tok.pad_id)
        e = ppo.evaluate_policy(policy.eval(), sft_model, rm, tok, items, values, template,
                                pc.max_new_tokens, n_samples=pc.eval_samples, seed=pc.seed + 1,
                                no_stop_penalty=pc.no_stop_penalty, keep_replies=beta == dc.beta)
        if beta == dc.beta:
            main_e = e
        runs[beta] = {"beta": beta, "train_seconds": round(seconds[beta], 2),
                      "implicit_accuracy": round(acc["correct"] / acc["n"], 4), "n_val_pairs": acc["n"],
                      **summary(e)}
        if beta == dc.beta:
            main_policy = policy
        print(f"[dpo] beta {beta:g}: {seconds[beta]:.1f} s, implicit accuracy "
              f"{runs[beta]['implicit_accuracy']:.3f}, gold {e['gold']:+.3f}, KL {e['kl']:.2f}", flush=True)
    main_run = runs[dc.beta] if dc.beta in runs else runs[dc.betas[0]]
    main_policy = main_policy if main_policy is not None else sft_model

    sft_e, ppo_e = ppo_main.info["initial_eval"], ppo_main.info["final_eval"]
    mem_dpo = dpo.state_memory([main_policy], [sft_model], cfg)
    mem_ppo = dpo.state_memory([main_policy, ppo.value_model_from(rm)], [sft_model, rm], cfg)
    ratio = mem_dpo["total"] / mem_ppo["total"]
    total_seconds = sum(seconds.values())
    gain = main_run["gold"] - sft_e["gold"]
    # SFT measured again with its replies kept (the same prompts, seed and code as notebook 06's
    # stored evaluation, so the same numbers): the gold difference prompt by prompt
    sft_pe = ppo.evaluate_policy(sft_model, sft_model, rm, tok, items, values, template, pc.max_new_tokens,
                                 n_samples=pc.eval_samples, seed=pc.seed + 1, no_stop_penalty=pc.no_stop_penalty)
    paired = beyond.paired_difference(main_e, sft_pe)[:3] if main_e is not None else (gain, float("nan"), float("nan"))
    separated = main_run["gold_ci95"][0] > sft_e["gold_ci"][1]
    def rerun(seed: int, pairs: list[dict]) -> dict:
        """DPO at the main beta with batch-order ``seed`` on ``pairs``, paired to SFT."""
        seed_everything(seed)
        policy = copy.deepcopy(sft_model).train()
        ref = copy.deepcopy(sft_model).eval()
        dpo.train_dpo(policy, ref, pairs, val_enc, dpo.dpo_train_config(dataclasses.replace(dc, seed=seed), p.train),
                      tok.pad_id, dc.beta, device=device, progress=False, tok=tok, template=template)
        e = ppo.evaluate_policy(policy.eval(), sft_model, rm, tok, items, values, template, pc.max_new_tokens,
                                n_samples=pc.eval_samples, seed=pc.seed + 1, no_stop_penalty=pc.no_stop_penalty)
        d = beyond.paired_difference(e, sft_pe)[:3]
        return {"seed": seed, "gold": round(e["gold"], 4), "kl": round(e["kl"], 4),
                "gold_gain_paired95": [round(x, 4) for x in d]}

    # the main run again with other batch orders (as notebook 07's seed_<s> runs)
    repeats = []
    for s in dc.seeds:
        if s == dc.seed or main_e is None:
            continue
        repeats.append(rerun(s, data["train"]))
        d = repeats[-1]["gold_gain_paired95"]
        print(f"[dpo] repeat with batch-order seed {s}: gold - SFT {d[0]:+.3f} ({d[1]:+.3f} to {d[2]:+.3f})",
              flush=True)
    # the same training on the on-policy pairs alone (two of the SFT model's own samples each,
    # as in the DPO paper's setting; notebook 07's on_policy runs), at every batch-order seed
    on_policy_pairs = dpo.select_pairs(data["train"], "on_policy")
    on_policy = []
    for s in (dc.seed, *dc.seeds) if on_policy_pairs else ():
        on_policy.append(rerun(s, on_policy_pairs))
        d = on_policy[-1]["gold_gain_paired95"]
        print(f"[dpo] on-policy pairs only ({len(on_policy_pairs)}), batch-order seed {s}: gold - SFT "
              f"{d[0]:+.3f} ({d[1]:+.3f} to {d[2]:+.3f}), KL {on_policy[-1]['kl']:.2f}", flush=True)
    gains = [paired[0]] + [r["gold_gain_paired95"][0] for r in repeats]
    out = {
        "benchmark": "dpo", "preset": p.name, "device": device.type, "threads": args.threads,
        "n_train_pairs": len(data["train"]), "n_val_pairs": len(val_enc), "n_eval_prompts": len(items),
        "steps": dc.max_steps, "batch_size": dc.batch_size, "lr": dc.lr, "main_beta": dc.beta,
        "implicit_accuracy": main_run["implicit_accuracy"],
        "rm_accuracy": round(rm_info["val_correct"] / rm_info["n_val"], 4), "rm_n_val": rm_info["n_val"],
        "dpo": [runs[b] for b in dc.betas],
        "sft": summary(sft_e), "ppo": {**summary(ppo_e), "seconds": ppo_main.info["seconds"]},
        "ppo_beta0": {**summary(ppo_beta0.info["final_eval"]), "seconds": ppo_beta0.info["seconds"]},
        "memory_bytes": {"dpo": mem_dpo, "ppo": mem_ppo}, "memory_ratio": round(ratio, 4),
        "hyperparameters": {"dpo": len(dpo.HYPERPARAMETERS), "ppo": len(ppo.HYPERPARAMETERS)},
        "train_seconds": round(total_seconds, 2), "gold_gain_over_sft": round(gain, 4),
        "gold_gain_outside_intervals": bool(separated),
        "gold_gain_paired95": [round(x, 4) for x in paired],
        "gold_vs_ppo": round(main_run["gold"] - ppo_e["gold"], 4),
        "repeats_of_main": repeats,
        "gold_gain_over_sft_range_main_and_repeats": [round(min(gains), 4), round(max(gains), 4)],
        "repeats_above_sft": sum(r["gold_gain_paired95"][1] > 0 for r in repeats),
        "on_policy_pairs": {"n_train": len(on_policy_pairs), "runs": on_policy,
                            "above_sft": sum(r["gold_gain_paired95"][1] > 0 for r in on_policy)},
        "goals": GOALS,
        "goals_met": {"gold_over_sft": bool(paired[1] > 0),
                      "gold_over_sft_on_policy_pairs": bool(on_policy) and all(
                          r["gold_gain_paired95"][1] > 0 for r in on_policy),
                      "max_memory_ratio": ratio <= GOALS["max_memory_ratio"],
                      "train_seconds": total_seconds <= GOALS["train_seconds"]},
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
