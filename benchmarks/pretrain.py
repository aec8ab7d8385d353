"""Pretraining throughput: llmlab's GPT against transformers' GPT2LMHeadModel, and MFU.

    python benchmarks/pretrain.py [--preset cpu] [--repeats 9] [--steps 5]

CPU part (always): training steps (forward, backward, AdamW) of llmlab's model and of
``transformers.GPT2LMHeadModel`` built with the same configuration, on the same batch, in the
same run, interleaved (a different one first each round) so that other load on the machine
hits all alike; tokens per second are medians over ``--repeats`` rounds of ``--steps`` steps,
and a speed-up is the median of the rounds' own ratios. Two transformers peers: GPT-2's
published configuration (``gelu_new``, the tanh GELU written as five Python ops), and the same
model with ``gelu_pytorch_tanh`` (the same math through PyTorch's one fused kernel, as
llmlab's MLP runs it). The gap between the two is the activation's implementation; the forward
plus backward times of the three GELU forms on the MLP's tensor are printed too.

MFU is llmlab's training FLOP/s (``GPT.flops_per_token``) over this machine's fp32 matmul peak,
measured here (median of repeats of a 1024^3 matmul); ``1 / MFU`` bounds what any
implementation of the same FLOPs could gain on this machine.

GPU part (only when CUDA is present): the gpu preset's model with bf16 autocast and
``torch.compile``, MFU against the card's dense bf16 peak (``llmlab.train.GPU_PEAKS``).

The last line of stdout is one JSON object with the figures and the goals.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmlab.config import get_preset  # noqa: E402
from llmlab.device import autocast, choose_precision  # noqa: E402
from llmlab.device import matmul_flops  # noqa: E402
from llmlab.device import timed as device_timed  # noqa: E402
from llmlab.model import GELU_FORMS, GPT  # noqa: E402
from llmlab.train import (GPU_PEAKS, TrainConfig, configure_optimizer, peak_flops,  # noqa: E402
                          time_forward_backward)

GOAL_SPEEDUP = 1.2
GOAL_CPU_MFU = 0.35
GOAL_GPU_MFU = 0.45


def matmul_peak(n: int = 1024, repeats: int = 7) -> float:
    """Median fp32 matmul FLOP/s of an n x n product on this CPU (``llmlab.device.matmul_flops``)."""
    return matmul_flops(n, repeats, "median")


PEERS = {
    # GPT-2's published configuration: transformers writes its "gelu_new" as five Python ops
    "transformers": "gelu_new",
    # the same tanh-GELU math through PyTorch's one fused kernel, as llmlab's model uses it
    "transformers_fused_gelu": "gelu_pytorch_tanh",
}


def hf_model(cfg, activation: str = "gelu_new"):
    import transformers

    transformers.logging.set_verbosity_error()
    hcfg = transformers.GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size,
                                   n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
                                   resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                   activation_function=activation)
    return transformers.GPT2LMHeadModel(hcfg)


def gelu_times(shape) -> dict:
    """Forward + backward milliseconds of each of ``llmlab.model.GELU_FORMS`` on one tensor."""
    return {name: round(time_forward_backward(fn, shape, n=20), 3) for name, fn in GELU_FORMS.items()}


def make_step(model, kind: str, x, y, device, precision):
    opt = configure_optimizer(model, TrainConfig())

    def step():
        with autocast(device, precision):
            if kind == "llmlab":
                _, loss = model(x, y)
            else:
                loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return step


def timed(step, n: int) -> float:
    """Mean seconds of ``n`` calls of ``step`` (``llmlab.device.timed``, one repeat)."""
    def n_steps():
        for _ in range(n):
            step()
    return device_timed(n_steps, repeats=1)[1] / n


def cpu_part(preset, repeats: int, steps: int) -> dict:
    cfg, tcfg = preset.model, preset.train
    device, precision = torch.device("cpu"), choose_precision(torch.device("cpu"))
    torch.manual_seed(0)
    B, T = tcfg.batch_size, cfg.block_size
    x = torch.randint(0, cfg.vocab_size, (B, T))
    y = torch.randint(0, cfg.vocab_size, (B, T))
    ours = GPT(cfg).train()
    steps_fn = {"llmlab": make_step(ours, "llmlab", x, y, device, precision)}
    try:
        for name, activation in PEERS.items():
            steps_fn[name] = make_step(hf_model(cfg, activation).train(), "hf", x, y, device,
                                       precision)
    except ImportError:
        print("transformers is not installed: only llmlab is measured", file=sys.stderr)
    for fn in steps_fn.values():
        timed(fn, 2)   # warm-up
    names = list(steps_fn)
    per_step = {k: [] for k in names}
    peaks, ratios = [], {k: [] for k in names[1:]}
    for r in range(repeats):
        peaks.append(matmul_peak(repeats=3))
        for k in names[r % len(names):] + names[:r % len(names)]:   # a new first one each round
            per_step[k].append(timed(steps_fn[k], steps))
        for k in ratios:
            ratios[k].append(per_step[k][-1] / per_step["llmlab"][-1])
        print(f"round {r + 1}/{repeats}: " + ", ".join(
            f"{k} {B * T / v[-1]:,.0f} tok/s" for k, v in per_step.items()), file=sys.stderr)
    tok_s = {k: B * T / statistics.median(v) for k, v in per_step.items()}
    peak = statistics.median(peaks)
    flops = ours.flops_per_token()
    mfu = flops * tok_s["llmlab"] / peak
    out = {"cpu_threads": torch.get_num_threads(), "batch": [B, T],
           "model": {"n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "n_head": cfg.n_head,
                     "vocab_size": cfg.vocab_size, "params": ours.num_params()},
           "llmlab_tokens_per_sec": round(tok_s["llmlab"], 1),
           "cpu_matmul_peak_gflops": round(peak / 1e9, 2),
           "llmlab_train_gflops": round(flops * tok_s["llmlab"] / 1e9, 2),
           "cpu_mfu": round(mfu, 4), "goal_cpu_mfu": GOAL_CPU_MFU,
           # no implementation of the same FLOPs can beat llmlab by more than this here
           "headroom_at_matmul_peak": round(1 / mfu, 3)}
    for k, rs in ratios.items():
        # each round's ratio (measured back to back), then the median: a load change between
        # rounds moves both sides of a ratio, not just one of two medians
        suffix = k[len("transformers"):]
        out[f"{k}_tokens_per_sec"] = round(tok_s[k], 1)
        out[f"speedup_vs_transformers{suffix}"] = round(statistics.median(rs), 3)
        out[f"speedup_vs_transformers{suffix}_rounds_min_max"] = [round(min(rs), 3),
                                                                round(max(rs), 3)]
    if ratios:
        out["goal_speedup"] = GOAL_SPEEDUP
    out["gelu_fwd_bwd_ms"] = gelu_times((B, T, 4 * cfg.n_embd))
    return out


def gpu_part(repeats: int, steps: int, device: str = "cuda", preset_name: str = "gpu",
             compile: bool = True) -> dict:
    """The gpu preset's training step with bf16 autocast (fp16 before Ampere) and
    ``torch.compile``, and its MFU against the card's dense peak. ``device="cpu"`` with the
    smoke preset and ``compile=False`` runs the same code on a CPU (the test does)."""
    preset = get_preset(preset_name)
    cfg, tcfg = preset.model, preset.train
    device = torch.device(device)
    precision = choose_precision(device)
    torch.manual_seed(0)
    B, T = tcfg.batch_size, cfg.block_size
    x = torch.randint(0, cfg.vocab_size, (B, T), device=device)
    y = torch.randint(0, cfg.vocab_size, (B, T), device=device)
    model = GPT(cfg).to(device).train()
    step = make_step(torch.compile(model) if compile else model, "llmlab", x, y, device, precision)
    timed(step, 5)   # compile and warm up
    times = [timed(step, steps) for _ in range(repeats)]
    tok_s = B * T / statistics.median(times)
    peak = peak_flops(device, precision.name)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"gpu": name, "gpu_preset": preset.name, "gpu_precision": precision.name,
            "gpu_compiled": compile, "gpu_tokens_per_sec": round(tok_s, 1),
            "gpu_peak_tflops": peak / 1e12,
            "gpu_mfu": round(model.flops_per_token() * tok_s / peak, 4),
            "goal_gpu_mfu": GOAL_GPU_MFU, "gpu_peaks_known": sorted(GPU_PEAKS)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's own, the machine's cores)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    result = {"benchmark": "pretrain", "preset": preset.name, "torch": torch.__version__,
              "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    result.update(cpu_part(preset, args.repeats, args.steps))
    if torch.cuda.is_available():
        result.update(gpu_part(args.repeats, max(args.steps, 10)))
    else:
        result["gpu"] = None
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
