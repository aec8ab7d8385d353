"""Notebook 03: compute accounting, the fits, the closed-form allocation, the calculator, the sweep."""
import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmlab import scaling
from llmlab.config import ModelConfig, ScalingConfig, TrainConfig, get_preset
from llmlab.model import GPT
from llmlab.scaling import CHINCHILLA, EPOCH, ScalingLaw


# --- 1. compute accounting -------------------------------------------------------------------

def test_breakdown_hand_worked():
    # L=1, C=2, V=3, T=4: qkv 2*3*2*2=24, scores 2*4*2=16, values 16, out 2*2*2=8,
    # mlp 2*2*4*2*2=64, head 2*3*2=12 -> forward 140, training 3x = 420
    b = scaling.forward_flops_breakdown(1, 2, 3, 4)
    assert sum(b.values()) == 140
    assert scaling.train_flops_per_token(1, 2, 3, 4) == 420


@pytest.mark.parametrize("cfg", [
    ModelConfig(vocab_size=2048, block_size=128, n_layer=4, n_head=4, n_embd=128),   # cpu base model
    ModelConfig(vocab_size=512, block_size=64, n_layer=2, n_head=2, n_embd=64),
])
def test_flop_counts_agree_with_pytorch_counter(cfg):
    """The fuller count matches FlopCounterMode within 1%; 6N within 15% (the attention term).

    The counter sees every matmul of forward and backward; it skips norms, softmax and bias
    adds, which our count leaves out too. 6N misses attention's 12 L T C per token, which is
    12 L T C / 6N = 2T / (12 C + 6V/L) of the total here: about 12% for the cpu model.
    """
    torch.manual_seed(0)
    model = GPT(cfg)
    measured = scaling.measure_train_flops(model, batch_size=1)
    full = scaling.train_flops_per_token(cfg.n_layer, cfg.n_embd, cfg.vocab_size, cfg.block_size)
    N = scaling.compute_params(model)
    assert abs(full - measured) / measured < 0.01
    # notebook 02's count also charges biases and norm weights 6 FLOPs each: within 2%
    assert abs(model.flops_per_token() - measured) / measured < 0.02
    assert abs(scaling.flops_6nd(N, 1) - measured) / measured < 0.15
    assert scaling.flops_6nd(N, 1) < measured                          # 6N leaves attention out


def test_gpu_days_and_calculator_units():
    # one A100 at 100% MFU does 312e12 * 86400 FLOPs in a day
    assert scaling.gpu_days(312e12 * 86400, "A100", 1.0) == pytest.approx(1.0)
    assert scaling.gpu_days(989e12 * 86400 * 0.5, "H100", 0.5) == pytest.approx(1.0)
    # 8 H100s for 2 days at 40% MFU
    f = scaling.flops_from_gpus("H100", 8, 2.0, 0.4)
    assert f == pytest.approx(989e12 * 8 * 2 * 86400 * 0.4)
    assert scaling.training_days(f, "H100", 8, 0.4) == pytest.approx(2.0)
    # $1000 at $2 per GPU-hour = 500 A100-hours
    f = scaling.flops_from_dollars(1000.0, 2.0, "A100", 0.3)
    assert f == pytest.approx(500 * 3600 * 312e12 * 0.3)
    assert scaling.gpu_days(f, "A100", 0.3) * 24 == pytest.approx(500.0)


def test_calculator_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown GPU type 'V100'"):
        scaling.flops_from_gpus("V100", 1, 1.0, 0.4)
    with pytest.raises(ValueError, match="MFU must be in"):
        scaling.gpu_days(1e20, "A100", mfu=1.5)
    with pytest.raises(ValueError, match="size_factor"):
        scaling.plan(EPOCH, 1e21, size_factor=2.0)
    with pytest.raises(ValueError, match="budget must be positive"):
        scaling.plan(EPOCH, 0.0)


# --- 2. closed-form compute-optimal allocation ------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(E=st.floats(0.5, 3.0), logA=st.floats(2.0, 8.0), logB=st.floats(2.0, 8.0),
       alpha=st.floats(0.2, 0.6), beta=st.floats(0.2, 0.6), logC=st.floats(40.0, 60.0))
