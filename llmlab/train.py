"""Pretraining: the loop from the series' overview grown into a real one (notebook 02, "Training").

The overview's loop is five lines::

    for step in range(max_steps):
        x, y = get_batch(train_data)          # y is x shifted by one token
        logits, loss = model(x, y)            # next-token cross-entropy
        loss.backward(); opt.step(); opt.zero_grad()

:func:`train` adds, one numbered step at a time: AdamW with weight-decay groups
(:func:`configure_optimizer`), warmup plus cosine learning rate (:func:`lr_at`), gradient
accumulation and clipping, mixed precision per ``llmlab.device``'s rules, periodic validation
(:func:`estimate_loss`), checkpoints that resume exactly (:func:`save_checkpoint`,
:func:`load_checkpoint`), tokens per second and MFU, optional ``torch.compile``, and
DistributedDataParallel when launched with ``torchrun`` (section "Beyond one machine")::

    torchrun --nproc_per_node=2 -m llmlab train --preset smoke --train-bin train.bin --val-bin val.bin

(the command line lives in ``llmlab/__main__.py``).

Batches: every process draws the same *global* micro-batch of ``batch_size * world_size``
windows from one seeded generator and keeps its own slice, so N processes with ``batch_size=b``
see exactly the batches one process with ``batch_size=N*b`` sees.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from . import packing
from .artifacts import atomic_write_bytes
from .config import ModelConfig, TrainConfig
from .device import (GPU_PEAKS, autocast, choose_precision, gpu_peak, grad_scaler,  # noqa: F401
                     measured_matmul_peak, peak_flops, pick_device, seed_everything, timed)
from .model import GPT, build_model, model_kind

# --------------------------------------------------------------------------------------------
# Optimiser and schedule (pure pieces)
# --------------------------------------------------------------------------------------------


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay the weight matrices of Linear layers; not biases, norms, embeddings.

    Decay pulls weights towards zero; on a LayerNorm gain or a bias that only fights the
    model, and on embeddings it shrinks rare tokens' vectors (nanoGPT, GPT-3 appendix B).
    The tied head is the token embedding, so it is not decayed either.
    """
    no_decay = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, (nn.Embedding, nn.LayerNorm)) or name == "bias":
                no_decay.add(id(p))
    decay, keep = [], []
    for _, p in model.named_parameters():   # named_parameters lists the tied weight once
        if p.requires_grad:
            (keep if id(p) in no_decay else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": keep, "weight_decay": 0.0}]


def configure_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) with :func:`param_groups`; betas (0.9, 0.95) as GPT-3."""
    device_type = next(model.parameters()).device.type
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95),
                             eps=1e-8, fused=device_type == "cuda")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at optimiser step ``step``: linear warmup, then cosine down to a floor.

    ``lr * (step + 1) / warmup`` for ``step < warmup``; then
    ``min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2`` with progress from 0 to 1 at
    ``max_steps`` (Loshchilov & Hutter 2017, Eq. 5); ``min_lr`` after the end.

    >>> c = TrainConfig(lr=1.0, warmup_steps=10, max_steps=110, min_lr_frac=0.1)
    >>> lr_at(0, c), lr_at(9, c), lr_at(10, c), round(lr_at(60, c), 3), lr_at(110, c)
    (0.1, 1.0, 1.0, 0.55, 0.1)
    """
    min_lr = cfg.lr * cfg.min_lr_frac
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if step >= cfg.max_steps:
        return min_lr
    progress = (step - cfg.warmup_steps) / max(cfg.max_steps - cfg.warmup_steps, 1)
    return min_lr + (cfg.lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def fine_tune_config(train_cfg: TrainConfig, *, lr: float, max_steps: int, batch_size: int,
                     warmup_steps: int = 0, weight_decay: float = 0.0, eval_every: int | None = None,
                     eval_batches: int | None = None, seed: int | None = None) -> TrainConfig:
    """Pretraining's :class:`TrainConfig` turned into a fine-tuning stage's: its own rate,
    budget and batch, one micro-batch per step, no compile. Every later stage (SFT, reward
    model, DPO) builds its optimiser config here instead of copying fields.

    >>> c = fine_tune_config(TrainConfig(), lr=1e-4, max_steps=50, batch_size=4)
    >>> c.lr, c.max_steps, c.batch_size, c.grad_accum, c.eval_every
    (0.0001, 50, 4, 1, 50)
    """
    return dataclasses.replace(
        train_cfg, lr=lr, max_steps=max_steps, batch_size=batch_size, grad_accum=1,
        warmup_steps=warmup_steps, weight_decay=weight_decay, compile=False,
        eval_every=max_steps if eval_every is None else eval_every,
        eval_batches=train_cfg.eval_batches if eval_batches is None else eval_batches,
        seed=train_cfg.seed if seed is None else seed)


# --------------------------------------------------------------------------------------------
# Measuring: validation loss, throughput, MFU
# --------------------------------------------------------------------------------------------


def random_batch(data, batch_size: int, block_size: int, generator: torch.Generator):
    """The default batch function: ``llmlab.packing.get_batch`` on a 1-D token array."""
    return packing.get_batch(data, batch_size, block_size, generator=generator)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper and/or a ``torch.compile`` wrapper."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def lm_loss(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
    """The default objective, next-token prediction: ``batch = (x, y)``, both (B, T).

    Every objective has this form, ``loss_fn(model, batch) -> (loss, metrics)``: SFT's masked
    loss is this one with -100 targets on the prompt, the reward model's pairwise loss and
    DPO's loss are others (notebooks 05 and 07). ``metrics`` maps names to floats.
    """
    x, y = batch
    _, loss = model(x, y)
    return loss, {}


def to_device(batch, device):
    """Move every tensor of a batch (a tensor, or a tuple/list/dict of them) to ``device``."""
    if torch.is_tensor(batch):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def shard(batch, rank: int, size: int):
    """Rows ``rank * size : (rank + 1) * size`` of every tensor in a batch (a DDP process's share)."""
    if torch.is_tensor(batch):
        return batch[rank * size:(rank + 1) * size]
    if isinstance(batch, dict):
        return {k: shard(v, rank, size) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard(v, rank, size) for v in batch)
    return batch


def batch_tokens(batch) -> int:
    """Tokens in a batch, for throughput: the elements of its first tensor."""
    if torch.is_tensor(batch):
        return batch.numel()
    first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
    return batch_tokens(first)


@torch.no_grad()
def estimate(model: nn.Module, data, cfg: TrainConfig, device=None, batches: int | None = None,
             batch_fn: Callable | None = None, seed: int | None = None,
             loss_fn: Callable | None = None) -> tuple[float, dict]:
    """Mean loss and mean metrics over ``batches`` (default ``cfg.eval_batches``) fixed random
    batches of ``data``, for any objective ``loss_fn`` (default :func:`lm_loss`).

    The batches come from their own generator seeded with ``seed`` (default ``cfg.seed + 1``),
    so every estimate in a run looks at the same batches and the training order is untouched.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    batches = cfg.eval_batches if batches is None else batches
    block = unwrap(model).config.block_size
    batch_fn = batch_fn or (lambda d, b, g: random_batch(d, b, block, g))
    loss_fn = loss_fn or lm_loss
    gen = torch.Generator().manual_seed(cfg.seed + 1 if seed is None else seed)
    precision = choose_precision(device)
    was_training = model.training
    model.eval()
    losses, metrics = [], {}
    for _ in range(batches):
        batch = to_device(batch_fn(data, cfg.batch_size, gen), device)
        with autocast(device, precision):
            loss, m = loss_fn(model, batch)
        losses.append(loss.item())
        for k, v in m.items():
            metrics.setdefault(k, []).append(float(v))
    model.train(was_training)
    return float(np.mean(losses)), {k: float(np.mean(v)) for k, v in metrics.items()}


def estimate_loss(model: nn.Module, data, cfg: TrainConfig, device=None, batches: int | None = None,
                  batch_fn: Callable | None = None, seed: int | None = None,
                  loss_fn: Callable | None = None) -> float:
    """The loss part of :func:`estimate`."""
    return estimate(model, data, cfg, device, batches, batch_fn, seed, loss_fn)[0]


@torch.no_grad()
def loss_over(model: nn.Module, data, batch_size: int = 32, device=None) -> float:
    """Mean next-token loss over *all* of ``data``, cut into consecutive windows (no sampling).

    Every token after the first is predicted once (the tail shorter than a window included),
    so the result is the exact per-token cross-entropy of the file in nats.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    block = unwrap(model).config.block_size
    arr = torch.from_numpy(np.asarray(data, dtype=np.int64))
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    n_full = (len(arr) - 1) // block
    xs = arr[:n_full * block].view(n_full, block)                                       # (N, T)
    ys = arr[1:n_full * block + 1].view(n_full, block)                                  # (N, T)
    chunks = [(xs[i:i + batch_size], ys[i:i + batch_size]) for i in range(0, n_full, batch_size)]
    if len(arr) - 1 > n_full * block:                                                   # the tail
        chunks.append((arr[n_full * block:-1].unsqueeze(0), arr[n_full * block + 1:].unsqueeze(0)))
    for x, y in chunks:
        _, loss = model(x.to(device), y.to(device))
        total += loss.item() * y.numel()
        count += y.numel()
    model.train(was_training)
    return total / max(count, 1)


def time_forward_backward(fn: Callable, shape: tuple, repeats: int = 7, n: int = 10,
                          device=None, seed: int = 0) -> float:
    """Median milliseconds of ``fn(x).backward(g)`` on a random fp32 tensor of ``shape``.

    Each of ``repeats`` measurements averages ``n`` calls, after 3 warm-up calls; the median
    keeps one slow measurement on a shared machine from moving the result. On a GPU the clock
    stops only after the device has finished.
    """
    device = torch.device(device or "cpu")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen).to(device).requires_grad_()
    g = torch.randn(*shape, generator=gen).to(device)

    def n_calls():
        for _ in range(n):
            fn(x).backward(g)

    for _ in range(3):
        fn(x).backward(g)
    _, seconds = timed(n_calls, repeats=repeats, device=device)
    return 1000.0 * seconds / n


