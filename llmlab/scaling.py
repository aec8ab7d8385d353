"""Scaling laws: compute accounting, the IsoFLOP sweep, Chinchilla's fits, the calculator (notebook 03).

Reading order, as notebook 03 teaches it:

1. **Compute accounting** (section 1). ``flops_6nd`` is the rule of thumb C ~= 6 N D (Kaplan et
   al. 2020, Sec. 2.1): 2 FLOPs per weight per token forward, 4 backward.
   ``forward_flops_breakdown`` is the fuller count (Kaplan Table 1, Hoffmann et al. 2022
   App. F) that adds attention's scores and weighted sums; ``measure_train_flops`` checks both
   against PyTorch's own counter (``torch.utils.flop_counter.FlopCounterMode``). ``gpu_days``
   turns a FLOP budget into GPU-days at a given MFU.
2. **The IsoFLOP sweep** (section 2). ``plan_sweep`` lays out, for every compute budget C, a
   ladder of model sizes N, each trained on the D = C / 6N tokens the budget allows;
   ``run_sweep`` trains them with notebook 02's ``GPT`` and ``train``.
3. **Fits** (sections 3-4). Approach 2 (``fit_isoflop``): a parabola in log N per budget gives
   N_opt(C); power laws N_opt = k C^a and D_opt = k' C^b through those minima. Approach 3
   (``fit_parametric``): L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, Eq. 2)
   fitted with a Huber loss on log loss from a grid of starts with L-BFGS (Eq. 3).
   ``bootstrap_isoflop`` and ``bootstrap_parametric`` give intervals.
4. **Compute-optimal allocation in closed form** (section 5): ``ScalingLaw.optimal`` (Eq. 4),
   with ``optimal_numeric`` (a 1-D minimisation along C = 6ND) as its test oracle; the published
   fits ``CHINCHILLA`` and ``EPOCH``; ``FRONTIER`` models for the parameters-tokens chart.
5. **The calculator** (section 6): budgets from GPUs x days x MFU or from dollars, and ``plan``:
   optimal N and D, tokens per parameter, predicted loss and time, and the over-training trade.

Everything here is a small pure function on numbers or NumPy arrays except ``run_sweep`` (which
trains models) and ``measure_train_flops`` (which runs one).
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .device import GPU_PEAKS

# =============================================================================================
# 1. Compute accounting
# =============================================================================================

SECONDS_PER_DAY = 86_400.0

# Peak dense bf16 tensor-core throughput per GPU, FLOP/s: the calculator's GPUs, read from the
# one table of data-sheet peaks (llmlab.device.GPU_PEAKS, which MFU in notebook 02 also uses).
GPU_PEAK_FLOPS = {gpu: GPU_PEAKS[gpu]["bf16"] for gpu in ("A100", "H100")}


def flops_6nd(n_params: float, n_tokens: float) -> float:
    """Training compute by the rule of thumb C = 6 N D (Kaplan et al. 2020, Sec. 2.1).

    Each weight costs 2 FLOPs per token forward (a multiply and an add) and 4 backward
    (gradients with respect to the input and to the weight).

    >>> flops_6nd(1e6, 2e7)
    120000000000000.0
    """
    return 6.0 * n_params * n_tokens


def compute_params(model) -> int:
    """N: the parameters that cost compute per token in llmlab's ``GPT``.

    The non-embedding weights (blocks, final norm) plus the language-model head (V x C), which
    is tied to the token embedding: the lookup is free but the head's matmul is not. Leaving
    the head out (Kaplan's non-embedding N) bends small-model scaling laws (Pearce & Song
    2024), and in our tiny models the head is a large share of the compute.
    """
    cfg = model.config
    return int(model.num_params(non_embedding=True) + cfg.vocab_size * cfg.n_embd)


def forward_flops_breakdown(n_layer: int, n_embd: int, vocab_size: int, seq_len: int,
                            mlp_ratio: int = 4) -> dict:
    """Forward FLOPs per token of a GPT, component by component (Hoffmann et al. 2022, App. F).

    A matmul of (m, k) by (k, n) costs 2 m k n FLOPs. Per token and layer: q, k, v projections
    2 * 3 C^2; attention scores q k^T over T keys 2 T C; the weighted sum of values 2 T C; the
    output projection 2 C^2; the MLP 2 * 2 * mlp_ratio * C^2. Once per token: the head 2 V C.
    Attention is counted over the whole T x T square, as the kernels compute it, not just the
    causal half. Norms, softmax, biases and the loss are left out (under 1% here).

    >>> b = forward_flops_breakdown(n_layer=1, n_embd=2, vocab_size=3, seq_len=4)
    >>> b["qkv"], b["scores"], b["values"], b["attn_out"], b["mlp"], b["head"]
    (24, 16, 16, 8, 64, 12)
    """
    L, C, V, T = n_layer, n_embd, vocab_size, seq_len
    return {
        "qkv": L * 2 * 3 * C * C,
        "scores": L * 2 * T * C,
        "values": L * 2 * T * C,
        "attn_out": L * 2 * C * C,
        "mlp": L * 2 * 2 * mlp_ratio * C * C,
        "head": 2 * V * C,
    }


def train_flops_per_token(n_layer: int, n_embd: int, vocab_size: int, seq_len: int) -> float:
    """The fuller count of training FLOPs per token: 3 x the forward breakdown (backward = 2x)."""
    return 3.0 * sum(forward_flops_breakdown(n_layer, n_embd, vocab_size, seq_len).values())


def measure_train_flops(model, batch_size: int = 2, seq_len: int | None = None) -> float:
    """Training FLOPs per token of ``model`` counted by PyTorch (``FlopCounterMode``).

    Runs one forward and backward pass on a random (batch_size, seq_len) batch and divides the
    counted FLOPs by the number of tokens. The trusted reference for ``flops_6nd`` and
    ``train_flops_per_token`` (notebook 03, section 1).

    The count runs the explicit-mask attention (``GPT.set_attention(False)``): the counter
    knows the fused attention kernels of CUDA, but the CPU one
    (``_scaled_dot_product_flash_attention_for_cpu`` in torch 2.x) counts as zero FLOPs, so
    with it the counter would report exactly 6N and hide the attention term we want to see.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    cfg = model.config
    T = cfg.block_size if seq_len is None else seq_len
    g = torch.Generator().manual_seed(0)
    x = torch.randint(cfg.vocab_size, (batch_size, T), generator=g)   # (B, T)
    y = torch.randint(cfg.vocab_size, (batch_size, T), generator=g)   # (B, T)
    use_sdpa = [b.attn.use_sdpa for b in model.h]
    model.set_attention(False)
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            _, loss = model(x, y)
            loss.backward()
    finally:
        for b, flag in zip(model.h, use_sdpa):
            b.attn.use_sdpa = flag
        model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / (batch_size * T)