def test_closed_form_equals_numerical_minimisation(E, logA, logB, alpha, beta, logC):
    law = ScalingLaw(E, math.exp(logA), math.exp(logB), alpha, beta)
    C = math.exp(logC)
    N, D = law.optimal(C)
    N2, D2 = scaling.optimal_numeric(law, C)
    assert N * D * 6 == pytest.approx(C, rel=1e-9)
    assert N == pytest.approx(N2, rel=1e-4)
    assert law.loss(N, D) <= law.loss(N2, D2) + 1e-12


def test_published_fits_tokens_per_param():
    """Chinchilla's rounded constants drift far above 20 tokens/param; Epoch's stay near 20."""
    C_chin = 5.76e23                      # Chinchilla's own training budget
    assert CHINCHILLA.tokens_per_param(C_chin) > 60
    assert 15 < EPOCH.tokens_per_param(C_chin) < 25
    # the ratio grows with C exactly as (C/6)^(b - a)
    r1, r2 = CHINCHILLA.tokens_per_param(1e21), CHINCHILLA.tokens_per_param(1e24)
    assert r2 / r1 == pytest.approx(1e3 ** (CHINCHILLA.b - CHINCHILLA.a))
    assert CHINCHILLA.a + CHINCHILLA.b == pytest.approx(1.0)


def test_plan_overtraining_gives_up_loss():
    out = scaling.plan(EPOCH, 1e23, gpu="H100", n_gpus=64, mfu=0.4, size_factor=0.25)
    assert out["n_small"] == pytest.approx(out["n_opt"] / 4)
    assert out["d_small"] == pytest.approx(out["d_opt"] * 4)
    assert out["loss_given_up"] > 0
    assert out["flops_to_match"] > 1e23           # the small model needs more compute
    same = scaling.plan(EPOCH, 1e23)
    assert same["loss_given_up"] == pytest.approx(0.0, abs=1e-12)
    assert same["flops_to_match"] == pytest.approx(1e23, rel=1e-6)
    # a model too small can never match the optimal loss
    assert scaling.flops_to_match(EPOCH, 1e3, same["loss"]) == math.inf


# --- 3. the fits recover a known law ----------------------------------------------------------

TRUE = ScalingLaw(E=1.8, A=400.0, B=1500.0, alpha=0.34, beta=0.30)


def synthetic_sweep(law=TRUE, budgets=np.logspace(17, 21, 5), n_sizes=7, noise=0.002, seed=0):
    """An IsoFLOP sweep whose losses come from ``law`` times log-normal noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for C in budgets:
        n0, _ = law.optimal(C)
        for f in np.logspace(-1, 1, n_sizes):
            N = n0 * f
            D = C / (6 * N)
            loss = float(law.loss(N, D) * math.exp(rng.normal(0, noise)))
            rows.append({"budget": float(C), "n_params": N, "tokens": D, "loss": loss})
    return rows


def test_parametric_fit_recovers_known_law():
    rows = synthetic_sweep()
    N, D, L = (np.array([r[k] for r in rows]) for k in ("n_params", "tokens", "loss"))
    law, _ = scaling.fit_parametric(N, D, L)
    assert law.alpha == pytest.approx(TRUE.alpha, abs=0.02)
    assert law.beta == pytest.approx(TRUE.beta, abs=0.02)
    assert law.E == pytest.approx(TRUE.E, rel=0.03)
    assert law.a == pytest.approx(TRUE.a, abs=0.02)
    # and the bootstrap's 10-90% interval of alpha covers the truth or lies within 0.02 of it
    samples = scaling.bootstrap_parametric(N, D, L, n_boot=10, start=law, n_starts=0)
    lo, hi = scaling.interval(samples[:, 3])
    assert lo - 0.02 <= TRUE.alpha <= hi + 0.02 and hi - lo < 0.05


def test_parametric_fit_identifies_a_known_law():
    rows = synthetic_sweep()
    N, D, L = (np.array([r[k] for r in rows]) for k in ("n_params", "tokens", "loss"))
    law, _ = scaling.fit_parametric(N, D, L)
    samples, at_bound = scaling.bootstrap_parametric(N, D, L, n_boot=10, start=law, n_starts=0,
                                                     return_at_bound=True)
    assert law.at_bound == ()
    assert scaling.identification(law, samples, at_bound) == {k: None for k in scaling.PARAM_NAMES}


def test_parametric_fit_without_a_floor_reports_e_unidentified():
    """Losses with no floor (E = 0, the case that sent an unbounded fit to E = 0.0 and then
    crashed the bootstrap on log(0)) end on E's lower bound, reported as not identified."""
    floorless = scaling.ScalingLaw(E=0.0, A=400.0, B=400.0, alpha=0.34, beta=0.28)
    N = np.array([1e5, 3e5, 1e6, 3e6, 1e7, 2e5, 6e5, 2e6])
    D = np.array([1e7, 3e6, 1e6, 3e5, 1e5, 4e6, 2e6, 5e5])
    L = floorless.loss(N, D)
    law, _ = scaling.fit_parametric(N, D, L)
    lo, hi = scaling.parametric_bounds(L)[2]
    assert math.exp(lo) - 1e-12 <= law.E <= math.exp(hi) + 1e-12 and law.E > 0
    assert "E" in law.at_bound
    samples, at_bound = scaling.bootstrap_parametric(N, D, L, n_boot=5, start=law, n_starts=1,
                                                     return_at_bound=True)
    assert np.all(np.isfinite(samples)) and np.all(samples[:, 0] > 0)
    assert scaling.identification(law, samples, at_bound)["E"] is not None
    # a start at E = 0 (an earlier fit's output) is clipped into the bounds, not log(0)
    law2, _ = scaling.fit_parametric(N, D, L, n_starts=0, extra_starts=[(0.0, 1.0, 1.0, 0.3, 0.3)])
    assert law2.E > 0