def bits_per_byte(loss_nats: float, n_tokens: int, n_bytes: int) -> float:
    """Cross-entropy per byte in bits: ``loss / ln 2 * tokens / bytes``, comparable across
    tokenizers (and with the world's renderer entropy).

    >>> round(bits_per_byte(math.log(2), 100, 400), 3)   # 1 bit per token, 4 bytes per token
    0.25
    """
    return loss_nats / math.log(2) * n_tokens / n_bytes


def bytes_of_tokens(tokenizer, ids) -> int:
    """Bytes of text behind token ids; each end-of-text token counts as one byte (a separator)."""
    ids = [int(t) for t in ids]
    text = [t for t in ids if t != tokenizer.eot_id]
    return len(tokenizer.decode_bytes(text)) + (len(ids) - len(text))


def mfu(flops_per_token: float, tokens_per_sec: float, peak: float) -> float:
    """Model FLOPs utilisation (PaLM, appendix B): achieved training FLOP/s over the peak.

    >>> mfu(6e6, 1e4, 1.2e11)
    0.5
    """
    return flops_per_token * tokens_per_sec / peak


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, model: nn.Module, optimizer=None, state: dict | None = None) -> None:
    """Write the model (with its config), the optimiser and the loop's ``state`` atomically."""
    m = unwrap(model)
    ckpt = {"model_config": dataclasses.asdict(m.config), "kind": model_kind(m),
            "model": m.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "state": state or {}}
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(path: Path, model: nn.Module | None = None, optimizer=None, device=None):
    """Read a checkpoint; returns ``(model, ckpt)``.

    Without ``model`` a new model of the stored kind (a :class:`~llmlab.model.GPT`, or a
    reward or value :class:`~llmlab.model.ScalarModel`) is built from the stored config; with
    one, its weights are replaced (and the optimiser's state when ``optimizer`` is given).
    A truncated or corrupted file is an error that names it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for a cut-off zip
        raise ValueError(f"checkpoint {path} is truncated or corrupted ({type(e).__name__}: {e}); "
                         f"delete it and train again") from e
    kind = ckpt.get("kind", "lm")
    if model is None:
        model = build_model(ModelConfig(**ckpt["model_config"]), kind)
    elif model_kind(unwrap(model)) != kind:
        raise ValueError(f"checkpoint {path} holds a {kind!r} model, not a "
                         f"{model_kind(unwrap(model))!r} one")
    unwrap(model).load_state_dict(ckpt["model"])
    if optimizer is not None and ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if device is not None:
        model.to(device)
    return model, ckpt


# --------------------------------------------------------------------------------------------
# Distributed bookkeeping (kept out of the loop's math)
# --------------------------------------------------------------------------------------------


@dataclass
class Dist:
    """Where this process sits in a ``torchrun`` launch (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def master(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); no-op without one."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _all_mean(value: float, d: Dist, device) -> float:
    if not d.enabled:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / d.world_size


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def train_simple(model: nn.Module, train_data, steps: int, lr: float = 1e-3, batch_size: int = 8,
                 seed: int = 0, batch_fn: Callable | None = None,
                 loss_fn: Callable | None = None) -> list[float]:
    """The overview's five-line loop, runnable (notebook 02, "Training"); returns the losses.

    Plain AdamW at a constant rate, no weight decay, no clipping, fp32, one batch per step.
    Batches come from a generator seeded with ``seed`` exactly as in :func:`train`, so with the
    same model, ``TrainConfig(lr=lr, warmup_steps=0, min_lr_frac=1.0, weight_decay=0.0,
    grad_clip=0.0, seed=seed)`` the full loop makes the same updates: this loop is its test oracle.
    """
    block = unwrap(model).config.block_size
    batch_fn = batch_fn or (lambda data, b, g: random_batch(data, b, block, g))
    loss_fn = loss_fn or lm_loss
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        batch = batch_fn(train_data, batch_size, gen)   # (x, y), each (B, T); y is x shifted by one
        loss, _ = loss_fn(model, batch)                 # next-token cross-entropy
        loss.backward(); opt.step(); opt.zero_grad()    # noqa: E702 (the overview's line)
        losses.append(loss.item())
    return losses


@dataclass
class TrainResult:
    """What :func:`train` measured."""

    steps: int                                        # optimiser steps taken in total
    train_losses: list = field(default_factory=list)  # per step: mean loss of its micro-batches
    val_losses: list = field(default_factory=list)    # (step, validation loss)
    train_metrics: list = field(default_factory=list) # per step: the objective's metrics (dict)
    val_metrics: list = field(default_factory=list)   # (step, the objective's validation metrics)
    lrs: list = field(default_factory=list)           # per step: the learning rate used
    tokens_per_sec: float = 0.0                       # training tokens per second (all processes)
    mfu: float = 0.0                                  # model FLOPs utilisation
    wall_seconds: float = 0.0                         # wall time of this call
    tokens: int = 0                                   # training tokens seen in total
    precision: str = "fp32"                           # fp32, bf16 or fp16
    world_size: int = 1                               # processes (DDP)
    stopped_early: bool = False                       # the callback stopped the run

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def train(model: nn.Module, train_data, val_data, cfg: TrainConfig, device=None,
          callback: Callable | None = None, checkpoint_path: Path | None = None,
          resume: bool = False, batch_fn: Callable | None = None, stop_after: int | None = None,
          progress: bool = False, loss_fn: Callable | None = None) -> TrainResult:
    """Train ``model`` on ``train_data`` for ``cfg.max_steps`` optimiser steps (notebook 02).

    - ``train_data``, ``val_data``: 1-D token arrays (``llmlab.packing.load_tokens``), or any
      data ``batch_fn(data, batch_size, generator) -> batch`` understands (notebook 04 passes
      its own batches, with ``-100`` targets on the prompt). A batch is a tensor or a
      tuple/list/dict of tensors whose first dimension is the batch.
    - ``loss_fn(model, batch) -> (loss, metrics)``: the objective (default :func:`lm_loss`,
      next-token prediction). The loop owns everything else: precision, scaler, accumulation,
      clipping, schedule, resume, DDP.
    - ``callback(step, info)`` after every step; ``info`` has ``loss``, ``lr`` and, on
      evaluation steps, ``val_loss``. The notebook's live loss plot is one. A callback that
      returns ``False`` or raises ``StopIteration`` stops the run cleanly after that step:
      the checkpoint is written (so ``resume=True`` continues from it) and the result says
      ``stopped_early``.
    - ``checkpoint_path``: written at every evaluation and at the end; with ``resume=True``
      training continues from it exactly as an uninterrupted run would (weights, optimiser,
      step, batch order and random state are all restored).
    - ``stop_after``: stop after this many steps in total (an interruption, for the resume test).
    """
    t_start = time.perf_counter()
    device = pick_device(device) if not isinstance(device, torch.device) else device
    d = init_distributed(device)
    if d.enabled and device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    precision = choose_precision(device)
    base = unwrap(model)
    base.to(device)
    block = base.config.block_size
    batch_fn = batch_fn or (lambda data, b, g: random_batch(data, b, block, g))

    # 1) optimiser, mixed-precision scaler, batch generator
    optimizer = configure_optimizer(base, cfg)
    scaler = grad_scaler(device, precision)
    gen = torch.Generator().manual_seed(cfg.seed)
    result = TrainResult(steps=0, precision=precision.name, world_size=d.world_size)
    step = 0
    if resume:
        if checkpoint_path is None or not Path(checkpoint_path).exists():
            raise FileNotFoundError(f"resume=True but there is no checkpoint at {checkpoint_path}")
        _, ckpt = load_checkpoint(checkpoint_path, base, optimizer)
        st = ckpt["state"]
        step = st["step"]
        gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        if st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        for k in ("train_losses", "val_losses", "lrs", "train_metrics", "val_metrics"):
            setattr(result, k, [tuple(v) if k in ("val_losses", "val_metrics") else v
                                for v in st.get(k, [])])
        result.tokens = st["tokens"]

    # 2) wrappers: compile, then DDP
    run_model = base
    if cfg.compile:
        run_model = torch.compile(base)
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        run_model = DDP(run_model, device_ids=[device.index] if device.type == "cuda" else None)
    peak = peak_flops(device, precision.name)
    flops_tok = base.flops_per_token()

    loss_fn = loss_fn or lm_loss

    def evaluate() -> float:
        loss, metrics = estimate(base, val_data, cfg, device, batch_fn=batch_fn, loss_fn=loss_fn)
        result.val_metrics.append((step, metrics))
        return loss

    def checkpoint() -> None:
        if checkpoint_path is not None and d.master:
            save_checkpoint(checkpoint_path, base, optimizer, {
                "step": step, "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                "scaler": scaler.state_dict() if precision.use_scaler else None,
                "train_losses": result.train_losses, "val_losses": result.val_losses,
                "train_metrics": result.train_metrics, "val_metrics": result.val_metrics,
                "lrs": result.lrs, "tokens": result.tokens, "train_config": dataclasses.asdict(cfg)})

    if step == 0:
        result.val_losses.append((0, evaluate()))
    bar = None
    if progress and d.master:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, initial=step, desc="training", unit="step")
    last = cfg.max_steps if stop_after is None else min(stop_after, cfg.max_steps)
    train_time, n_timed, n_steps_run, tokens_timed = 0.0, 0, 0, 0
    run_model.train()
    while step < last:
        t0 = time.perf_counter()
        # 3) learning rate of this step
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # 4) the micro-batches of this step: every process draws the global batch, keeps its rows
        micro_batches = []
        for _ in range(cfg.grad_accum):
            batch = batch_fn(train_data, cfg.batch_size * d.world_size, gen)   # global (N*B, ...)
            micro_batches.append(to_device(shard(batch, d.rank, cfg.batch_size), device))  # (B, ...)
        # 5) forward, backward, clip, optimiser step
        step_loss, step_metrics = train_step(run_model, optimizer, scaler, micro_batches, loss_fn,
                                             cfg.grad_clip, precision, device, step, d.enabled)
        step_tokens = sum(batch_tokens(b) for b in micro_batches) * d.world_size
        step += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if n_steps_run > 0:             # the first step pays for compilation and warm-up
            train_time += time.perf_counter() - t0
            n_timed += 1
        n_steps_run += 1
        # 6) bookkeeping: losses, throughput, evaluation, checkpoint, callback
        step_loss = _all_mean(step_loss, d, device)
        result.train_losses.append(step_loss)
        result.train_metrics.append(step_metrics)
        result.lrs.append(lr)
        result.tokens += step_tokens
        tokens_timed += step_tokens if n_steps_run > 1 else 0
        info = {"loss": step_loss, "lr": lr, **step_metrics}
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            info["val_loss"] = evaluate()
            result.val_losses.append((step, info["val_loss"]))
            checkpoint()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}", **({"val": f"{info['val_loss']:.3f}"}
                                                        if "val_loss" in info else {}))
        if callback is not None and _callback_stops(callback, step, info, d, device):
            result.stopped_early = True
            break
    if bar is not None:
        bar.close()
    if result.val_losses[-1][0] != step:
        checkpoint()   # an interrupted run (stop_after) leaves its state to resume from
    result.steps = step
    result.tokens_per_sec = tokens_timed / train_time if n_timed else 0.0
    result.mfu = mfu(flops_tok, result.tokens_per_sec / d.world_size, peak)
    result.wall_seconds = time.perf_counter() - t_start
    return result