def gpu_days(flops: float, gpu: str = "A100", mfu: float = 0.4) -> float:
    """GPU-days that ``flops`` take on one ``gpu`` running at model-FLOPs utilisation ``mfu``.

    MFU is the share of the peak the training run turns into model FLOPs (PaLM, Chowdhery et
    al. 2022, App. B); 30-50% is typical of large runs.

    >>> round(gpu_days(312e12 * 86400, "A100", mfu=1.0), 6)
    1.0
    """
    return flops / (_peak(gpu) * _check_mfu(mfu) * SECONDS_PER_DAY)


def _peak(gpu: str) -> float:
    if gpu not in GPU_PEAK_FLOPS:
        raise ValueError(f"unknown GPU type {gpu!r}; known: {', '.join(GPU_PEAK_FLOPS)}")
    return GPU_PEAK_FLOPS[gpu]


def _check_mfu(mfu: float) -> float:
    if not 0 < mfu <= 1:
        raise ValueError(f"MFU must be in (0, 1], got {mfu!r}")
    return float(mfu)


# =============================================================================================
# 2. The IsoFLOP sweep
# =============================================================================================


def plan_sweep(scfg, base_model) -> list[dict]:
    """Every run of the IsoFLOP sweep: for each budget C and width, the model and its tokens.

    ``scfg`` is a :class:`~llmlab.config.ScalingConfig`; ``base_model`` the preset's
    :class:`~llmlab.config.ModelConfig` (vocabulary and context length come from it). Each run
    trains for D = C / (6 N) tokens, i.e. ``steps = D / (batch_size * block_size)`` optimiser
    steps. A run with fewer than ``scfg.min_steps`` steps would not be meaningful (its loss
    would measure the warm-up, not the model), so such a ladder is an error, not a silent skip.
    Pure: no model is trained (N is counted from a built model, which takes milliseconds).
    """
    from .model import GPT

    if len(scfg.budgets) < 1 or len(scfg.widths) < 3:
        raise ValueError(f"ScalingConfig needs budgets and at least 3 widths, got "
                         f"budgets={scfg.budgets}, widths={scfg.widths}")
    band = tuple(scfg.tokens_per_param)
    if band and not (len(band) == 2 and 0 < band[0] < band[1]):
        raise ValueError(f"ScalingConfig.tokens_per_param must be () or (low, high) with "
                         f"0 < low < high, got {scfg.tokens_per_param}")
    tokens_per_step = scfg.batch_size * base_model.block_size
    runs = []
    for C in scfg.budgets:
        kept = [w for w in scfg.widths if not band or band[0] <= _tokens_per_param(
            C, w, scfg, base_model) <= band[1]]
        if len(kept) < 3:
            raise ValueError(
                f"ScalingConfig: budget {C:.3g} FLOPs keeps {len(kept)} of the widths "
                f"{scfg.widths} inside tokens_per_param={band} (a minimum needs 3 sizes); "
                f"add widths or widen the band")
        for width in kept:
            mcfg = _model_config(scfg, base_model, width)
            N = compute_params(GPT(mcfg))
            steps = int(round(C / (6 * N) / tokens_per_step))
            if steps < scfg.min_steps:
                raise ValueError(
                    f"ScalingConfig: budget {C:.3g} FLOPs gives the width-{width} model (N={N:,}) "
                    f"only {steps} steps of {tokens_per_step} tokens (min_steps={scfg.min_steps}); "
                    f"raise the budget or drop the widest models")
            D = steps * tokens_per_step
            full = train_flops_per_token(mcfg.n_layer, width, mcfg.vocab_size, mcfg.block_size)
            runs.append({"budget": float(C), "n_embd": width, "n_layer": mcfg.n_layer,
                         "n_head": mcfg.n_head, "n_params": N, "tokens": D, "steps": steps,
                         "flops_6nd": flops_6nd(N, D), "flops_full": full * D,
                         "tokens_per_param": D / N, "model": mcfg})
    return runs