def test_a_known_entropy_pins_e_and_the_fit_recovers_the_rest():
    """With E held at its true value (what the world's renderer knows), a narrow sweep whose
    free fit cannot place E still recovers the exponents; a wrong E moves them."""
    rows = synthetic_sweep(budgets=np.logspace(17, 18, 4), n_sizes=5, noise=0.002)
    N, D, L = (np.array([r[k] for r in rows]) for k in ("n_params", "tokens", "loss"))
    bounds = scaling.with_known_entropy(scaling.parametric_bounds(L), TRUE.E)
    law, _ = scaling.fit_parametric(N, D, L, bounds=bounds)
    assert law.E == pytest.approx(TRUE.E, rel=1e-9) and "E" in law.at_bound
    assert law.a == pytest.approx(TRUE.a, abs=0.05)
    samples = scaling.bootstrap_parametric(N, D, L, n_boot=5, start=law, n_starts=1, bounds=bounds)
    assert np.allclose(samples[:, 0], TRUE.E)
    wrong, _ = scaling.fit_parametric(N, D, L, bounds=scaling.with_known_entropy(
        scaling.parametric_bounds(L), 0.5 * TRUE.E))
    assert abs(wrong.a - TRUE.a) > abs(law.a - TRUE.a)


def test_parametric_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="must all be positive"):
        scaling.fit_parametric([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [1, 2, 3, 0, 5])
    with pytest.raises(ValueError, match=">= 5 runs"):
        scaling.fit_parametric([1, 2], [1, 2], [1, 2])


def test_isoflop_fit_recovers_exponents():
    """Approach 2 on losses from a known law: a = beta/(alpha+beta), b = alpha/(alpha+beta)."""
    rows = synthetic_sweep(noise=0.001)
    fit = scaling.fit_isoflop(rows)
    assert fit.a == pytest.approx(TRUE.a, abs=0.03)
    assert fit.b == pytest.approx(TRUE.b, abs=0.03)
    assert fit.a + fit.b == pytest.approx(1.0)
    boot = scaling.bootstrap_isoflop(rows, n_boot=100, seed=1)
    lo, hi = scaling.interval(boot["a"])
    assert lo <= TRUE.a + 0.03 and hi >= TRUE.a - 0.03
    assert boot["n_failed"] < 10


def test_parabola_and_power_law_hand_worked():
    coeffs, x = scaling.fit_parabola(np.array([0.0, 1.0, 2.0]), np.array([2.0, 1.0, 2.0]))
    assert np.allclose(coeffs, [1.0, -2.0, 2.0]) and x == pytest.approx(1.0)
    _, x = scaling.fit_parabola(np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 1.0]))
    assert math.isnan(x)                                     # opens downwards: no minimum
    e, k = scaling.fit_power_law(np.array([1.0, 4.0, 16.0]), np.array([5.0, 10.0, 20.0]))
    assert e == pytest.approx(0.5) and k == pytest.approx(5.0)
    assert scaling.huber(np.array([0.5, -3.0]), 1.0).tolist() == [0.125, 2.5]