def train_step(model: nn.Module, optimizer, scaler, micro_batches: list, loss_fn: Callable,
               grad_clip: float, precision, device, step: int = 0, ddp: bool = False
               ) -> tuple[float, dict]:
    """One optimiser step of :func:`train` (notebook 02, "Training"): the overview's
    ``loss.backward(); opt.step(); opt.zero_grad()`` with the real loop's additions.

    Unlike :func:`train_simple`'s step: the loss of each micro-batch is divided by their number
    and the gradients add up (gradient accumulation = one big batch); the forward pass runs in
    mixed precision with a gradient scaler for fp16; a non-finite loss stops the run; the global
    gradient norm is clipped to ``grad_clip`` (0: no clipping); under DDP the processes average
    gradients on the last micro-batch only. Returns the mean loss and mean metrics.
    """
    n = len(micro_batches)
    step_loss, step_metrics = 0.0, {}
    for micro, batch in enumerate(micro_batches):
        sync = (not ddp) or micro == n - 1
        with (model.no_sync() if not sync else _null()):
            with autocast(device, precision):
                loss, metrics = loss_fn(model, batch)
            check_finite(loss, step, micro)
            scaler.scale(loss / n).backward()
        step_loss += loss.item() / n
        for k, v in metrics.items():
            step_metrics[k] = step_metrics.get(k, 0.0) + float(v) / n
    scaler.unscale_(optimizer)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(unwrap(model).parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return step_loss, step_metrics


def _callback_stops(callback: Callable, step: int, info: dict, d: Dist, device) -> bool:
    """Run the callback (on rank 0) and say whether it asked to stop: it returned ``False``
    or raised ``StopIteration``. Under DDP every process learns rank 0's answer."""
    stop = False
    if d.master:
        try:
            stop = callback(step, info) is False
        except StopIteration:
            stop = True
    if d.enabled:
        import torch.distributed as dist

        flag = torch.tensor([float(stop)], device=device)
        dist.broadcast(flag, src=0)
        stop = bool(flag.item())
    return stop


# --------------------------------------------------------------------------------------------
# The recipe of the base model (what llmlab.stages.get_base_model stores)
# --------------------------------------------------------------------------------------------


def pretrain(model_cfg: ModelConfig, train_cfg: TrainConfig, train_data, val_data, device=None,
             callback: Callable | None = None, progress: bool = True) -> tuple[GPT, TrainResult]:
    """Train a fresh :class:`~llmlab.model.GPT` from scratch (notebook 02, section 4): seed with
    ``train_cfg.seed``, build the model, run :func:`train`. Returns ``(model, TrainResult)``.
    ``benchmarks/base_model.py`` times it."""
    seed_everything(train_cfg.seed)
    model = GPT(model_cfg)
    result = train(model, train_data, val_data, train_cfg, device=device, callback=callback,
                   progress=progress)
    return model, result


def build_base_model(folder: Path, model_cfg: ModelConfig, train_cfg: TrainConfig, train_data,
                     val_data, callback: Callable | None = None, progress: bool = True) -> dict:
    """The recipe of the ``base_model`` artifact: :func:`pretrain`, then ``model.pt`` (a
    checkpoint) and ``train_log.json`` (the :class:`TrainResult`) in ``folder``; returns the
    headline numbers."""
    model, res = pretrain(model_cfg, train_cfg, train_data, val_data, callback=callback,
                          progress=progress)
    save_checkpoint(Path(folder) / "model.pt", model.cpu(), state={"step": res.steps})
    atomic_write_bytes(Path(folder) / "train_log.json", json.dumps(res.to_dict()).encode())
    return {"steps": res.steps, "tokens": res.tokens, "final_train_loss": res.train_losses[-1],
            "val_loss": res.val_losses[-1][1], "tokens_per_sec": round(res.tokens_per_sec, 1),
            "mfu": round(res.mfu, 4), "wall_seconds": round(res.wall_seconds, 2),
            "precision": res.precision, "params": model.num_params(),
            "params_with_embeddings": model.num_params(non_embedding=False)}


def check_finite(loss: torch.Tensor, step: int, micro: int) -> None:
    """Stop a run whose loss is NaN or infinite, before it trains every weight into NaN."""
    if not torch.isfinite(loss.detach()).all():
        raise FloatingPointError(
            f"training stopped: the loss is {loss.item()} at optimiser step {step + 1} "
            f"(micro-batch {micro + 1}); the weights are those after step {step}. Lower the "
            f"learning rate or check the batch for bad values.")


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------------------------
# The notebook's live loss plot
# --------------------------------------------------------------------------------------------


class LossPlot:
    """A callback for :func:`train` that redraws the loss curve in a notebook while it trains.

    Draws at most every ``every`` steps (and at every evaluation) into one display handle.
    """

    def __init__(self, title: str = "Pretraining loss", every: int = 25):
        import matplotlib.pyplot as plt

        self.every, self.steps, self.losses, self.val = every, [], [], []
        self.fig, self.ax = plt.subplots()
        self.title = title
        plt.close(self.fig)
        self.handle = None

    def __call__(self, step: int, info: dict) -> None:
        self.steps.append(step)
        self.losses.append(info["loss"])
        if "val_loss" in info:
            self.val.append((step, info["val_loss"]))
        if step % self.every == 0 or "val_loss" in info:
            self.draw()

    def draw(self) -> None:
        from IPython.display import display

        ax = self.ax
        ax.clear()
        ax.plot(self.steps, self.losses, lw=1, label="train (per step)")
        if self.val:
            ax.plot(*zip(*self.val), "o-", ms=3, label="validation")
        ax.set(title=self.title, xlabel="optimiser step", ylabel="cross-entropy (nats/token)")
        ax.grid(True, alpha=0.3)
        ax.legend()
        if self.handle is None:
            self.handle = display(self.fig, display_id=True)
        else:
            self.handle.update(self.fig)
