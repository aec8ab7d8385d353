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
