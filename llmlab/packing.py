"""Packing documents into fixed-length token windows, and the batch loader (notebook 01, "Packing").

The token files are flat ``uint16`` arrays on disk (``train.bin``, ``val.bin``): every
document's tokens followed by the end-of-text token, one document after another. A training
batch is ``batch_size`` windows of ``block_size + 1`` tokens cut at random offsets; the
inputs are the first ``block_size`` tokens of each window and the targets the last
``block_size`` (the next token at every position).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def load_tokens(path: Path) -> np.memmap:
    """A read-only memory map of a uint16 token file (nothing is loaded until it is read)."""
    return np.memmap(path, dtype=np.uint16, mode="r")


def get_batch(data: np.ndarray, batch_size: int, block_size: int,
              generator: torch.Generator | None = None, device: str | torch.device = "cpu"):
    """``batch_size`` random windows from ``data``: inputs ``x`` and next-token targets ``y``.

    Returns ``x, y`` as int64 tensors of shape (B, T) with ``y[:, t] == x[:, t + 1]`` for
    ``t < T - 1``. Same ``generator`` state, same batch.
    """
    if len(data) <= block_size + 1:
        raise ValueError(f"token array of length {len(data)} is too short for windows of "
                         f"{block_size + 1} tokens")
    ix = torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)  # (B,)
    x = torch.stack([torch.from_numpy(np.asarray(data[i:i + block_size], dtype=np.int64))
                     for i in ix.tolist()])                                              # (B, T)
    y = torch.stack([torch.from_numpy(np.asarray(data[i + 1:i + 1 + block_size], dtype=np.int64))
                     for i in ix.tolist()])                                              # (B, T)
    return x.to(device), y.to(device)