def _model_config(scfg, base_model, width: int):
    """The ladder's model of this width: ``base_model`` with the sweep's depth and heads."""
    if width % scfg.head_dim:
        raise ValueError(f"ScalingConfig.widths: width {width} is not a multiple of "
                         f"head_dim={scfg.head_dim}")
    return dataclasses.replace(base_model, n_layer=scfg.n_layer, n_embd=width,
                               n_head=width // scfg.head_dim, dropout=0.0)


def _tokens_per_param(C: float, width: int, scfg, base_model) -> float:
    """D / N of the width-``width`` model at budget C (D = C / 6N), before rounding to steps."""
    from .model import GPT

    N = compute_params(GPT(_model_config(scfg, base_model, width)))
    return C / (6 * N) / N


def tokens_needed(runs: list[dict]) -> int:
    """The tokens a single-epoch sweep needs: the longest run of a plan reads D of them as
    inputs, and its last target is one token further (:func:`build_sweep_data` writes them)."""
    return int(max(r["tokens"] for r in runs)) + 1


def one_pass_batches(data, block_size: int, seed: int = 0):
    """A ``batch_fn`` for :func:`llmlab.train.train` that reads ``data`` once, never twice.

    Windows of ``block_size + 1`` tokens that do not overlap, in an order shuffled by ``seed``
    (:func:`llmlab.packing.iter_batches`); each call takes the next ``batch_size`` of them. A
    run that asks for more windows than ``data`` holds gets a ``ValueError`` instead of a
    second epoch. Every run of a sweep with the same seed reads the same windows in the same
    order, so a short run's data is the start of a long run's. Any other array (the validation
    data, which ``train`` samples through the same function) gets random windows as usual.
    """
    import torch

    from .packing import get_batch

    n_windows = (len(data) - 1) // block_size
    order = np.random.default_rng(seed).permutation(max(n_windows, 0))
    arr = np.asarray(data)
    state = {"next": 0}

    def batch_fn(data_in, batch_size: int, generator):
        if data_in is not data:           # train() estimates the validation loss through the
            return get_batch(data_in, batch_size, block_size, generator)   # same batch_fn
        k = state["next"]
        if k + batch_size > n_windows:
            raise ValueError(f"one_pass_batches: the run asks for windows {k}-{k + batch_size} of "
                             f"{block_size} tokens but the data holds {n_windows} "
                             f"({len(data):,} tokens); it would repeat data: write more tokens "
                             f"(llmlab.scaling.build_sweep_data)")
        state["next"] = k + batch_size
        starts = order[k:k + batch_size] * block_size                               # (B,)
        win = arr[starts[:, None] + np.arange(block_size + 1)[None, :]].astype(np.int64)  # (B, T+1)
        win = torch.from_numpy(win)
        return win[:, :-1], win[:, 1:]                                                # (B, T) each

    return batch_fn


def build_sweep_data(folder, world, tok, n_train_tokens: int, n_val_tokens: int, seed: int) -> dict:
    """The recipe of the ``sweep_data`` artifact: fresh text for a single-epoch sweep.

    Chinchilla's laws describe runs that see each token once, but the cleaned corpus of
    notebook 01 is small (the sweep's longest runs would repeat it many times). The world can
    write as much new text from the same knowledge base as a sweep reads
    (:func:`llmlab.world.iter_pages`): ``train.bin`` gets pages from seed ``seed`` until it
    holds ``n_train_tokens`` tokens, ``val.bin`` pages from seed ``seed + 1`` until it holds
    ``n_val_tokens``, each page encoded with ``tok`` and followed by end-of-text (as notebook
    01 packs). Returns token and page counts, bytes per token, the renderer's entropy per
    byte of each split (the floor a fitted E is compared with) and the share of validation
    pages whose text also occurs in the training split.
    """
    from pathlib import Path

    from .artifacts import atomic_write_bytes
    from .packing import TOKEN_DTYPE, pack_documents
    from .world import iter_pages

    info, texts = {}, {}
    for split, n_tokens, split_seed in (("train", n_train_tokens, seed), ("val", n_val_tokens, seed + 1)):
        pages, docs, total = [], [], 0
        for page in iter_pages(world, split_seed):
            if total >= n_tokens:
                break
            ids = tok.encode_ordinary(page.text)
            pages.append(page)
            docs.append(ids)
            total += len(ids) + 1
        arr = pack_documents(docs, tok.eot_id)
        atomic_write_bytes(Path(folder) / f"{split}.bin",
                           np.ascontiguousarray(arr, dtype=TOKEN_DTYPE).tobytes())
        n_bytes = sum(len(pg.text.encode("utf-8")) + 1 for pg in pages)   # + 1: the separator
        texts[split] = {pg.text for pg in pages}
        if split == "val":
            val_by_kind = {}
            for pg in pages:
                val_by_kind.setdefault(pg.kind, []).append(pg.text)
        info[split] = {"pages": len(pages), "tokens": int(len(arr)), "bytes": n_bytes,
                       "bytes_per_token": round(n_bytes / len(arr), 4),
                       "entropy_bits_per_byte": round(sum(pg.bits for pg in pages) / n_bytes, 5),
                       "kinds": dict(sorted(Counter(pg.kind for pg in pages).items()))}
    info["val_pages_also_in_train"] = round(len(texts["val"] & texts["train"]) / len(texts["val"]), 4)
    info["val_pages_also_in_train_by_kind"] = {
        kind: round(sum(t in texts["train"] for t in ts) / len(ts), 4)
        for kind, ts in sorted(val_by_kind.items())}
    info["seed"] = seed
    return info


def run_sweep(scfg, base_model, base_train, train_data, val_data, device=None,
              progress: bool = True) -> list[dict]:
    """Train every run of :func:`plan_sweep` and record its final validation loss (section 2).

    Each run is notebook 02's ``GPT`` trained by notebook 02's ``train`` with a cosine schedule
    whose length equals the run (Hoffmann et al. 2022, Sec. 3.1: a schedule longer than the run
    overstates the loss of short runs), reading ``train_data`` once (:func:`one_pass_batches`:
    no window twice; too little data is an error, not a second epoch). The loss of a run is
    ``train``'s final validation estimate over ``scfg.eval_batches`` batches, the same windows
    for every run (the estimate's generator is seeded by the config's seed), so runs differ only
    by the model. Returns one row per run (the plan's fields plus ``loss``, ``train_loss``,
    ``seconds``, ``epochs`` and ``curve``, the training loss along the run for Approach 1:
    ``(tokens seen, mean loss of the batches around then)`` pairs).
    """
    import torch

    runs = plan_sweep(scfg, base_model)
    dev = torch.device(device) if device is not None else None
    # tiny models spend their time in thread synchronisation, not arithmetic: on a CPU the
    # sweep runs on scfg.threads threads (restored afterwards)
    threads = torch.get_num_threads()
    on_cpu = dev.type == "cpu" if dev is not None else not torch.cuda.is_available()
    if scfg.threads and on_cpu:
        torch.set_num_threads(scfg.threads)
    try:
        return _run(runs, scfg, base_train, train_data, val_data, device, progress)
    finally:
        torch.set_num_threads(threads)


def _run(runs, scfg, base_train, train_data, val_data, device, progress) -> list[dict]:
    import torch
    from tqdm.auto import tqdm

    from .model import GPT
    from .train import train

    # the bar advances by each run's FLOPs (in TFLOP), so its time estimate is honest
    # (its total is the same sum as its updates, so it ends at exactly 100%)
    bar = tqdm(total=sum(r["flops_6nd"] / 1e12 for r in runs), unit="TFLOP",
               desc="IsoFLOP sweep", disable=not progress,
               bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} [{elapsed}<{remaining}, "
                          "{rate_fmt}{postfix}]")
    rows = []
    for r in runs:
        mcfg = r.pop("model")
        torch.manual_seed(scfg.seed)
        model = GPT(mcfg)
        tcfg = dataclasses.replace(
            base_train, batch_size=scfg.batch_size, grad_accum=1, max_steps=r["steps"],
            lr=scfg.lr, warmup_steps=max(1, int(scfg.warmup_frac * r["steps"])),
            eval_every=r["steps"], eval_batches=scfg.eval_batches, compile=False, seed=scfg.seed)
        t0 = time.perf_counter()
        result = train(model, train_data, val_data, tcfg, device=device,
                       batch_fn=one_pass_batches(train_data, mcfg.block_size, scfg.seed))
        seconds = time.perf_counter() - t0
        step, loss = result.val_losses[-1]
        assert step == r["steps"], (step, r["steps"])
        tokens_per_step = scfg.batch_size * mcfg.block_size
        rows.append(r | {"loss": float(loss),
                         "train_loss": float(np.mean(result.train_losses[-10:])),
                         "seconds": seconds, "epochs": r["tokens"] / len(train_data),
                         "curve": loss_curve(result.train_losses, tokens_per_step)})
        bar.update(r["flops_6nd"] / 1e12)
        bar.set_postfix(C=f"{r['budget']:.2g}", width=r["n_embd"], loss=f"{loss:.3f}")
    bar.close()
    return rows


def loss_curve(step_losses, tokens_per_step: int, n_points: int = 40) -> list:
    """A run's training-loss curve, smoothed and thinned for Approach 1.

    ``step_losses``: the loss of each step's batch (``TrainResult.train_losses``). In a
    single-epoch run every batch is text the model has not seen, so each is an unbiased but
    noisy estimate of the loss on new text; the curve averages the steps in a window of a
    tenth of the run before each of ``n_points`` log-spaced steps. Returns
    ``[(tokens seen, loss), ...]``, the last point at the end of the run.

    >>> loss_curve([4.0, 3.0, 2.0, 1.0], tokens_per_step=10, n_points=2)
    [(10, 4.0), (40, 1.0)]
    """
    losses = np.asarray(step_losses, float)
    n = losses.size
    if n == 0:
        return []
    steps = np.unique(np.geomspace(1, n, min(n_points, n)).round().astype(int))
    width = max(1, n // 10)
    return [(int(k * tokens_per_step), float(losses[max(0, k - width):k].mean())) for k in steps]


def build_sweep(folder, preset_name: str, scfg, base_model, train_data, val_data) -> dict:
    """The recipe of the ``sweep`` artifact (notebook 03, section 2): :func:`run_sweep` with
    ``TrainConfig()``'s optimiser defaults (so tuning notebook 02's run does not rerun the
    sweep), written to ``folder`` as ``sweep.csv`` (:func:`rows_to_csv`) and ``sweep.json``."""
    import json
    from pathlib import Path

    from .artifacts import atomic_write_text
    from .config import TrainConfig, config_dict

    t0 = time.perf_counter()
    rows = run_sweep(scfg, base_model, TrainConfig(), train_data, val_data)
    seconds = time.perf_counter() - t0
    header = (f"IsoFLOP sweep of llmlab, preset {preset_name}: llmlab.scaling.run_sweep\n"
              f"loss = final validation loss in nats per token of this preset's tokenizer")
    atomic_write_text(Path(folder) / "sweep.csv", rows_to_csv(rows, header))
    atomic_write_text(Path(folder) / "sweep.json", json.dumps(
        {"preset": preset_name, "scaling": config_dict(scfg), "rows": rows}, indent=1))
    return {"runs": len(rows), "sweep_seconds": round(seconds, 1)}


SWEEP_COLUMNS = ("budget", "n_embd", "n_layer", "n_head", "n_params", "tokens", "steps",
                 "tokens_per_param", "flops_6nd", "flops_full", "loss", "train_loss", "seconds",
                 "epochs")


def rows_to_csv(rows: list[dict], header: str = "") -> str:
    """Sweep rows as CSV text (``SWEEP_COLUMNS``), with optional ``# ...`` comment lines first."""
    lines = [f"# {h}" for h in header.splitlines()] if header else []
    lines.append(",".join(SWEEP_COLUMNS))
    for r in rows:
        lines.append(",".join(repr(float(r[c])) if isinstance(r[c], float) else str(r[c])
                              for c in SWEEP_COLUMNS))
    return "\n".join(lines) + "\n"


def read_sweep_csv(path) -> list[dict]:
    """Rows of a sweep CSV written by :func:`rows_to_csv` (``#`` lines are comments)."""
    import csv

    with open(path, newline="") as f:
        reader = csv.DictReader(line for line in f if not line.startswith("#"))
        missing = set(SWEEP_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not a sweep CSV, columns {sorted(missing)} are missing")
        ints = {"n_embd", "n_layer", "n_head", "n_params", "tokens", "steps"}
        return [{k: (int(v) if k in ints else float(v)) for k, v in row.items() if k in SWEEP_COLUMNS}
                for row in reader]


def _columns(rows: list[dict]):
    C = np.array([r["budget"] for r in rows], dtype=float)
    N = np.array([r["n_params"] for r in rows], dtype=float)
    D = np.array([r["tokens"] for r in rows], dtype=float)
    L = np.array([r["loss"] for r in rows], dtype=float)
    return C, N, D, L


# =============================================================================================
# 3a. Approach 1: the envelope of the training curves (Hoffmann et al. 2022, Sec. 3.1)
# =============================================================================================


@dataclass
class EnvelopeFit:
    """Approach 1's result: the lowest loss any run reached at each compute, and its size."""

    flops: np.ndarray         # (g,) compute grid C
    loss: np.ndarray          # (g,) the lowest loss of any training curve at C
    n_params: np.ndarray      # (g,) N of the run that reached it
    sizes: int                # distinct model sizes along the envelope
    a: float                  # N_opt = k_n C^a through the envelope (NaN with fewer than 3 sizes)
    k_n: float


def fit_envelope(rows: list[dict], n_grid: int = 40) -> EnvelopeFit:
    """Approach 1 (Hoffmann et al. 2022, Sec. 3.1): no new runs, only the training curves.

    Every run's curve (``row["curve"]``: tokens seen, loss) is put on a compute axis,
    C = 6 N x tokens seen. On a log-spaced grid from the smallest budget to the largest, the
    envelope is the lowest loss any curve reaches at C (interpolated in log C), and the run
    that reaches it gives N_opt(C); a power law N_opt = k_n C^a is fitted through those points.
    Two caveats a reader should keep: a point in the middle of a cosine schedule lies above
    what a run ending there would reach (the paper used four schedule lengths per size for
    that reason), and with a handful of widths N_opt moves in steps, so ``a`` is reported
    (not NaN) only when the envelope passes through at least 3 sizes.
    """
    C = np.array([r["budget"] for r in rows], float)
    if any(not r.get("curve") for r in rows):
        raise ValueError("fit_envelope needs each run's training curve (row['curve']); "
                         "a sweep read from CSV has none: read sweep.json")
    grid = np.geomspace(C.min(), C.max(), n_grid)
    best = np.full(n_grid, np.inf)
    best_n = np.full(n_grid, np.nan)
    for r in rows:
        tok, loss = np.array(r["curve"], float).T                   # (p,), (p,)
        logc = np.log(6.0 * r["n_params"] * tok)
        inside = (np.log(grid) >= logc[0]) & (np.log(grid) <= logc[-1])
        here = np.interp(np.log(grid[inside]), logc, loss)
        better = here < best[inside]
        idx = np.flatnonzero(inside)[better]
        best[idx] = here[better]
        best_n[idx] = r["n_params"]
    ok = np.isfinite(best_n)
    sizes = int(np.unique(best_n[ok]).size)
    a, k_n = (fit_power_law(grid[ok], best_n[ok]) if sizes >= 3 else (float("nan"), float("nan")))
    return EnvelopeFit(grid, np.where(ok, best, np.nan), best_n, sizes, a, k_n)


# =============================================================================================
# 3. Approach 2: IsoFLOP profiles (Hoffmann et al. 2022, Sec. 3.2)
# =============================================================================================


def fit_parabola(log_n: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares parabola ``loss = c2 x^2 + c1 x + c0`` in x = log N, and its vertex.

    log_n, loss: (k,) with k >= 3. Returns ``(coeffs (3,) highest power first, log_n_opt)``;
    ``log_n_opt`` is NaN when the parabola opens downwards (no minimum).

    >>> c, x = fit_parabola(np.array([0., 1., 2.]), np.array([2., 1., 2.]))
    >>> np.round(c, 6).tolist(), round(float(x), 6)
    ([1.0, -2.0, 2.0], 1.0)
    """
    log_n, loss = np.asarray(log_n, float), np.asarray(loss, float)
    if log_n.shape != loss.shape or log_n.size < 3:
        raise ValueError(f"fit_parabola needs >= 3 matching points, got {log_n.shape} and {loss.shape}")
    coeffs = np.polyfit(log_n, loss, 2)
    x_opt = -coeffs[1] / (2 * coeffs[0]) if coeffs[0] > 0 else float("nan")
    return coeffs, float(x_opt)


def fit_power_law(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least squares in log-log: y = k x^e. Returns ``(e, k)``.

    >>> e, k = fit_power_law(np.array([1., 10., 100.]), np.array([3., 30., 300.]))
    >>> round(e, 6), round(k, 6)
    (1.0, 3.0)
    """
    e, logk = np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)
    return float(e), float(np.exp(logk))


@dataclass
class IsoFLOPFit:
    """Approach 2's result: per-budget minima and the power laws through them."""

    budgets: np.ndarray       # (k,) compute budgets C
    coeffs: np.ndarray        # (k, 3) parabola in log N per budget
    n_opt: np.ndarray         # (k,) N at each parabola's minimum
    d_opt: np.ndarray         # (k,) D_opt = C / (6 N_opt)
    loss_opt: np.ndarray      # (k,) the parabola's minimum loss
    a: float                  # N_opt = k_n C^a
    b: float                  # D_opt = k_d C^b
    k_n: float
    k_d: float

    def n_opt_at(self, C):
        return self.k_n * np.asarray(C, float) ** self.a

    def d_opt_at(self, C):
        return self.k_d * np.asarray(C, float) ** self.b


def fit_isoflop(rows: list[dict]) -> IsoFLOPFit:
    """Approach 2 (Hoffmann et al. 2022, Sec. 3.2): parabolas per budget, then power laws.

    1) for each budget, fit loss against log N with a parabola; its vertex is N_opt(C);
    2) D_opt(C) = C / (6 N_opt), the tokens the budget allows at that size;
    3) fit N_opt = k_n C^a and D_opt = k_d C^b across budgets (a + b = 1 since N D = C / 6).
    Budgets whose parabola has no minimum, or has it outside the sizes that budget trained (the
    ladder did not bracket the optimum), are NaN and left out of step 3; with fewer than 2
    minima left, a, b, k_n and k_d are NaN.
    """
    C, N, _, L = _columns(rows)
    budgets = np.unique(C)
    if budgets.size < 2:
        raise ValueError(f"fit_isoflop needs at least 2 budgets, got {budgets.tolist()}")
    coeffs, n_opt, loss_opt = [], [], []
    for c in budgets:
        sel = C == c
        cf, x = fit_parabola(np.log(N[sel]), L[sel])
        if not np.log(N[sel]).min() <= x <= np.log(N[sel]).max():
            x = float("nan")        # the minimum lies outside the ladder: an extrapolation, not a measurement
        coeffs.append(cf)
        n_opt.append(math.exp(x) if np.isfinite(x) else float("nan"))
        loss_opt.append(float(np.polyval(cf, x)) if np.isfinite(x) else float("nan"))
    n_opt = np.array(n_opt)
    d_opt = budgets / (6 * n_opt)
    ok = np.isfinite(n_opt)
    if ok.sum() < 2:          # no line through fewer than 2 points: the exponents are unknown
        nan = float("nan")
        return IsoFLOPFit(budgets, np.array(coeffs), n_opt, d_opt, np.array(loss_opt), nan, nan, nan, nan)
    a, k_n = fit_power_law(budgets[ok], n_opt[ok])
    b, k_d = fit_power_law(budgets[ok], d_opt[ok])
    return IsoFLOPFit(budgets, np.array(coeffs), n_opt, d_opt, np.array(loss_opt), a, b, k_n, k_d)


def bootstrap_isoflop(rows: list[dict], n_boot: int = 500, seed: int = 0) -> dict:
    """Intervals for Approach 2 by a residual bootstrap.

    Within each budget the parabola's residuals are resampled with replacement and added back
    to its fitted values; the whole fit is redone. (Resampling the runs themselves would often
    leave fewer than 3 distinct sizes in a budget.) Returns arrays ``a``, ``b``, ``n_opt``
    (n_ok, k; NaN where a budget lost its minimum) over the resamples that kept a minimum in at
    least 2 budgets, and ``n_failed``, the number that did not.
    """
    C, N, _, L = _columns(rows)
    rng = np.random.default_rng(seed)
    fitted = np.empty_like(L)
    resid = np.empty_like(L)
    for c in np.unique(C):
        sel = C == c
        cf, _ = fit_parabola(np.log(N[sel]), L[sel])
        fitted[sel] = np.polyval(cf, np.log(N[sel]))
        resid[sel] = L[sel] - fitted[sel]
    a_s, b_s, n_s, failed = [], [], [], 0
    for _ in range(n_boot):
        L_b = fitted.copy()
        for c in np.unique(C):
            idx = np.flatnonzero(C == c)
            L_b[idx] += rng.choice(resid[idx], size=idx.size, replace=True)
        boot_rows = [dict(r, loss=float(l)) for r, l in zip(rows, L_b)]
        fit = fit_isoflop(boot_rows)
        if not np.isfinite(fit.a):
            failed += 1
            continue
        a_s.append(fit.a)
        b_s.append(fit.b)
        n_s.append(fit.n_opt)
    return {"a": np.array(a_s), "b": np.array(b_s), "n_opt": np.array(n_s), "n_failed": failed}


def interval(samples: np.ndarray, lo: float = 10, hi: float = 90) -> tuple[float, float]:
    """The (lo, hi) percentiles of bootstrap samples; Hoffmann et al. report 10th-90th."""
    samples = np.asarray(samples, float)
    if samples.size == 0:
        return (float("nan"), float("nan"))
    return (float(np.percentile(samples, lo)), float(np.percentile(samples, hi)))


# =============================================================================================
# 4. Approach 3: the parametric loss L(N, D) (Hoffmann et al. 2022, Sec. 3.3)
# =============================================================================================


@dataclass(frozen=True)
class ScalingLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, Eq. 2).

    E is the entropy of text (the loss of an infinite model on infinite data); the two terms
    are what a finite model and finite data cost. Losses in nats per token of the fit's data.
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    name: str = ""
    source: str = ""
    at_bound: tuple = ()        # parameters a bounded fit left on a bound (not set by the data)

    def loss(self, N, D):
        """Predicted loss; N, D scalars or arrays of the same shape."""
        N, D = np.asarray(N, float), np.asarray(D, float)
        return self.E + self.A / N ** self.alpha + self.B / D ** self.beta

    @property
    def a(self) -> float:
        """N_opt ∝ C^a with a = beta / (alpha + beta)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """D_opt ∝ C^b with b = alpha / (alpha + beta)."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        """G = (alpha A / (beta B))^(1 / (alpha + beta)) of Eq. 4."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))

    def optimal(self, C):
        """Compute-optimal (N_opt, D_opt) under C = 6 N D, in closed form (Eq. 4).

        N_opt = G (C/6)^a and D_opt = G^-1 (C/6)^b. Derivation: put D = C / 6N into L and set
        dL/dN = 0: alpha A N^-alpha = beta B D^-beta. C scalar or array.
        """
        C6 = np.asarray(C, float) / 6.0
        return self.G * C6 ** self.a, C6 ** self.b / self.G

    def tokens_per_param(self, C):
        """D_opt / N_opt at budget C: G^-2 (C/6)^(b - a); constant only when alpha == beta."""
        N, D = self.optimal(C)
        return D / N

    def params(self) -> np.ndarray:
        return np.array([self.E, self.A, self.B, self.alpha, self.beta])


# Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models"), Sec. 3.3 / Eq. 10.
CHINCHILLA = ScalingLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28, name="Chinchilla",
                        source="Hoffmann et al. 2022, Eq. 10 (rounded as published)")
# Besiroglu, Erdil, Barnett & You 2024 ("Chinchilla Scaling: A replication attempt"), Eq. 4.
EPOCH = ScalingLaw(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658, name="Epoch AI",
                   source="Besiroglu et al. 2024, refit of Chinchilla's own data")


def optimal_numeric(law: ScalingLaw, C: float) -> tuple[float, float]:
    """The test oracle for :meth:`ScalingLaw.optimal`: minimise L(N, C / 6N) over log N.

    A bounded 1-D search (scipy's ``minimize_scalar``) over N in [1, C/6] (D >= 1).
    """
    from scipy.optimize import minimize_scalar

    hi = math.log(C / 6.0)
    res = minimize_scalar(lambda x: float(law.loss(math.exp(x), C / (6.0 * math.exp(x)))),
                          bounds=(0.0, hi), method="bounded",
                          options={"xatol": 1e-10, "maxiter": 2000})
    N = math.exp(res.x)
    return N, C / (6.0 * N)


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss: r^2 / 2 for |r| <= delta, delta (|r| - delta / 2) beyond (Huber 1964).

    Quadratic near zero, linear in the tails, so a few outlier runs cannot dominate the fit.

    >>> huber(np.array([0.5, 3.0]), delta=1.0).tolist()
    [0.125, 2.5]
    """
    r = np.asarray(r, float)
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _objective(theta: np.ndarray, logN: np.ndarray, logD: np.ndarray, logL: np.ndarray,
               delta: float) -> tuple[float, np.ndarray]:
    """Eq. 3 of Hoffmann et al. and its gradient; theta = (a, b, e, alpha, beta), A = exp(a)...

    log L_hat = LSE(a - alpha log N, b - beta log D, e). Divided by delta^2 so the objective is
    O(1) per point (L-BFGS's stopping tests are absolute below 1).
    """
    a, b, e, alpha, beta = theta
    u = np.stack([a - alpha * logN, b - beta * logD, np.full_like(logN, e)])   # (3, n)
    m = u.max(axis=0)                                                          # (n,)
    w = np.exp(u - m)                                                          # (3, n)
    s = w.sum(axis=0)                                                          # (n,)
    lse = m + np.log(s)                                                        # (n,)
    w /= s                                                                     # softmax weights
    r = lse - logL                                                             # (n,)
    scale = 1.0 / delta ** 2
    f = huber(r, delta).sum() * scale
    dr = np.clip(r, -delta, delta) * scale                                     # d huber / d r
    grad = np.array([(dr * w[0]).sum(), (dr * w[1]).sum(), (dr * w[2]).sum(),
                     -(dr * w[0] * logN).sum(), -(dr * w[1] * logD).sum()])
    return float(f), grad


def _objective_grid(thetas: np.ndarray, logN, logD, logL, delta: float) -> np.ndarray:
    """``_objective``'s value at many thetas (G, 5) at once (no gradient): (G,)."""
    a, b, e, alpha, beta = (thetas[:, i:i + 1] for i in range(5))                # (G, 1) each
    u = np.stack([a - alpha * logN, b - beta * logD, np.broadcast_to(e, (len(thetas), logN.size))])
    lse = np.logaddexp.reduce(u, axis=0)                                       # (G, n)
    return huber(lse - logL, delta).sum(axis=1) / delta ** 2                   # (G,)


# Hoffmann et al. 2022, App. D.2: the grid of initialisations for L-BFGS.
PAPER_GRID = {
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
}


def _grid_points(grid: dict) -> np.ndarray:
    mesh = np.meshgrid(grid["a"], grid["b"], grid["e"], grid["alpha"], grid["beta"], indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)                          # (G, 5)


def with_known_entropy(bounds: list, E: float) -> list:
    """``bounds`` (:func:`parametric_bounds`) with E held at a known value: for data whose
    entropy is known, as the world's renderer knows its own (notebook 03). L-BFGS-B keeps a
    variable whose bounds are equal fixed; the fit then reports E as "at bound", which here
    means "given", not "not identified"."""
    out = list(bounds)
    out[2] = (math.log(E), math.log(E))
    return out


def parametric_bounds(L, e_floor_frac: float = 0.01, exponent_range=(0.05, 2.5),
                      log_coef_range=(-10.0, 60.0)) -> list[tuple[float, float]]:
    """Bounds on theta = (log A, log B, log E, alpha, beta) for :func:`fit_parametric`.

    The physically meaningful region: E is positive and below the smallest loss measured
    (``e_floor_frac * min(L) <= E <= min(L)``; a law whose floor lies above a measured loss
    contradicts that run), the exponents lie in ``exponent_range`` (published fits are
    0.28-0.37; an exponent near 0 or far above 2 is a symptom of too few runs, not a law),
    and log A, log B in ``log_coef_range``. A fitted parameter that ends on one of these
    bounds was set by the bound, not by the data: :func:`identification` reports it.
    """
    L = np.asarray(L, float)
    lmin = float(L.min())
    return [log_coef_range, log_coef_range, (math.log(e_floor_frac * lmin), math.log(lmin)),
            exponent_range, exponent_range]


PARAM_NAMES = ("E", "A", "B", "alpha", "beta")


def fit_parametric(N, D, L, delta: float = 1e-3, grid: dict | None = None, n_starts: int = 10,
                   extra_starts=(), name: str = "fit", bounds=None) -> tuple[ScalingLaw, float]:
    """Approach 3 (Hoffmann et al. 2022, Sec. 3.3, Eq. 3): fit E, A, B, alpha, beta.

    Minimises sum_i Huber_delta(log L_hat(N_i, D_i) - log L_i) with L-BFGS (scipy's L-BFGS-B),
    starting from a grid of initialisations (``PAPER_GRID`` by default: 4500 points, App. D.2).
    Unlike the paper, which runs L-BFGS from every grid point, the objective is first
    evaluated at all of them and L-BFGS starts from the ``n_starts`` best (``n_starts=None``
    runs all); ``extra_starts`` are added as (E, A, B, alpha, beta) tuples. Unlike the paper,
    the search is bounded to :func:`parametric_bounds` (default): with a few small runs the
    unbounded optimum can send E to 0 (log E to minus infinity) and an exponent past 2.
    Returns the best :class:`ScalingLaw` and its objective value; the law's ``at_bound``
    names the parameters that ended on a bound.
    N, D, L: (n,) arrays of parameters, tokens and final losses.
    """
    from scipy.optimize import minimize

    N, D, L = (np.asarray(v, float) for v in (N, D, L))
    if not (N.shape == D.shape == L.shape) or N.size < 5:
        raise ValueError(f"fit_parametric needs >= 5 runs with matching N, D, L; got shapes "
                         f"{N.shape}, {D.shape}, {L.shape}")
    if np.any(N <= 0) or np.any(D <= 0) or np.any(L <= 0) or not np.all(np.isfinite(L)):
        raise ValueError("fit_parametric: N, D and L must all be positive and finite")
    bounds = parametric_bounds(L) if bounds is None else bounds
    lo, hi = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    starts = np.clip(_grid_points(grid or PAPER_GRID), lo, hi)                  # (G, 5)
    if n_starts is not None and n_starts < len(starts):
        f0 = _objective_grid(starts, logN, logD, logL, delta)
        starts = starts[np.argsort(f0)[:n_starts]]
    extra = [np.clip(np.array([math.log(max(A, 1e-300)), math.log(max(B, 1e-300)),
                               math.log(max(E, 1e-300)), al, be]), lo, hi)
             for E, A, B, al, be in extra_starts]
    if extra:
        starts = np.vstack([starts, np.array(extra)])
    if len(starts) == 0:
        raise ValueError("fit_parametric: no starting points (n_starts=0 and no extra_starts)")
    best = None
    for t0 in starts:
        res = minimize(_objective, t0, args=(logN, logD, logL, delta), jac=True, bounds=bounds,
                       method="L-BFGS-B", options={"maxiter": 1000, "gtol": 1e-7, "ftol": 1e-13})
        if best is None or res.fun < best.fun:
            best = res
    a, b, e, alpha, beta = best.x
    tol = 1e-6 * np.maximum(1.0, np.abs(hi - lo))
    theta_order = ("A", "B", "E", "alpha", "beta")
    at_bound = tuple(n for n, x, l_, h_, t in zip(theta_order, best.x, lo, hi, tol)
                     if x - l_ <= t or h_ - x <= t)
    law = ScalingLaw(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=float(alpha),
                     beta=float(beta), name=name, source="Approach 3 fit (Huber, L-BFGS-B, bounded)",
                     at_bound=at_bound)
    return law, float(best.fun)


def identification(law: ScalingLaw, samples: np.ndarray | None = None, at_bound: dict | None = None,
                   max_ratio: float = 10.0, max_exponent_spread: float = 0.5,
                   max_at_bound: float = 0.25) -> dict:
    """Which of the law's parameters the data pin down: ``{name: None or the reason not}``.

    A parameter is *not identified* when the fit left it on a bound of
    :func:`parametric_bounds`, when the bootstrap (``samples`` (n_boot, 5) and ``at_bound``,
    the shares from ``bootstrap_parametric(..., return_at_bound=True)``) put it on a bound in
    more than ``max_at_bound`` of the resamples,
    or when their 10-90% interval spans more than a factor ``max_ratio`` (E, A, B) or more
    than ``max_exponent_spread`` (alpha, beta). Print such a parameter as "not identified",
    never as a number.
    """
    out = {}
    for i, name in enumerate(PARAM_NAMES):
        reason = None
        if name in law.at_bound:
            reason = "the fit ended on its bound"
        elif at_bound and at_bound.get(name, 0.0) > max_at_bound:
            reason = f"{at_bound[name]:.0%} of bootstrap fits ended on its bound"
        elif samples is not None and len(samples):
            lo, hi = interval(samples[:, i])
            if name in ("E", "A", "B"):
                if not (lo > 0) or hi / lo > max_ratio:
                    reason = f"bootstrap 10-90% spans {lo:.3g} to {hi:.3g}"
            elif hi - lo > max_exponent_spread:
                reason = f"bootstrap 10-90% spans {lo:.3g} to {hi:.3g}"
        out[name] = reason
    return out


def bootstrap_parametric(N, D, L, n_boot: int = 100, seed: int = 0, delta: float = 1e-3,
                         start: ScalingLaw | None = None, n_starts: int = 2,
                         return_at_bound: bool = False, bounds=None):
    """Intervals for Approach 3: refit on runs resampled with replacement.

    Each resample starts L-BFGS from ``start`` (the full-data fit) and the ``n_starts`` best
    grid points, within the full data's bounds (or ``bounds``, as :func:`fit_parametric` takes
    them). Returns (n_boot, 5) samples of (E, A, B, alpha, beta), and with ``return_at_bound``
    also each parameter's share of resamples that ended on a bound (a dict).
    """
    N, D, L = (np.asarray(v, float) for v in (N, D, L))
    rng = np.random.default_rng(seed)
    extra = [tuple(start.params())] if start is not None else []
    bounds = parametric_bounds(L) if bounds is None else bounds
    out, hits = [], {n: 0 for n in PARAM_NAMES}
    for _ in range(n_boot):
        idx = rng.integers(0, N.size, N.size)
        law, _ = fit_parametric(N[idx], D[idx], L[idx], delta=delta, n_starts=n_starts,
                                extra_starts=extra, bounds=bounds)
        out.append(law.params())
        for n in law.at_bound:
            hits[n] += 1
    samples = np.array(out)
    if return_at_bound:
        return samples, {n: h / max(n_boot, 1) for n, h in hits.items()}
    return samples


# =============================================================================================
# 5. The published fits and the frontier
# =============================================================================================

# Published parameter and token counts (params, training tokens); sources in "source".
FRONTIER = (
    {"name": "GPT-3", "params": 175e9, "tokens": 300e9, "year": 2020,
     "source": "Brown et al. 2020, Language Models are Few-Shot Learners, Table 2.2 / Sec. 2.2"},
    {"name": "Gopher", "params": 280e9, "tokens": 300e9, "year": 2021,
     "source": "Rae et al. 2021, Scaling Language Models: Methods, Analysis & Insights from Training Gopher"},
    {"name": "MT-NLG", "params": 530e9, "tokens": 270e9, "year": 2022,
     "source": "Smith et al. 2022, Using DeepSpeed and Megatron to Train Megatron-Turing NLG 530B"},
    {"name": "PaLM", "params": 540e9, "tokens": 780e9, "year": 2022,
     "source": "Chowdhery et al. 2022, PaLM: Scaling Language Modeling with Pathways"},
    {"name": "Chinchilla", "params": 70e9, "tokens": 1.4e12, "year": 2022,
     "source": "Hoffmann et al. 2022, Training Compute-Optimal Large Language Models"},
    {"name": "LLaMA-65B", "params": 65e9, "tokens": 1.4e12, "year": 2023,
     "source": "Touvron et al. 2023, LLaMA: Open and Efficient Foundation Language Models"},
    {"name": "Llama-2 70B", "params": 70e9, "tokens": 2.0e12, "year": 2023,
     "source": "Touvron et al. 2023, Llama 2: Open Foundation and Fine-Tuned Chat Models"},
    {"name": "Llama-2 7B", "params": 7e9, "tokens": 2.0e12, "year": 2023,
     "source": "Touvron et al. 2023, Llama 2: Open Foundation and Fine-Tuned Chat Models"},
    {"name": "Llama-3 8B", "params": 8e9, "tokens": 15e12, "year": 2024,
     "source": "Meta 2024, The Llama 3 Herd of Models (over 15T tokens)"},
    {"name": "Llama-3 70B", "params": 70e9, "tokens": 15e12, "year": 2024,
     "source": "Meta 2024, The Llama 3 Herd of Models (over 15T tokens)"},
    {"name": "Llama-3.1 405B", "params": 405e9, "tokens": 15.6e12, "year": 2024,
     "source": "Meta 2024, The Llama 3 Herd of Models, Sec. 3"},
)


def rounding_sensitivity(law: ScalingLaw, C: float, step: float = 0.005) -> dict:
    """How much tokens-per-parameter at budget C moves when alpha or beta moves by ``step``.

    Published exponents are rounded to two decimals (a change of up to 0.005); the exponent of
    D/N in C is (alpha - beta) / (alpha + beta), so at large C a small shift of either moves
    the ratio a lot. Returns the ratio at the law itself and at alpha +- step, beta -+ step.
    """
    out = {"law": float(law.tokens_per_param(C))}
    for sa, sb, key in ((+step, -step, "alpha+ beta-"), (-step, +step, "alpha- beta+")):
        moved = dataclasses.replace(law, alpha=law.alpha + sa, beta=law.beta + sb)
        out[key] = float(moved.tokens_per_param(C))
    return out


# =============================================================================================
# 6. The calculator (notebook 03, section 6; the widget is llmlab.widgets.chinchilla)
# =============================================================================================


def flops_from_gpus(gpu: str, n_gpus: int, days: float, mfu: float) -> float:
    """A budget in FLOPs: n_gpus x days at ``mfu`` of the GPU's peak.

    >>> flops_from_gpus("H100", 1, 1.0, 1.0) == 989e12 * 86400
    True
    """
    if n_gpus < 1 or days <= 0:
        raise ValueError(f"need n_gpus >= 1 and days > 0, got n_gpus={n_gpus}, days={days}")
    return _peak(gpu) * n_gpus * days * SECONDS_PER_DAY * _check_mfu(mfu)


def flops_from_dollars(dollars: float, price_per_gpu_hour: float, gpu: str, mfu: float) -> float:
    """A budget in FLOPs: the GPU-hours ``dollars`` buy at ``price_per_gpu_hour``, at ``mfu``.

    >>> flops_from_dollars(2.0, 2.0, "A100", 0.5) == 312e12 * 3600 * 0.5
    True
    """
    if dollars <= 0 or price_per_gpu_hour <= 0:
        raise ValueError(f"dollars and price per GPU-hour must be positive, got {dollars}, "
                         f"{price_per_gpu_hour}")
    gpu_hours = dollars / price_per_gpu_hour
    return _peak(gpu) * gpu_hours * 3600.0 * _check_mfu(mfu)


def training_days(flops: float, gpu: str, n_gpus: int, mfu: float) -> float:
    """Wall-clock days to spend ``flops`` on ``n_gpus`` GPUs at ``mfu``."""
    return gpu_days(flops, gpu, mfu) / n_gpus


def plan(law: ScalingLaw, flops: float, gpu: str = "H100", n_gpus: int = 1, mfu: float = 0.4,
         size_factor: float = 1.0) -> dict:
    """The calculator: what to train with ``flops`` under ``law`` (notebook 03, section 6).

    Returns the compute-optimal N, D, tokens per parameter and predicted loss, the training
    time on ``n_gpus`` x ``gpu`` at ``mfu``, and -- for ``size_factor`` < 1, the over-training
    mode for models that will serve much inference -- the same budget spent on a model
    ``size_factor`` times the optimal size: its tokens, its loss, the loss given up, the
    compute it would need to match the optimal loss (inf when it never can) and how much
    cheaper each generated token is (inference costs about 2N FLOPs per token).
    """
    if flops <= 0:
        raise ValueError(f"the budget must be positive, got {flops!r} FLOPs")
    if not 0 < size_factor <= 1:
        raise ValueError(f"size_factor must be in (0, 1], got {size_factor!r}")
    N, D = (float(v) for v in law.optimal(flops))
    loss = float(law.loss(N, D))
    out = {"law": law.name, "flops": float(flops), "n_opt": N, "d_opt": D,
           "tokens_per_param": D / N, "loss": loss,
           "days": training_days(flops, gpu, n_gpus, mfu),
           "gpu_days": gpu_days(flops, gpu, mfu)}
    n_small = N * size_factor
    d_small = flops / (6.0 * n_small)
    loss_small = float(law.loss(n_small, d_small))
    out.update({"n_small": n_small, "d_small": d_small, "tokens_per_param_small": d_small / n_small,
                "loss_small": loss_small, "loss_given_up": loss_small - loss,
                "flops_to_match": flops_to_match(law, n_small, loss),
                "inference_saving": 1.0 / size_factor})
    return out


def flops_to_match(law: ScalingLaw, n_params: float, target_loss: float) -> float:
    """Compute a model of ``n_params`` needs to reach ``target_loss`` (inf if it never can).

    Solve B / D^beta = target - E - A / N^alpha for D, then C = 6 N D.
    """
    room = target_loss - law.E - law.A / n_params ** law.alpha
    if room <= 0:
        return float("inf")
    D = (law.B / room) ** (1.0 / law.beta)
    return flops_6nd(n_params, D)