# --- 4. the sweep -----------------------------------------------------------------------------

def test_plan_sweep_budget_arithmetic_and_errors():
    p = get_preset("cpu")
    runs = scaling.plan_sweep(p.scaling, p.model)
    assert len(p.scaling.budgets) >= 4 and len(p.scaling.widths) >= 5   # the issue: 4+ budgets
    for C in p.scaling.budgets:
        assert len([r for r in runs if r["budget"] == C]) >= 3
    assert len(runs) == len({(r["budget"], r["n_embd"]) for r in runs})
    tok_per_step = p.scaling.batch_size * p.model.block_size
    for r in runs:
        assert r["tokens"] == r["steps"] * tok_per_step
        # rounding the step count moves the spent compute by at most half a step
        assert abs(r["flops_6nd"] - r["budget"]) <= 6 * r["n_params"] * tok_per_step / 2 + 1
        assert r["steps"] >= p.scaling.min_steps
    bad = dataclasses.replace(p.scaling, budgets=(1e9,), tokens_per_param=())
    with pytest.raises(ValueError, match="only .* steps"):
        scaling.plan_sweep(bad, p.model)
    with pytest.raises(ValueError, match="not a multiple of head_dim"):
        scaling.plan_sweep(dataclasses.replace(p.scaling, widths=(24, 40, 50)), p.model)


def test_csv_round_trip(tmp_path):
    rows = [{c: (3 if c in ("n_embd", "n_layer", "n_head", "n_params", "tokens", "steps") else 0.5 + i)
             for c in scaling.SWEEP_COLUMNS} for i in range(3)]
    path = tmp_path / "s.csv"
    path.write_text(scaling.rows_to_csv(rows, header="made by a test\nsecond line"))
    assert path.read_text().startswith("# made by a test\n# second line\n")
    assert scaling.read_sweep_csv(path) == rows
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a sweep CSV"):
        scaling.read_sweep_csv(tmp_path / "bad.csv")


