"""Notebook 09's helpers (llmlab.journey): the closing figure from the stages' logged histories,
four models measured alike, the pipeline at a glance and at 7B. The end-to-end test builds the
smoke preset's artifacts and checks the figure and the table against what the stages stored."""
import math

import matplotlib
import pytest

matplotlib.use("Agg")

from llmlab import journey, scaling  # noqa: E402


def fake_histories():
    base = {"steps": 4, "tokens": 400, "train_losses": [6.0, 5.0, 4.5, 4.2],
            "val_losses": [[2, 5.1], [4, 4.3]], "wall_seconds": 12.0}
    sft = {"train_losses": [3.0, 2.0, 1.5], "val_losses": [[3, 1.7]], "pretrain_val_before": 4.3,
           "pretrain_val_after": 4.6, "n_train": 90, "sft_seconds": 3.0}
    reward = {"curve": [[0, 0.5, 0.0], [10, 0.7, 0.2]], "n_train": 120, "steps": 10, "train_seconds": 2.0}
    ppo_info = {"history": [{"iteration": i, "proxy": 0.1 * i, "gold": 0.05 * i, "kl": 0.3 * i} for i in (1, 2, 3)],
                "config": {"batch_size": 8, "n_prompts": 64}, "seconds": 5.0}
    dpo_info = {"curve": [{"step": 0, "margin": 0.0, "accuracy": 0.0}, {"step": 5, "margin": 0.4, "accuracy": 0.6}],
                "n_train": 100, "steps": 5, "train_seconds": 1.5}
    return base, sft, reward, ppo_info, dpo_info


def test_dynamics_reads_every_history_point_and_places_pretraining_on_tokens():
    d = journey.dynamics(*fake_histories())
    assert d["pretrain"]["train_tokens"] == [100.0, 200.0, 300.0, 400.0]
    assert d["pretrain"]["val_tokens"] == [200.0, 400.0] and d["pretrain"]["val_loss"] == [5.1, 4.3]
    assert d["sft"]["train_step"] == [1, 2, 3] and d["sft"]["forgetting"] == (4.3, 4.6)
    assert d["ppo"]["kl"] == pytest.approx([0.3, 0.6, 0.9]) and d["dpo"]["margin"] == [0.0, 0.4]
    assert d["reward"]["accuracy"] == [0.5, 0.7]


def test_plot_draws_each_series_from_the_histories():
    d = journey.dynamics(*fake_histories())
    fig = journey.plot_dynamics(d, vocab_size=256)
    lines = {line.get_label(): list(line.get_ydata()) for ax in fig.axes for line in ax.get_lines()}
    assert lines["train"] == [6.0, 5.0, 4.5, 4.2] and lines["held out"] == [5.1, 4.3]
    # proxy and gold are on different scales: each drawn as its change since the first rollout
    assert lines["proxy (reward model)"] == pytest.approx([0.0, 0.1, 0.2])
    assert lines["gold judge"] == pytest.approx([0.0, 0.05, 0.1])
    assert lines["KL to SFT (right axis)"] == pytest.approx([0.3, 0.6, 0.9])
    assert lines["implicit-reward margin"] == [0.0, 0.4]
    assert lines["ln V (uniform guess)"][0] == pytest.approx(math.log(256))
    assert all(ax.get_ylabel() for ax in fig.axes)                      # twin axes too
    assert all(ax.get_xlabel() and ax.get_title() for ax in fig.axes[:4])  # the four panels


def evaluation(golds, stopped_k, n=4, prompts=None):
    prompts = prompts or [f"q{i}" for i in range(len(golds))]
    share = lambda k: {"rate": k / n, "k": k, "n": n, "ci": [0.0, 1.0]}  # noqa: E731
    return {"gold": sum(golds) / len(golds), "gold_ci": [-1.0, 1.0], "kl": 0.5, "length": 20.0,
            "shares": {"stopped": share(stopped_k), "factual": share(1), "idk": share(0), "refusal": share(2),
                       "premise_corrected": share(0)},
            "replies": [{"prompt": p, "kind": k, "text": f"reply {p}", "gold": g}
                        for p, k, g in zip(prompts, ["fact", "unknown", "decline", "premise"] * 9, golds)]}


def test_journey_examples_take_the_first_prompt_of_each_kind_and_refuse_mismatched_prompts():
    evals = {"base": evaluation([-1, -2, -2, -1], 0), "SFT": evaluation([2, 2, 2, 2], 4)}
    rows = journey.journey_examples(evals)
    assert [r["kind"] for r in rows] == list(journey.KINDS)
    assert rows[2]["base"] == ("reply q2", -2) and rows[2]["SFT"] == ("reply q2", 2)
    evals["PPO"] = evaluation([2, 2, 2, 2], 4, prompts=["other", "q1", "q2", "q3"])
    with pytest.raises(ValueError, match="PPO's evaluation asked other prompts"):
        journey.journey_examples(evals)


