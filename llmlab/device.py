"""Device, precision and seeding: the rules every training loop in the series follows.

- device: ``cuda`` if present, else Apple's ``mps``, else ``cpu`` (override with ``LLMLAB_DEVICE``).
- precision: bf16 autocast only on CUDA compute capability 8.0 and up (Ampere, Hopper...).
  ``torch.cuda.is_bf16_supported()`` answers True on a T4 (7.5), where bf16 is only emulated
  and slow, so we look at the capability instead. Below 8.0: fp16 autocast with a GradScaler.
  CPU and MPS: plain fp32.
- seeding: :func:`seed_everything`, used by every stage.
"""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """The best available device, or ``prefer`` / ``$LLMLAB_DEVICE`` when given."""
    prefer = prefer or os.environ.get("LLMLAB_DEVICE") or None
    if prefer:
        dev = torch.device(prefer)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {prefer!r} was asked for but CUDA is not available here")
        if dev.type == "mps" and not _mps_available():
            raise ValueError(f"device {prefer!r} was asked for but MPS is not available here")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


@dataclass(frozen=True)
class Precision:
    """How to run the forward pass on a device."""

    dtype: torch.dtype      # autocast dtype (float32 means no autocast)
    use_scaler: bool        # fp16 needs a GradScaler against underflow
    name: str               # "bf16", "fp16" or "fp32"


def choose_precision(device: torch.device, capability: tuple[int, int] | None = None) -> Precision:
    """bf16 on CUDA capability >= 8.0, fp16 + GradScaler below, fp32 on CPU and MPS.

    ``capability`` can be passed to check the rule without a GPU:

    >>> choose_precision(torch.device("cuda"), capability=(7, 5)).name   # a T4
    'fp16'
    >>> choose_precision(torch.device("cuda"), capability=(9, 0)).name   # an H100
    'bf16'
    """
    if device.type != "cuda":
        return Precision(torch.float32, False, "fp32")
    if capability is None:
        capability = torch.cuda.get_device_capability(device)
    if capability >= (8, 0):
        return Precision(torch.bfloat16, False, "bf16")
    return Precision(torch.float16, True, "fp16")


def autocast(device: torch.device, precision: Precision):
    """The autocast context for ``precision`` (a no-op for fp32)."""
    if precision.dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.dtype)


def grad_scaler(device: torch.device, precision: Precision):
    """A GradScaler that is active only for fp16."""
    return torch.amp.GradScaler(device.type, enabled=precision.use_scaler)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run repeats exactly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def describe(device: torch.device | None = None) -> dict:
    """What the environment check in notebook 00 prints."""
    device = device or pick_device()
    info = {"device": device.type, "precision": choose_precision(device).name,
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return info


# --------------------------------------------------------------------------------------------
# Peak throughput: what MFU is measured against (train.py) and what the calculator assumes
# (scaling.py); the one table of GPU peaks
# --------------------------------------------------------------------------------------------


def timed(fn, *args, repeats: int = 3, device=None, **kwargs):
    """Run ``fn(*args, **kwargs)`` ``repeats`` times; return ``(last result, median seconds)``.

    The one timing helper of the package (tokenizers in notebook 01, GELU forms and training
    steps in notebook 02, the benchmarks). With a CUDA ``device`` the clock starts and stops
    only once the GPU has finished its queued work; the median keeps one slow run on a shared
    machine from moving the result.
    """
    import statistics
    import time

    cuda = device is not None and torch.device(device).type == "cuda"
    times, result = [], None
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return result, statistics.median(times)


def matmul_flops(n: int = 1024, repeats: int = 8, statistic: str = "best") -> float:
    """This CPU's fp32 matmul throughput in FLOP/s: ``2 n^3`` over the ``best`` (or
    ``median``) of ``repeats`` timed n x n products, after two warm-up products.

    Its operands come from a generator of their own: measuring never moves the global random
    state (the first ``train`` of a process would otherwise draw other dropout masks than the
    second). ``benchmarks/pretrain.py`` takes the median of each round on a shared machine."""
    import statistics
    import time

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    if statistic not in ("best", "median"):
        raise ValueError(f"statistic must be 'best' or 'median', got {statistic!r}")
    return 2 * n ** 3 / (min(times) if statistic == "best" else statistics.median(times))


@lru_cache(maxsize=None)
def measured_matmul_peak(n: int = 1024, repeats: int = 8) -> float:
    """This CPU's fp32 matmul peak, measured once per process (:func:`matmul_flops`, best of
    ``repeats``): what MFU on a CPU is measured against."""
    return matmul_flops(n, repeats, "best")


# dense (no sparsity) peak FLOP/s by GPU name and precision, from the vendors' data sheets
GPU_PEAKS = {"H100 PCIe": {"bf16": 756e12, "fp16": 756e12, "fp32": 51e12},
             "H100": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
             "H200": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
             "A100": {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},
             "L40S": {"bf16": 362e12, "fp16": 362e12, "fp32": 91.6e12},
             "L40": {"bf16": 181e12, "fp16": 181e12, "fp32": 90.5e12},
             "L4": {"bf16": 121e12, "fp16": 121e12, "fp32": 30e12},
             "A10": {"bf16": 125e12, "fp16": 125e12, "fp32": 31e12},
             "T4": {"bf16": 65e12, "fp16": 65e12, "fp32": 8.1e12},
             "V100": {"bf16": 125e12, "fp16": 125e12, "fp32": 15.7e12}}


def peak_flops(device: torch.device, precision: str = "fp32") -> float:
    """The peak FLOP/s MFU is measured against: a GPU's data-sheet dense peak for ``precision``,
    or this CPU's measured fp32 matmul throughput (:func:`measured_matmul_peak`)."""
    device = torch.device(device)
    if device.type == "cuda":
        return gpu_peak(torch.cuda.get_device_name(device), precision)
    return measured_matmul_peak()


def gpu_peak(name: str, precision: str) -> float:
    """Data-sheet dense peak of the GPU called ``name`` (as CUDA reports it); NaN if unknown.

    The first key of :data:`GPU_PEAKS` found in the name wins, so specific names come first:

    >>> gpu_peak("NVIDIA L40S", "bf16") / 1e12, gpu_peak("NVIDIA L4", "bf16") / 1e12
    (362.0, 121.0)
    >>> gpu_peak("NVIDIA H100 PCIe", "bf16") / 1e12, gpu_peak("NVIDIA H100 80GB HBM3", "bf16") / 1e12
    (756.0, 989.0)
    """
    for key, peaks in GPU_PEAKS.items():
        if key in name:
            return peaks[precision]
    return float("nan")
