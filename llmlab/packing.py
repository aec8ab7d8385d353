"""Packing documents into fixed-length token windows, and the batch loader (notebook 01, "Packing").

The token files are flat ``uint16`` arrays on disk (``train.bin``, ``val.bin``): every
document's tokens followed by the end-of-text token, one document after another. A training
batch is ``batch_size`` windows of ``block_size + 1`` tokens cut at random offsets; the
inputs are the first ``block_size`` tokens of each window and the targets the last
``block_size`` (the next token at every position).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from .artifacts import atomic_write_bytes

TOKEN_DTYPE = np.uint16        # ids up to 65535: enough for every preset's vocabulary


def pack_documents(docs_ids: Iterable[Sequence[int]], eot_id: int) -> np.ndarray:
    """Join documents into one flat uint16 stream, each followed by ``eot_id``.

    The end-of-text token marks every boundary, so the model learns where a document ends and
    never has to guess that the next window's text continues the last one.

    >>> pack_documents([[5, 6], [7], []], eot_id=9).tolist()
    [5, 6, 9, 7, 9, 9]
    """
    docs = [np.asarray(d, dtype=np.int64) for d in docs_ids]
    _check_ids(docs, eot_id)
    out = np.empty(sum(len(d) + 1 for d in docs), dtype=TOKEN_DTYPE)
    pos = 0
    for d in docs:
        out[pos:pos + len(d)] = d
        out[pos + len(d)] = eot_id
        pos += len(d) + 1
    return out


def _check_ids(docs: list[np.ndarray], eot_id: int) -> None:
    limit = np.iinfo(TOKEN_DTYPE).max
    if not 0 <= eot_id <= limit:
        raise ValueError(f"eot_id={eot_id} does not fit in {np.dtype(TOKEN_DTYPE).name}")
    for k, d in enumerate(docs):
        if len(d) and (d.min() < 0 or d.max() > limit):
            raise ValueError(f"document {k} has token ids outside [0, {limit}] "
                             f"(min {d.min()}, max {d.max()}): they do not fit in "
                             f"{np.dtype(TOKEN_DTYPE).name}")


def split_documents(n_docs: int, val_frac: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and validation documents: a seeded shuffle, then the first
    ``round(val_frac * n_docs)`` (at least one when ``val_frac > 0`` and there are two or more
    documents) go to validation. Splitting by *document* keeps a validation text out of training.

    Both index arrays come back sorted (documents keep their corpus order within a split).
    """
    if not 0.0 <= val_frac < 1.0:
        raise ValueError(f"val_frac={val_frac} must be in [0, 1)")
    perm = np.random.default_rng(seed).permutation(n_docs)
    n_val = int(round(val_frac * n_docs))
    if val_frac > 0 and n_docs >= 2:
        n_val = min(max(n_val, 1), n_docs - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _atomic_tofile(arr: np.ndarray, path: Path) -> None:
    """Write ``arr`` raw to ``path`` through a temporary file and a rename."""
    atomic_write_bytes(Path(path), np.ascontiguousarray(arr).tobytes())


def write_token_files(docs_ids: Sequence[Sequence[int]], eot_id: int, out_dir: Path,
                      val_frac: float, seed: int = 0) -> dict:
    """Split documents into train/validation and write ``train.bin`` and ``val.bin``.

    Each file is :func:`pack_documents` of its split, as raw uint16 (read back with
    :func:`load_tokens`, a memory map). Files are written atomically. Returns counts.
    """
    train_idx, val_idx = split_documents(len(docs_ids), val_frac, seed)
    info = {}
    for name, idx in (("train", train_idx), ("val", val_idx)):
        arr = pack_documents([docs_ids[i] for i in idx], eot_id)
        _atomic_tofile(arr, Path(out_dir) / f"{name}.bin")
        info[f"{name}_docs"] = int(len(idx))
        info[f"{name}_tokens"] = int(len(arr))
    info["dtype"] = np.dtype(TOKEN_DTYPE).name
    return info


def load_tokens(path: Path) -> np.memmap:
    """A read-only memory map of a uint16 token file (nothing is loaded until it is read).

    An empty file (a split with no documents) gives an empty array: it cannot be mapped.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"token file {path} does not exist (build it with "
                                f"llmlab.stages.get_tokens)")
    size = path.stat().st_size
    if size % np.dtype(TOKEN_DTYPE).itemsize:
        raise ValueError(f"token file {path} has {size} bytes, not a whole number of uint16 tokens")
    if size == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r")


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


def iter_batches(data: np.ndarray, batch_size: int, block_size: int, shuffle: bool = True,
                 seed: int = 0, device: str | torch.device = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over ``data`` in non-overlapping windows: yields ``(x, y)`` of shape (B, T).

    Unlike :func:`get_batch` (random offsets, endless), every token is used once as a target
    per pass -- what a validation loss over the whole split or an epoch needs. Window ``k``
    covers ``data[k*T : k*T + T + 1]``; windows are shuffled with ``seed`` when ``shuffle``. The
    last batch may be smaller; a tail shorter than one window is dropped.
    """
    n_windows = (len(data) - 1) // block_size
    if n_windows < 1:
        raise ValueError(f"token array of length {len(data)} is too short for one window of "
                         f"{block_size + 1} tokens")
    order = np.random.default_rng(seed).permutation(n_windows) if shuffle else np.arange(n_windows)
    arr = np.asarray(data)
    for start in range(0, n_windows, batch_size):
        starts = order[start:start + batch_size] * block_size                          # (B,)
        idx = starts[:, None] + np.arange(block_size + 1)[None, :]                     # (B, T+1)
        win = torch.from_numpy(arr[idx].astype(np.int64))                             # (B, T+1)
        yield win[:, :-1].to(device), win[:, 1:].to(device)                           # (B, T) each


# --------------------------------------------------------------------------------------------
# Padding versus packing
# --------------------------------------------------------------------------------------------


def pad_documents(docs_ids: Iterable[Sequence[int]], block_size: int, eot_id: int,
                  pad_id: int) -> np.ndarray:
    """Naive batching: every document (plus its EOT) gets rows of its own, padded with
    ``pad_id`` to a multiple of ``block_size``. Shape (rows, block_size).

    >>> pad_documents([[1, 2, 3], [4]], block_size=3, eot_id=9, pad_id=0).tolist()
    [[1, 2, 3], [9, 0, 0], [4, 9, 0]]
    """
    rows = []
    for d in docs_ids:
        seq = list(d) + [eot_id]
        n_rows = -(-len(seq) // block_size)
        padded = np.full(n_rows * block_size, pad_id, dtype=np.int64)
        padded[:len(seq)] = seq
        rows.append(padded.reshape(n_rows, block_size))
    if not rows:
        return np.zeros((0, block_size), dtype=np.int64)
    return np.concatenate(rows)


def padding_waste(lengths: Sequence[int], block_size: int) -> float:
    """Share of slots that are padding when each document (+ EOT) is padded to whole rows.

    With ``L_i`` tokens per document: rows ``R_i = ceil((L_i + 1) / T)`` and waste
    ``1 - sum(L_i + 1) / (T * sum(R_i))``.

    >>> round(padding_waste([3, 1], block_size=3), 4)     # 6 tokens in 9 slots
    0.3333
    """
    lengths = np.asarray(lengths, dtype=np.int64) + 1
    if len(lengths) == 0:
        return 0.0
    slots = block_size * (-(-lengths // block_size)).sum()
    return float(1.0 - lengths.sum() / slots)


def packing_waste(lengths: Sequence[int], block_size: int) -> float:
    """Share of slots that are padding when the documents are packed into one stream and cut
    into windows of ``block_size``: only the last window can be partly empty.

    >>> packing_waste([3, 1], block_size=3)     # 6 tokens in 6 slots
    0.0
    """
    n = int(np.sum(np.asarray(lengths, dtype=np.int64) + 1))
    if n == 0:
        return 0.0
    return float(1.0 - n / (block_size * -(-n // block_size)))


def build_token_files(folder: Path, texts: list[str], tok, val_frac: float) -> dict:
    """The recipe of the ``tokens`` artifact (notebook 01, "Packing"): encode each document
    with ``tok`` and write ``train.bin`` / ``val.bin`` into ``folder``
    (:func:`write_token_files`); returns the token counts and bytes per token."""
    from tqdm.auto import tqdm

    docs = [tok.encode_ordinary(t) for t in tqdm(texts, desc="encoding documents", unit="doc")]
    info = write_token_files(docs, tok.eot_id, Path(folder), val_frac)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(d) for d in docs)
    return info | {"n_docs": len(docs), "corpus_bytes": n_bytes, "doc_tokens": n_tokens,
                   "bytes_per_token": round(n_bytes / max(n_tokens, 1), 4),
                   "vocab_size": tok.vocab_size, "eot_id": tok.eot_id, "pad_id": tok.pad_id,
                   "val_frac": val_frac}