def test_tiny_sweep_trains_and_more_compute_helps():
    """A real (tiny) sweep on a learnable token stream: every run beats the uniform loss, and
    the best run of the bigger budget beats the best of the smaller one."""
    V = 64
    rng = np.random.default_rng(0)
    # a random sparse Markov chain: each token has 3 likely successors
    nxt = rng.integers(0, V, size=(V, 3))
    seq = [0]
    for _ in range(60000):
        seq.append(int(nxt[seq[-1], rng.integers(0, 3)]))
    data = np.array(seq, dtype=np.uint16)
    base = ModelConfig(vocab_size=V, block_size=16, n_layer=1, n_head=1, n_embd=16)
    scfg = ScalingConfig(budgets=(1e8, 3e8), widths=(8, 16, 24), tokens_per_param=(), n_layer=1, head_dim=8,
                         batch_size=8, lr=1e-2, min_steps=10, eval_batches=4)
    need = scaling.tokens_needed(scaling.plan_sweep(scfg, base))
    rows = scaling.run_sweep(scfg, base, TrainConfig(), data[:need], data[-5000:],
                             device="cpu", progress=False)
    assert len(rows) == 6
    assert max(r["epochs"] for r in rows) <= 1.0
    for r in rows:                        # the curve ends where the run ends
        assert r["curve"][-1][0] == r["tokens"] and len(r["curve"]) >= 5
    with pytest.raises(ValueError, match="would repeat data"):
        scaling.run_sweep(scfg, base, TrainConfig(), data[:need // 2], data[-5000:],
                          device="cpu", progress=False)
    assert all(r["loss"] < math.log(V) - 0.5 for r in rows)
    best = {C: min(r["loss"] for r in rows if r["budget"] == C) for C in scfg.budgets}
    assert best[3e8] < best[1e8]


def test_one_pass_batches_read_every_window_once_then_refuse():
    data = np.arange(1000, dtype=np.uint16)
    fn = scaling.one_pass_batches(data, block_size=9, seed=3)
    starts = []
    for _ in range(111 // 4):                                  # (1000 - 1) // 9 = 111 windows
        x, y = fn(data, 4, None)
        assert x.shape == y.shape == (4, 9)
        assert torch.equal(y[:, :-1], x[:, 1:])                 # y is x shifted by one
        starts += x[:, 0].tolist()
    assert len(set(starts)) == len(starts) == 108 and all(s % 9 == 0 for s in starts)
    with pytest.raises(ValueError, match="would repeat data"):
        fn(data, 4, None)
    again = scaling.one_pass_batches(data, block_size=9, seed=3)   # same seed, same order
    assert again(data, 4, None)[0][:, 0].tolist() == starts[:4]
    val = np.arange(5000, 5100, dtype=np.uint16)                     # another array: random windows
    x, _ = again(val, 3, torch.Generator().manual_seed(0))
    assert x.shape == (3, 9) and int(x.min()) >= 5000
    assert again(data, 4, None)[0][:, 0].tolist() == starts[4:8]     # and the pass goes on


def test_plan_sweep_keeps_the_widths_inside_the_tokens_per_param_band():
    p = get_preset("cpu")
    scfg = dataclasses.replace(p.scaling, budgets=(5e10, 2e11), widths=(8, 16, 24, 32, 48, 64),
                               tokens_per_param=(3.0, 150.0))
    runs = scaling.plan_sweep(scfg, p.model)
    assert all(3.0 * 0.95 <= r["tokens_per_param"] <= 150.0 * 1.05 for r in runs)
    for C in scfg.budgets:
        dropped = set(scfg.widths) - {r["n_embd"] for r in runs if r["budget"] == C}
        full = {r["n_embd"]: r for r in scaling.plan_sweep(
            dataclasses.replace(scfg, tokens_per_param=()), p.model) if r["budget"] == C}
        for w in dropped:                                     # dropped only for being outside
            assert not 3.0 * 1.05 <= full[w]["tokens_per_param"] <= 150.0 * 0.95
    with pytest.raises(ValueError, match="keeps .* of the widths"):
        scaling.plan_sweep(dataclasses.replace(scfg, tokens_per_param=(20.0, 21.0)), p.model)
    with pytest.raises(ValueError, match="low < high"):
        scaling.plan_sweep(dataclasses.replace(scfg, tokens_per_param=(5.0, 1.0)), p.model)


def test_envelope_recovers_the_optimal_size_of_a_known_law():
    """Approach 1 on training curves drawn from a known L(N, D): the envelope's N_opt grows as
    C^a with the law's a = beta / (alpha + beta) (up to the ladder's steps)."""
    law = ScalingLaw(E=1.0, A=400.0, B=400.0, alpha=0.5, beta=0.5)
    sizes = np.geomspace(3e4, 3e7, 19)         # N_opt = D_opt = sqrt(C / 6): 4e5 to 4e6
    rows = []
    for C in (1e12, 1e13, 1e14):
        for N in sizes:
            D = C / (6 * N)
            tok = np.geomspace(D / 100, D, 30)
            rows.append({"budget": C, "n_params": N, "tokens": D,
                         "curve": [(t, float(law.loss(N, t))) for t in tok]})
    env = scaling.fit_envelope(rows)
    assert env.sizes >= 3 and env.a == pytest.approx(law.a, abs=0.08)
    Cs = env.flops[np.isfinite(env.loss)]
    assert np.all(np.diff(env.loss[np.isfinite(env.loss)]) <= 1e-12)    # more compute, lower loss
    assert Cs.min() == pytest.approx(1e12) and Cs.max() == pytest.approx(1e14)
    few = [r for r in rows if r["n_params"] in sizes[[0, -1]]]
    assert math.isnan(scaling.fit_envelope(few).a)                     # 2 sizes: no exponent
    with pytest.raises(ValueError, match="training curve"):
        scaling.fit_envelope([dict(r, curve=[]) for r in rows])


def test_sweep_data_is_fresh_text_of_the_world(tmp_path):
    """build_sweep_data writes at least the tokens asked for, from pages the crawl does not
    hold, with the renderer's entropy per byte of each split."""
    from llmlab import stages
    from llmlab.packing import load_tokens

    tok = stages.get_tokenizer("smoke", root=tmp_path / "cache")
    world = stages.get_world("smoke")
    info = scaling.build_sweep_data(tmp_path, world, tok, 5000, 800, seed=7)
    train, val = load_tokens(tmp_path / "train.bin"), load_tokens(tmp_path / "val.bin")
    assert len(train) == info["train"]["tokens"] >= 5000 and len(val) == info["val"]["tokens"] >= 800
    assert (train == tok.eot_id).sum() == info["train"]["pages"]
    from llmlab.world import write_pages

    ends = np.flatnonzero(np.asarray(train) == tok.eot_id)
    docs = np.split(np.asarray(train), ends + 1)
    fresh = write_pages(world, 3, seed=7)
    assert [tok.decode([int(t) for t in d[:-1]]) for d in docs[:3]] == [p.text for p in fresh]
    for split in ("train", "val"):
        assert 0.0 < info[split]["entropy_bits_per_byte"] < 1.0
    assert 0.0 <= info["val_pages_also_in_train"] < 0.5


# --- 5. the calculator widget -----------------------------------------------------------------

def test_widget_budget_modes_and_report():
    from llmlab.widgets import chinchilla as calc

    assert calc.budget_flops("FLOPs", flops=3e21) == 3e21
    assert calc.budget_flops("GPUs", gpu="A100", n_gpus=2, days=1.0, mfu=0.5) == pytest.approx(
        2 * 86400 * 312e12 * 0.5)
    assert calc.budget_flops("dollars", gpu="H100", dollars=250.0, price=2.5, mfu=0.4) == pytest.approx(
        100 * 3600 * 989e12 * 0.4)
    with pytest.raises(ValueError, match="budget mode"):
        calc.budget_flops("euros")
    html = calc.report(EPOCH, 1e23, "H100", 64, 0.4, size_factor=0.5)
    N, D = EPOCH.optimal(1e23)
    assert f"{D / N:.1f}" in html and "over-trained" in html and "Epoch AI" in html
    assert "over-trained" not in calc.report(CHINCHILLA, 1e23)


def test_widget_builds():
    pytest.importorskip("ipywidgets")
    from llmlab.widgets import chinchilla as calc

    box = calc.calculator()
    html = box.children[-1]
    assert "compute-optimal parameters" in html.value


def test_isoflop_minimum_outside_the_ladder_is_not_used():
    """A budget whose losses only fall (the optimum is below the smallest model) gives NaN."""
    rows = synthetic_sweep(noise=0.0)
    small_C = min(r["budget"] for r in rows)
    n0, _ = TRUE.optimal(small_C)
    # keep only the sizes above the optimum at the smallest budget
    rows = [r for r in rows if r["budget"] != small_C or r["n_params"] > 2 * n0]
    fit = scaling.fit_isoflop(rows)
    assert math.isnan(fit.n_opt[0]) and np.all(np.isfinite(fit.n_opt[1:]))
    assert fit.a == pytest.approx(TRUE.a, abs=0.03)


def test_isoflop_without_two_minima_has_unknown_exponents():
    rows = [r for r in synthetic_sweep(budgets=np.array([1e18, 1e19]), noise=0.0)]
    # keep only sizes above each budget's optimum: losses rise with N everywhere
    rows = [r for r in rows if r["n_params"] > 2 * TRUE.optimal(r["budget"])[0]]
    fit = scaling.fit_isoflop(rows)
    assert np.all(np.isnan(fit.n_opt)) and math.isnan(fit.a) and math.isnan(fit.b)
    assert scaling.bootstrap_isoflop(rows, n_boot=5)["n_failed"] == 5


def test_flops_per_token_model_and_scaling_agree():
    """One count of training FLOPs per token: GPT.flops_per_token (PaLM's 6(N + VC) + 12LTC)
    and scaling.train_flops_per_token (3 x the forward breakdown) differ by exactly 6 FLOPs per
    parameter that is not a matrix (biases and LayerNorm gains), which the breakdown leaves out."""
    import torch.nn as nn

    from llmlab.config import ModelConfig
    from llmlab.model import GPT
    from llmlab.scaling import train_flops_per_token

    for L, C, H, V, T, bias in ((1, 16, 2, 64, 8, True), (2, 32, 4, 100, 16, False), (3, 48, 6, 512, 32, True)):
        m = GPT(ModelConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=C, bias=bias))
        small = sum(p.numel() for mod in m.modules() for name, p in mod.named_parameters(recurse=False)
                    if name == "bias" or isinstance(mod, nn.LayerNorm))
        assert m.flops_per_token() - train_flops_per_token(L, C, V, T) == 6 * small


def test_one_table_of_gpu_peaks():
    from llmlab import device, scaling, train

    assert train.GPU_PEAKS is device.GPU_PEAKS
    assert scaling.GPU_PEAK_FLOPS == {g: device.GPU_PEAKS[g]["bf16"] for g in scaling.GPU_PEAK_FLOPS}
