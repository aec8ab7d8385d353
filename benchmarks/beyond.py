"""Benchmark of notebook 08: what came after RLHF, each method against SFT and its peer.

    python benchmarks/beyond.py                 # $LLMLAB_PRESET, else cpu (gpu with CUDA)
    python benchmarks/beyond.py --preset smoke  # seconds

Runs every method of notebook 08 from the cached SFT model and reward model (built first if
missing), through the recipes themselves rather than the artifact cache, so every wall time is
measured in this run, and beside each its peer, also run here:

- best-of-N (inference) and rejection-sampling fine-tuning (``beyond.build_rft``);
- GRPO (``beyond.build_grpo``) against PPO's main run (``ppo.build_ppo``): gold reward, KL, wall
  time of the iterations and state memory (``dpo.state_memory``: three models against four);
- iterative DPO (``beyond.build_iterative_dpo``) against single-round DPO (``dpo.build_dpo``,
  notebook 07's main run) with the same number of steps;
- DPO on the AI labeler's labels against DPO on notebook 05's labels of the same pairs
  (``beyond.build_rlaif``), with the labeler's agreement with the gold judge per principle;
- the supervised half of Constitutional AI (``beyond.build_cai_sl``): the SFT model critiques and
  revises its own replies and is fine-tuned on the revisions, against SFT.

Every policy is measured by ``ppo.evaluate_policy`` on notebook 06's held-out prompts. Goals
(issue 14): each method raises the gold reward over SFT -- met when the paired 95% interval of
its gold difference to SFT (prompt by prompt, the same prompts) lies above 0; best-of-N, which keeps
no per-prompt record, when its interval lies above SFT's -- and GRPO holds less state memory than PPO.

The last line of stdout is one JSON object with every figure and the goals beside them.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from llmlab import beyond, dpo, ppo, prefs, stages  # noqa: E402
from llmlab.config import beyond_config, dpo_config, get_preset, ppo_config  # noqa: E402
from llmlab.device import pick_device  # noqa: E402
from llmlab.train import load_checkpoint  # noqa: E402



def summary(e: dict, sft: dict | None = None) -> dict:
    """Gold reward and KL of one ``ppo.evaluate_policy`` (or ``ppo.best_of_n``) result; with
    ``sft`` (SFT's evaluation on the same prompts) and replies on both, also the gold difference
    to SFT prompt by prompt with its 95% interval (``beyond.paired_difference``)."""
    out = {"gold": round(e["gold"], 4), "gold_ci95": [round(x, 4) for x in e["gold_ci"]],
           "proxy": round(e["proxy"], 4), "kl": round(e["kl"], 4)}
    if "kl_ci" in e:
        out["kl_ci95"] = [round(x, 4) for x in e["kl_ci"]]
    if sft is not None and "replies" in e and "replies" in sft:
        m, lo, hi, _ = beyond.paired_difference(e, sft)
        out["gold_minus_sft_paired"] = [round(m, 4), round(lo, 4), round(hi, 4)]
    return out


def finite(x):
    """``x`` with every NaN (a rate over zero pairs) as None, so the line is strict JSON."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the 2-core target)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    p = get_preset(args.preset)
    bc, dc, pc = beyond_config(p), dpo_config(p), ppo_config(p)
    device = pick_device()
    world = stages.get_world(p)
    tok = stages.get_tokenizer(p)
    data = stages.load_prefs(p)
    sft_model = stages.load_sft_model(p, device)
    rm = stages.load_reward_model(p, device)
    values = prefs.relation_values(world)
    items = ppo.prompt_sets(world, p.sft, pc)["eval"]
    template = p.sft.template
    train_cfg = dpo.dpo_train_config(dc, p.train)
    print(f"[beyond] preset {p.name}: {len(items)} held-out prompts", flush=True)

    def log(name, e, secs):
        print(f"[beyond] {name}: gold {e['gold']:+.3f}, KL {e['kl']:.2f}, {secs:.1f} s", flush=True)

    res, mem = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sft_e = beyond.evaluate(sft_model, sft_model, rm, tok, items, values, template, pc)
        res["sft"] = {**summary(sft_e), "seconds": 0.0, "knobs": 0}
        mem["sft"] = dpo.state_memory([], [sft_model], train_cfg)

        t0 = time.perf_counter()
        bon = ppo.best_of_n(sft_model, rm, tok, items, values, ns=bc.best_of_n, template=template,
                            max_new_tokens=pc.max_new_tokens, seed=pc.seed + 1, no_stop_penalty=pc.no_stop_penalty)
        secs = time.perf_counter() - t0
        res["best_of_n"] = {**summary(bon[-1], sft_e), "n": bon[-1]["n"], "seconds": round(secs, 2),
                            "knobs": len(beyond.BEST_OF_N_HYPERPARAMETERS),
                            "curve": [{"n": r["n"], **summary(r, sft_e)} for r in bon]}
        mem["best_of_n"] = dpo.state_memory([], [sft_model, rm], train_cfg)
        log(f"best-of-{bon[-1]['n']}", bon[-1], secs)

        (tmp / "rft").mkdir()
        rft = beyond.build_rft(tmp / "rft", bc, pc, p.sft, p.train, world, tok, sft_model, rm, device, False)
        res["rft"] = {**summary(rft["final_eval"], sft_e), "seconds": rft["seconds"], "n_kept": rft["n_kept"],
                      "knobs": len(beyond.RFT_HYPERPARAMETERS)}
        mem["rft"] = dpo.state_memory([sft_model], [rm], train_cfg)
        log("rejection-sampling fine-tuning", rft["final_eval"], rft["seconds"])

        (tmp / "ppo").mkdir()
        pr = ppo.build_ppo(tmp / "ppo", "main", pc, p.sft, world, tok, sft_model, rm, device, False)
        ppo_secs = sum(h["seconds"] for h in pr["history"])
        ppo_knobs = list(ppo.HYPERPARAMETERS)
        # measured again with the replies kept (the run's own evaluation keeps only summaries): the
        # same prompts, seed and code, so the same numbers, and a paired difference to SFT
        ppo_policy = load_checkpoint(tmp / "ppo" / "model.pt", device=device)[0].eval()
        ppo_e = beyond.evaluate(ppo_policy, sft_model, rm, tok, items, values, template, pc)
        res["ppo"] = {**summary(ppo_e, sft_e), "seconds": round(ppo_secs, 2), "knobs": len(ppo_knobs)}
        mem["ppo"] = dpo.state_memory([sft_model, ppo.value_model_from(rm)], [sft_model, rm], train_cfg)
        log("PPO", pr["final_eval"], ppo_secs)

        (tmp / "grpo").mkdir()
        gr = beyond.build_grpo(tmp / "grpo", bc, pc, p.sft, world, tok, sft_model, rm, device, False)
        res["grpo"] = {**summary(gr["final_eval"], sft_e), "seconds": gr["train_seconds"],
                       "knobs": len(beyond.GRPO_HYPERPARAMETERS)}
        mem["grpo"] = dpo.state_memory([sft_model], [sft_model, rm], train_cfg)
        log("GRPO", gr["final_eval"], gr["train_seconds"])

        (tmp / "dpo").mkdir()
        dr = dpo.build_dpo(tmp / "dpo", "main", dc, p.train, p.model, template, tok, data, sft_model,
                           device, progress=False)
        dpo_policy = load_checkpoint(tmp / "dpo" / "model.pt", device=device)[0].eval()
        dpo_e = beyond.evaluate(dpo_policy, sft_model, rm, tok, items, values, template, pc)
        res["dpo"] = {**summary(dpo_e, sft_e), "seconds": dr["train_seconds"], "knobs": len(dpo.HYPERPARAMETERS)}
        mem["dpo"] = dpo.state_memory([sft_model], [sft_model], train_cfg)
        log("DPO (offline)", dpo_e, dr["train_seconds"])

        (tmp / "idpo").mkdir()
        it = beyond.build_iterative_dpo(tmp / "idpo", bc, dc, pc, p.sft, p.train, world, tok, sft_model, rm,
                                        device, False)
        res["iterative_dpo"] = {**summary(it["final_eval"], sft_e), "seconds": it["train_seconds"],
                                "knobs": len(beyond.ITERATIVE_DPO_HYPERPARAMETERS),
                                "rounds": [{"round": r["round"], "n_pairs": r["n_pairs"],
                                            "label_agreement": r["agreement"], **summary(r["eval"], sft_e)}
                                           for r in it["rounds"]]}
        mem["iterative_dpo"] = dpo.state_memory([sft_model], [sft_model, rm], train_cfg)
        log("iterative DPO", it["final_eval"], it["train_seconds"])

        (tmp / "rlaif").mkdir()
        rl = beyond.build_rlaif(tmp / "rlaif", bc, dc, pc, p.sft, p.train, world, tok, data, sft_model, rm,
                                device, False)
        ai, ann = rl["runs"]["ai"], rl["runs"]["annotator"]
        res["dpo_ai_labels"] = {**summary(ai["final_eval"], sft_e), "seconds": round(rl["label_seconds"] + ai["train_seconds"], 2),
                                "knobs": len(beyond.RLAIF_HYPERPARAMETERS)}
        res["dpo_annotator_labels"] = {**summary(ann["final_eval"], sft_e), "seconds": ann["train_seconds"],
                                       "knobs": len(dpo.HYPERPARAMETERS)}
        mem["dpo_ai_labels"] = mem["dpo_annotator_labels"] = mem["dpo"]
        log("DPO on AI labels", ai["final_eval"], ai["train_seconds"])
        log("DPO on annotator labels", ann["final_eval"], ann["train_seconds"])
        agreement = {k: {"ai": v["ai"], "annotator": v["annotator"], "mean_p_a": round(v["p_a"], 4)}
                     for k, v in beyond.agreement_by_principle(rl["labels"]).items()}

        (tmp / "cai_sl").mkdir()
        cs = beyond.build_cai_sl(tmp / "cai_sl", bc, pc, p.sft, p.train, world, tok, sft_model, rm, device, False)
        fit = [r for r in cs["records"] if r["fits"]]
        res["cai_sl"] = {**summary(cs["final_eval"], sft_e), "seconds": cs["seconds"],
                         "knobs": len(beyond.CAI_SL_HYPERPARAMETERS), "n_prompts": cs["n_prompts"],
                         "n_fit": cs["n_fit"], "n_examples": cs["n_examples"],
                         "revision_minus_reply_gold": (round(sum(r["gold_revision"] - r["gold_reply"] for r in fit)
                                                             / len(fit), 4) if fit else None)}
        mem["cai_sl"] = dpo.state_memory([sft_model], [], train_cfg)
        log("SFT on its own revisions (CAI)", cs["final_eval"], cs["seconds"])

    sft_hi = res["sft"]["gold_ci95"][1]
    for name, r in res.items():
        r["models"], r["trained"] = mem[name]["models"], mem[name]["trained"]
        r["state_memory_bytes"] = mem[name]["total"]
        if name != "sft":
            r["gold_over_sft"] = round(r["gold"] - res["sft"]["gold"], 4)
            r["gold_interval_above_sft"] = r["gold_ci95"][0] > sft_hi
    out = {"benchmark": "beyond", "preset": p.name, "device": device.type, "threads": args.threads,
           "n_eval_prompts": len(items), "methods": res, "ai_label_agreement": agreement,
           "grpo_vs_ppo": {"gold": round(res["grpo"]["gold"] - res["ppo"]["gold"], 4),
                           "seconds_ratio": round(res["grpo"]["seconds"] / max(res["ppo"]["seconds"], 1e-9), 4),
                           "memory_ratio": round(mem["grpo"]["total"] / mem["ppo"]["total"], 4)},
           "iterative_vs_offline_dpo": {"gold": round(res["iterative_dpo"]["gold"] - res["dpo"]["gold"], 4),
                                        "kl": round(res["iterative_dpo"]["kl"] - res["dpo"]["kl"], 4)},
           "ai_vs_annotator_labels": {"gold": round(res["dpo_ai_labels"]["gold"] - res["dpo_annotator_labels"]["gold"], 4)},
           "goals": {"each_method_gold_over_sft": "paired 95% interval above 0", "grpo_memory_below_ppo": True},
           # met: the paired interval of the gold difference to SFT lies above 0 (best-of-N, with no
           # per-prompt record, compares its unpaired interval with SFT's)
           "goals_met": {"each_method_gold_over_sft": {
               k: (r["gold_minus_sft_paired"][1] > 0 if "gold_minus_sft_paired" in r else r["gold_interval_above_sft"])
               for k, r in res.items() if k != "sft"},
                         "grpo_memory_below_ppo": mem["grpo"]["total"] < mem["ppo"]["total"]}}
    print(json.dumps(finite(out), allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
