"""Benchmark of notebook 06: PPO against the reward model, scored by the gold judge.

    python benchmarks/ppo.py                 # $LLMLAB_PRESET, else cpu (gpu with CUDA)
    python benchmarks/ppo.py --preset smoke  # seconds

Builds (or reads from the cache, ``$LLMLAB_CACHE``) the preset's PPO runs of notebook 06 --
``main`` (the tuned run) and ``beta0`` (no KL penalty) -- through ``llmlab.stages.get_ppo``,
which builds the SFT model, preference pairs and reward model first if they are missing. It
reports the held-out gold and proxy reward before (SFT) and after PPO, the final KL to the
reference, the behaviour shares before and after (with n), the runs' wall time, the rollout
throughput with and without the KV cache, and the beta = 0 run's gold-reward drop from its
peak, and the main run repeated with two other training seeds (each paired to SFT on the same
prompts). Beside the goals: the main configuration at more training seeds (``--more-seeds``, built
in scratch folders; the mean paired gain over all seeds with a t interval across seeds), and the
peer that motivates notebook 05's training mix: PPO at three training seeds against a reward
model trained with a fifth of its pairs on-policy (``PrefConfig.mix``) instead of half
(``PrefConfig.train_mix``), everything else equal (``--no-peer`` skips it). The KL is reported
three ways: over the last fifth of the main run's rollouts (what the adaptive controller steers),
on as many training prompts as held-out ones, and on the held-out prompts (the goal's), each by
kind of prompt. Notebook 06's fast-controller run (variant ``fast_kl``: ``PPOConfig.fast_beta`` and
``fast_horizon``) is reported the same way at six training seeds (``--no-fast`` skips the five
built in scratch folders), as is ``--kl-sweep``: the main configuration with other KL settings at
six training seeds each (a gain and three KLs per run; about 30 minutes at the cpu preset). Goals at the cpu preset: gold reward up by a clear margin over SFT (the paired 95% interval
of the per-prompt difference lies above 0: both policies answer the same held-out prompts, so the
prompt-to-prompt spread that widens each policy's own interval cancels; whether the two unpaired
intervals are apart is reported beside it) at a KL below the target, "I don't know" on unknowns and refusals on declines both
up (the paired 95% interval of each share's change on the same prompts above 0,
``ppo.paired_share_difference``; whether the shares' own intervals lie apart is reported beside it), the beta = 0 run's final gold reward below its peak
(the peak evaluation picked on a random half of the held-out prompts, the final one compared with
it reply by reply on the other half: the paired 95% interval of the change below 0; the drop on all
prompts with the final value's half-width, the earlier unpaired reading, is reported beside it),
the PPO runs (main, beta = 0 and the two repeats; with ``--all`` the stability runs too) in at
most 6 minutes on 2 cores, counted with the one held-out evaluation of the SFT model that every
run starts from (``stages.get_sft_eval``, measured once).

The last line of stdout is one JSON object with every figure and the goals beside them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from llmlab import beyond, ppo, prefs, reward, stages  # noqa: E402
from llmlab.config import get_preset, ppo_config, pref_config, reward_config  # noqa: E402
from llmlab.device import pick_device  # noqa: E402
from llmlab.train import load_checkpoint  # noqa: E402

GOALS = {"gold_gain_paired_above_0": True, "kl_below_target": True, "idk_up": True,
         "refusal_up": True, "beta0_drop_beyond_interval": True, "seconds": 360.0}


def r4(x):
    return round(float(x), 4)


def shares(e: dict) -> dict:
    return {k: {"rate": r4(v["rate"]) if v["n"] else None, "ci95": [r4(x) for x in v["ci"]] if v["n"] else None,
                "n": v["n"]} for k, v in e["shares"].items()}


# two-sided 97.5% quantiles of Student's t for the interval of a mean over a few seeds
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def seed_mean(gains: list[float]) -> dict:
    """Mean of per-seed paired gains with a t interval across seeds (the seed is the unit)."""
    n = len(gains)
    m = statistics.fmean(gains)
    if n < 2:
        return {"mean": r4(m), "ci95": None, "n_seeds": n, "above_0": sum(g > 0 for g in gains)}
    h = T975.get(n - 1, 1.96) * statistics.stdev(gains) / math.sqrt(n)
    return {"mean": r4(m), "ci95": [r4(m - h), r4(m + h)], "n_seeds": n, "above_0": sum(g > 0 for g in gains)}


def last_fifth_kl(history: list[dict]) -> float:
    """Mean KL of a run's rollouts over its last fifth of iterations (what the controller steers)."""
    return statistics.fmean(h["kl"] for h in history[-max(1, len(history) // 5):])


def pair_policy(pol, kl_rollouts, c, p, tok, sft_model, rm, sets, values, sft_eval) -> tuple:
    """One trained policy, paired to SFT on the held-out prompts: ``(gain, low, high, n distinct
    prompts, held-out KL, training-prompt KL, last-fifth rollout KL, {share: paired change})``
    (the change of each behaviour share, ``ppo.paired_share_difference``)."""
    e = beyond.evaluate(pol, sft_model, rm, tok, sets["eval"], values, p.sft.template, c)
    kl_train = beyond.evaluate(pol, sft_model, rm, tok, sets["train"][:c.n_eval], values, p.sft.template, c,
                               keep_replies=False)["kl"]
    change = {s: ppo.paired_share_difference(e, sft_eval, s) for s in ("idk", "refusal")}
    return beyond.paired_difference(e, sft_eval) + (e["kl"], kl_train, kl_rollouts, change)


def train_and_pair(c, seeds, p, world, tok, sft_model, rm, sets, values, sft_eval, device) -> dict:
    """PPO's main configuration at each training seed in a scratch folder, paired to SFT."""
    out = {}
    for k in seeds:
        cv = dataclasses.replace(c, train_seed=k, eval_every=c.iterations, track_samples=0)
        with tempfile.TemporaryDirectory() as d:
            info = ppo.build_ppo(Path(d), "main", cv, p.sft, world, tok, sft_model, rm, device, progress=False)
            pol = load_checkpoint(Path(d) / "model.pt", device=device)[0].eval()
        out[k] = pair_policy(pol, last_fifth_kl(info["history"]), c, p, tok, sft_model, rm, sets, values, sft_eval)
        print(f"[ppo]   train_seed {k}: paired {out[k][0]:+.3f} ({out[k][1]:+.3f} to {out[k][2]:+.3f}), "
              f"KL held-out {out[k][4]:.2f}, training prompts {out[k][5]:.2f}, last fifth of the rollouts "
              f"{out[k][6]:.2f}", flush=True)
    return out


def kl_runs(r: dict, target: float) -> dict:
    """Per-seed gains and KLs of :func:`train_and_pair` runs, their mean gain over seeds, and how
    many seeds kept each KL below the target."""
    return {"by_train_seed": {k: {"gold_gain_paired95": [r4(x) for x in v[:3]], "kl_heldout": r4(v[4]),
                                  "kl_train_prompts": r4(v[5]), "kl_rollouts_last_fifth": r4(v[6]),
                                  **{f"{s}_change_paired95": [r4(x) for x in ch[:3]] for s, ch in v[7].items()}}
                              for k, v in r.items()},
            "seeds_share_change_above_0": {s: sum(v[7][s][1] > 0 for v in r.values()) for s in ("idk", "refusal")},
            "gold_gain_over_seeds": seed_mean([v[0] for v in r.values()]),
            "seeds_gain_interval_above_0": sum(v[1] > 0 for v in r.values()),
            "seeds_below_target": {name: sum(v[i] < target for v in r.values())
                                   for name, i in (("heldout", 4), ("train_prompts", 5), ("rollouts_last_fifth", 6))},
            "mean_kl_heldout": r4(statistics.fmean(v[4] for v in r.values())), "n_seeds": len(r)}


def fifth_on_policy_rm(p, world, tok, sft_model, device):
    """The peer reward model: notebook 05's recipe with ``train_mix`` set to the held-out mix
    (a fifth of the training pairs on-policy), everything else equal."""
    pc, rc = pref_config(p), reward_config(p)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        prefs.build_prefs(d, dataclasses.replace(pc, train_mix=pc.mix), p.sft, world, tok, sft_model)
        data = {n: [json.loads(x) for x in (d / f"{n}.jsonl").read_text(encoding="utf-8").splitlines()]
                for n in ("train", "val")}
        info = reward.build_reward_model(d, "main", rc.init, rc.max_steps, rc, p.train, p.model, p.sft.template,
                                         tok, data, sft_model, device, progress=False)
        n_on = sum(q["category"] == "on_policy" for q in data["train"])
        return reward.load_reward_model(d / "model.pt", device=device).eval(), info, n_on, len(data["train"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the 2-core target)")
    ap.add_argument("--more-seeds", type=int, nargs="*", default=[3, 4, 5],
                    help="further training seeds of the main configuration (scratch folders)")
    ap.add_argument("--no-peer", action="store_true", help="skip PPO against the fifth-on-policy reward model")
    ap.add_argument("--no-fast", action="store_true", help="skip the fast controller's five extra training seeds")
    ap.add_argument("--kl-sweep", action="store_true", help="also the main configuration with other KL "
                    "settings (the adaptive controller from beta 0.2 and 0.5 at the main run's horizon, the "
                    "fast controller's settings, a fixed beta 0.4) and the main one, 6 training seeds each")
    ap.add_argument("--all", action="store_true", help="also build the three stability runs, "
                    "so the time covers every PPO run notebook 06 makes")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    p = get_preset(args.preset)
    c = ppo_config(p)
    device = pick_device()
    t0 = time.perf_counter()
    sft_eval = stages.get_sft_eval(p)     # every run's iteration 0, measured once
    runs = {v: stages.get_ppo(p, v, progress=False) for v in
            ("main", "beta0", "seed_1", "seed_2") + (("nowhiten", "noclip_value", "lr10") if args.all else ())}
    bench_seconds = time.perf_counter() - t0
    main_info, b0 = runs["main"].info, runs["beta0"].info
    before, after = main_info["initial_eval"], main_info["final_eval"]
    print(f"[ppo] gold {before['gold']:.3f} -> {after['gold']:.3f}, proxy {before['proxy']:.3f} -> "
          f"{after['proxy']:.3f}, KL {after['kl']:.3f} nats ({main_info['seconds']:.1f} s)", flush=True)
    evals0 = b0["evals"]
    peak = max(evals0, key=lambda e: e["gold"])
    final0 = evals0[-1]
    drop = peak["gold"] - final0["gold"]
    half = (final0["gold_ci"][1] - final0["gold_ci"][0]) / 2
    world = stages.get_world(p)
    sets = ppo.prompt_sets(world, p.sft, c)
    dp = ppo.drop_from_peak(evals0, sets["eval"], c.eval_samples, c.seed)
    print(f"[ppo] beta=0, peak chosen on half of the prompts (iteration {dp['peak_iteration']}), change to the end on "
          f"the other {dp['n_prompts']}: {dp['change']:+.3f} ({dp['ci'][0]:+.3f} to {dp['ci'][1]:+.3f}, paired)", flush=True)
    print(f"[ppo] beta=0: gold peaks at {peak['gold']:.3f} (iteration {peak['iteration']}), ends at "
          f"{final0['gold']:.3f} (drop {drop:.3f}, interval half-width {half:.3f}); proxy "
          f"{evals0[0]['proxy']:.3f} -> {final0['proxy']:.3f}, KL {final0['kl']:.2f}", flush=True)
    tok = stages.get_tokenizer(p)
    sft_model = stages.load_sft_model(p, device)
    # SFT and the PPO policy as the runs stored them (replies kept): the gold difference prompt by prompt
    rm = stages.load_reward_model(p, device)
    policy = load_checkpoint(runs["main"].file("model.pt"), device=device)[0].eval()
    values = prefs.relation_values(world)
    pe = {"sft": sft_eval.info, "ppo": after}
    paired = beyond.paired_difference(pe["ppo"], pe["sft"])
    print(f"[ppo] gold PPO - SFT, paired by prompt: {paired[0]:+.3f} ({paired[1]:+.3f} to {paired[2]:+.3f}, "
          f"{paired[3]} prompts x {c.eval_samples} replies)", flush=True)
    # the main configuration repeated with other training seeds, on the same prompts and samples
    repeats = {0: paired}
    for k in (1, 2):
        repeats[k] = beyond.paired_difference(runs[f"seed_{k}"].info["final_eval"], pe["sft"])
        print(f"[ppo] train_seed {k}: gold PPO - SFT, paired {repeats[k][0]:+.3f} ({repeats[k][1]:+.3f} to "
              f"{repeats[k][2]:+.3f})", flush=True)
    more = train_and_pair(c, args.more_seeds, p, world, tok, sft_model, rm, sets, values, pe["sft"], device)
    over_seeds = seed_mean([v[0] for v in repeats.values()] + [v[0] for v in more.values()])
    print(f"[ppo] over {over_seeds['n_seeds']} training seeds: mean paired gain {over_seeds['mean']:+.3f} "
          f"(t interval {over_seeds['ci95']}), above 0 in {over_seeds['above_0']}", flush=True)
    peer = None
    if not args.no_peer:
        rm5, info5, n_on, n_tr = fifth_on_policy_rm(p, world, tok, sft_model.cpu(), device)
        sft_model.to(device)
        print(f"[ppo] peer RM: {n_on} of {n_tr} training pairs on-policy, held-out accuracy "
              f"{info5['val_accuracy']:.3f}", flush=True)
        runs5 = train_and_pair(c, (0, 1, 2), p, world, tok, sft_model, rm5, sets, values, pe["sft"], device)
        peer = {"train_pairs": n_tr, "on_policy_train_pairs": n_on, "rm_val_accuracy": r4(info5["val_accuracy"]),
                "gold_gain_paired95_by_train_seed": {k: [r4(x) for x in v[:3]] for k, v in runs5.items()},
                "kl_by_train_seed": {k: r4(v[4]) for k, v in runs5.items()},
                "over_seeds": seed_mean([v[0] for v in runs5.values()])}
        print(f"[ppo] peer over 3 seeds: {peer['over_seeds']}", flush=True)
    # where the KL is: the main policy on as many training prompts as held-out ones, by kind
    kl_train_ev = beyond.evaluate(policy, sft_model, rm, tok, sets["train"][:c.n_eval], values, p.sft.template, c)
    kl_rollouts = last_fifth_kl(main_info["history"])
    by_kind = {name: {k: [r4(x) for x in v[:3]] + [v[3]] for k, v in sorted(ppo.kl_by_kind(e).items())}
               for name, e in (("heldout", pe["ppo"]), ("train", kl_train_ev))}
    print(f"[ppo] KL: last fifth of the rollouts {kl_rollouts:.2f}, training prompts {kl_train_ev['kl']:.2f}, "
          f"held-out {pe['ppo']['kl']:.2f} (target {c.target_kl}); by kind {by_kind}", flush=True)
    # notebook 06's fast controller (variant fast_kl): its cached run is seed 0, five more in scratch
    fast_art = stages.get_ppo(p, "fast_kl", progress=False)
    cf = ppo.variant_config(c, "fast_kl")
    fast_pol = load_checkpoint(fast_art.file("model.pt"), device=device)[0].eval()
    fast_runs = {0: pair_policy(fast_pol, last_fifth_kl(fast_art.info["history"]), c, p, tok, sft_model, rm,
                                sets, values, pe["sft"])}
    if not args.no_fast:
        fast_runs.update(train_and_pair(cf, (1, 2, 3, 4, 5), p, world, tok, sft_model, rm, sets, values,
                                        pe["sft"], device))
    fast = {"beta": cf.beta, "horizon": cf.horizon, "final_beta": r4(fast_art.info["history"][-1]["beta"]),
            **kl_runs(fast_runs, c.target_kl)}
    print(f"[ppo] fast controller (beta from {cf.beta}, horizon {cf.horizon}): {fast}", flush=True)
    sweep = None
    if args.kl_sweep:
        sweep = {}
        h = c.horizon                         # the main run's horizon, from three starting betas
        for name, kw in ((f"main (beta from {c.beta}, horizon {h})", {}),
                         *((f"beta from {b}, horizon {h}", {"beta": b}) for b in (0.2, 0.5)),
                         (f"beta from {cf.beta}, horizon {cf.horizon} (fast_kl)", {"beta": cf.beta, "horizon": cf.horizon}),
                         ("fixed beta 0.4", {"kl": "fixed", "beta": 0.4})):
            print(f"[ppo] KL sweep: {name}", flush=True)
            r = train_and_pair(dataclasses.replace(c, **kw), range(6), p, world, tok, sft_model, rm, sets,
                               values, pe["sft"], device)
            sweep[name] = kl_runs(r, c.target_kl)
    items = sets["train"][:c.batch_size]
    speed = {uc: ppo.rollout_speed(sft_model, tok, items, p.sft.template, c.max_new_tokens, uc)
             for uc in (True, False)}
    print(f"[ppo] rollout: {speed[True]['tokens_per_sec']:.0f} tokens/s with the KV cache, "
          f"{speed[False]['tokens_per_sec']:.0f} without", flush=True)
    # the runs' wall time (each without its first evaluation) plus the one SFT evaluation they share
    seconds = sum(a.info["seconds"] for a in runs.values()) + sft_eval.meta.get("build_seconds", 0.0)
    sb, sa = before["shares"], after["shares"]
    share_change = {s: ppo.paired_share_difference(pe["ppo"], pe["sft"], s) for s in ppo.SHARES}
    met = {
        "gold_gain_paired_above_0": paired[1] > 0,
        "kl_below_target": after["kl"] < c.target_kl,
        # up = the paired 95% interval of the change lies above 0: both policies answer the same
        # prompts, so the change is measured prompt by prompt, as the gold gain is (whether the
        # two shares' own intervals lie apart, a stricter test, is reported beside it)
        "idk_up": share_change["idk"][1] > 0,
        "refusal_up": share_change["refusal"][1] > 0,
        # the peak picked on half of the held-out prompts, the drop measured on the other half,
        # reply by reply (ppo.drop_from_peak): the paired interval of the change lies below 0
        "beta0_drop_beyond_interval": dp["ci"][1] < 0,
        "seconds": seconds <= GOALS["seconds"],
    }
    out = {
        "benchmark": "ppo", "preset": p.name, "device": device.type, "threads": args.threads,
        "iterations": c.iterations, "batch_size": c.batch_size, "kl_controller": c.kl,
        "target_kl": c.target_kl, "final_beta": r4(main_info["history"][-1]["beta"]),
        "n_eval_prompts": after["n_prompts"], "eval_samples_per_prompt": after["n_samples"],
        "gold_before": r4(before["gold"]), "gold_after": r4(after["gold"]),
        "gold_before_ci95": [r4(x) for x in before["gold_ci"]],
        "gold_after_ci95": [r4(x) for x in after["gold_ci"]],
        "gold_gain_paired95": [r4(x) for x in paired[:3]],
        "gold_gain_intervals_apart": after["gold_ci"][0] > before["gold_ci"][1],
        "n_distinct_eval_prompts": paired[3],
        "gold_gain_paired95_by_train_seed": {k: [r4(x) for x in v[:3]] for k, v in repeats.items()},
        "more_seeds": {k: {"gold_gain_paired95": [r4(x) for x in v[:3]], "kl": r4(v[4]), "kl_train_prompts": r4(v[5]),
                           "kl_rollouts_last_fifth": r4(v[6])}
                       for k, v in more.items()},
        "gold_gain_over_train_seeds": over_seeds,
        "peer_rm_fifth_on_policy": peer,
        "proxy_before": r4(before["proxy"]), "proxy_after": r4(after["proxy"]),
        "kl_final": r4(after["kl"]), "kl_train_prompts": r4(kl_train_ev["kl"]),
        "kl_rollouts_last_fifth": r4(kl_rollouts), "kl_by_kind_95": by_kind, "fast_controller": fast, "kl_sweep": sweep, "shares_before": shares(before), "shares_after": shares(after),
        "share_change_paired95": {s: {"change": r4(v[0]), "ci95": [r4(v[1]), r4(v[2])], "n_prompts": v[3],
                                      "intervals_apart": sa[s]["ci"][0] > sb[s]["ci"][1] or sa[s]["ci"][1] < sb[s]["ci"][0]}
                                  for s, v in share_change.items()},
        "length_before": r4(before["length"]), "length_after": r4(after["length"]),
        "beta0_iterations": b0["config"]["iterations"], "beta0_gold_peak": r4(peak["gold"]),
        "beta0_gold_peak_iteration": peak["iteration"], "beta0_gold_final": r4(final0["gold"]),
        "beta0_gold_drop": r4(drop), "beta0_final_ci_half_width": r4(half),
        "beta0_drop_heldout_half": {"peak_iteration": dp["peak_iteration"], "n_prompts": dp["n_prompts"],
                                    "peak_gold": r4(dp["peak_gold_b"]), "final_gold": r4(dp["final_gold_b"]),
                                    "change_paired95": [r4(dp["change"])] + [r4(x) for x in dp["ci"]]},
        "beta0_proxy_final": r4(final0["proxy"]), "beta0_kl_final": r4(final0["kl"]),
        "rollout_tokens_per_sec_kv_cache": round(speed[True]["tokens_per_sec"], 1),
        "rollout_tokens_per_sec_no_cache": round(speed[False]["tokens_per_sec"], 1),
        "kv_cache_speedup": round(speed[True]["tokens_per_sec"] / speed[False]["tokens_per_sec"], 2),
        "run_seconds": {"sft_eval": sft_eval.meta.get("build_seconds"), **{v: a.info["seconds"] for v, a in runs.items()}},
        "seconds": round(seconds, 1),
        "benchmark_wall_seconds": round(bench_seconds, 1),
        "goals": GOALS, "goals_met": met,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