def test_behaviour_table_and_moved_report_counts_with_their_n():
    base, sft = evaluation([-1, -2, -2, -1], 0, n=40), evaluation([2, 2, 2, 2], 40, n=40)
    table = journey.behaviour_table({"base": base, "SFT": sft})
    assert table["SFT"]["ends its turn (format)"].startswith("1.00") and "n=40" in table["SFT"]["ends its turn (format)"]
    assert table["base"]["gold reward"] == "-1.50 (-1.00 to +1.00)"
    mv = journey.moved(base, sft)
    assert mv["stopped"] == "up" and mv["factual"] == "within noise"
    assert journey.moved(sft, base)["stopped"] == "down"


def test_optimal_tokens_inverts_the_laws_closed_form_optimum():
    for law in (scaling.CHINCHILLA, scaling.EPOCH):
        D = journey.optimal_tokens(7e9, law)
        n_opt, d_opt = law.optimal(6 * 7e9 * D)
        assert n_opt == pytest.approx(7e9, rel=1e-9) and d_opt == pytest.approx(D, rel=1e-9)


def test_cost_at_scale_follows_the_flop_counts_it_states():
    c = journey.cost_at_scale(7e9, gpu="H100", mfu=0.4)
    n = 7e9
    assert c["pretraining"]["flops"] == pytest.approx(6 * n * journey.optimal_tokens(n))
    sft_tokens = journey.SCALE_EXAMPLES["SFT"] * journey.TOKENS_PER_EXAMPLE["SFT"]
    assert c["SFT"]["flops"] == pytest.approx(6 * n * sft_tokens)
    assert c["PPO"]["flops"] / c["PPO"]["tokens"] == pytest.approx(30 * n)   # 3 x 2N forward + 2 x 2 x 6N
    assert c["DPO"]["flops"] / c["DPO"]["tokens"] == pytest.approx(8 * n)
    assert c["pretraining"]["gpu_days"] == pytest.approx(scaling.gpu_days(c["pretraining"]["flops"], "H100", 0.4))
    # pretraining dominates at 7B: the later stages together are a small fraction
    assert sum(v["flops"] for k, v in c.items() if k != "pretraining") < 0.01 * c["pretraining"]["flops"]


def test_stage_rows_read_data_steps_and_memory_from_the_infos():
    mem = {k: {"models": m, "trained": t, "total": 2e6 * m}
           for k, (m, t) in {"pretraining": (1, 1), "SFT": (1, 1), "reward model": (1, 1),
                             "PPO": (4, 2), "DPO": (2, 1)}.items()}
    rows = journey.stage_rows(*fake_histories(), mem)
    assert rows["pretraining"]["data"] == "400 tokens" and rows["pretraining"]["steps"] == 4
    assert rows["PPO"]["data"].startswith("24 sampled replies") and rows["PPO"]["steps"] == 3
    assert rows["PPO"]["models held (trained)"] == "4 (2)" and rows["PPO"]["state MB"] == 8.0
    assert rows["DPO"]["seconds"] == 1.5


def test_the_closing_numbers_come_from_the_smoke_preset_runs():
    """End to end at the smoke preset: every history notebook 09 draws is in its artifact, and
    the behaviour table's SFT and PPO rows are notebook 06's stored evaluations (the same
    prompts, seed and code), as benchmarks/ppo.py reports them."""
    from llmlab import beyond, prefs, ppo, stages
    from llmlab.config import ppo_config

    p = "smoke"
    arts = {k: f(p) for k, f in (("sft", stages.get_sft_model), ("reward", stages.get_reward_model),
                                 ("ppo", stages.get_ppo), ("dpo", stages.get_dpo))}
    d = journey.dynamics(stages.load_train_log(p), arts["sft"].info, arts["reward"].info,
                         arts["ppo"].info, arts["dpo"].info)
    assert len(d["pretrain"]["train_loss"]) == stages.load_train_log(p)["steps"]
    assert len(d["ppo"]["gold"]) == ppo_config(p).iterations and d["dpo"]["step"] and d["sft"]["val_loss"]
    journey.plot_dynamics(d)

    pc = ppo_config(p)
    world, tok = stages.get_world(p), stages.get_tokenizer(p)
    preset = stages._preset(p)
    items = ppo.prompt_sets(world, preset.sft, pc)["eval"]
    sft_model, rm = stages.load_sft_model(p, "cpu"), stages.load_reward_model(p, "cpu")
    values = prefs.relation_values(world)
    evals = {"SFT": beyond.evaluate(sft_model, sft_model, rm, tok, items, values, preset.sft.template, pc),
             "PPO": beyond.evaluate(stages.load_ppo_policy(p, device="cpu"), sft_model, rm, tok, items, values,
                                    preset.sft.template, pc)}
    for name, stored in (("SFT", arts["ppo"].info["initial_eval"]), ("PPO", arts["ppo"].info["final_eval"])):
        assert evals[name]["gold"] == pytest.approx(stored["gold"])
        assert evals[name]["shares"] == stored["shares"]
    table = journey.behaviour_table(evals)
    assert table["PPO"]["gold reward"].startswith(f"{arts['ppo'].info['final_eval']['gold']:+.2f}")
