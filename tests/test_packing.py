"""Packing and batching (llmlab.packing): no token lost, EOT at every boundary, shapes and shift."""
import doctest

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmlab import packing as P
from llmlab.packing import (get_batch, iter_batches, load_tokens, pack_documents, packing_waste,
                            pad_documents, padding_waste, split_documents, write_token_files)

EOT, PAD = 999, 998
docs_strategy = st.lists(st.lists(st.integers(0, 900), max_size=40), max_size=30)


def _unpack(stream, eot):
    """Cut a packed stream back into documents at its EOT tokens."""
    stream = list(stream)
    assert not stream or stream[-1] == eot
    docs, cur = [], []
    for t in stream:
        if t == eot:
            docs.append(cur)
            cur = []
        else:
            cur.append(t)
    return docs


def test_docstring_examples():
    res = doctest.testmod(P)
    assert res.attempted >= 4 and res.failed == 0


def test_pack_by_hand():
    out = pack_documents([[1, 2], [3, 4, 5], [6]], eot_id=0)
    assert out.dtype == np.uint16
    assert out.tolist() == [1, 2, 0, 3, 4, 5, 0, 6, 0]


@settings(max_examples=100, deadline=None)
@given(docs_strategy)
def test_packing_loses_no_token_and_keeps_boundaries(docs):
    out = pack_documents(docs, EOT)
    assert len(out) == sum(len(d) for d in docs) + len(docs)
    assert _unpack(out, EOT) == docs              # every document back, in order, split at EOT


@settings(max_examples=30, deadline=None)
@given(docs_strategy, st.floats(0.0, 0.5), st.integers(0, 5))
def test_token_files_split_by_document(tmp_path_factory, docs, val_frac, seed):
    out = tmp_path_factory.mktemp("tok")
    info = write_token_files(docs, EOT, out, val_frac, seed=seed)
    train = _unpack(load_tokens(out / "train.bin"), EOT)
    val = _unpack(load_tokens(out / "val.bin"), EOT)
    # the two splits partition the documents: nothing lost, nothing in both
    tr_idx, va_idx = split_documents(len(docs), val_frac, seed)
    assert sorted(tr_idx.tolist() + va_idx.tolist()) == list(range(len(docs)))
    assert train == [docs[i] for i in tr_idx] and val == [docs[i] for i in va_idx]
    assert info["train_docs"] + info["val_docs"] == len(docs)
    assert info["train_tokens"] + info["val_tokens"] == sum(len(d) + 1 for d in docs)
    if val_frac > 0 and len(docs) >= 2:
        assert 1 <= info["val_docs"] < len(docs)
    assert sorted(p.name for p in out.iterdir()) == ["train.bin", "val.bin"]  # no temp files


def test_split_is_seeded_and_sized():
    a = split_documents(100, 0.1, seed=3)
    b = split_documents(100, 0.1, seed=3)
    c = split_documents(100, 0.1, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert len(a[1]) == 10 and not np.array_equal(a[1], c[1])
    with pytest.raises(ValueError, match="val_frac"):
        split_documents(10, 1.0)


def test_ids_that_do_not_fit_uint16_are_refused():
    with pytest.raises(ValueError, match="document 1 has token ids outside"):
        pack_documents([[1], [70000]], eot_id=0)
    with pytest.raises(ValueError, match="eot_id=-1"):
        pack_documents([[1]], eot_id=-1)


def test_get_batch_shapes_and_shift():
    data = np.arange(1000, dtype=np.uint16)
    g = torch.Generator().manual_seed(0)
    x, y = get_batch(data, batch_size=4, block_size=16, generator=g)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(y, x + 1)                  # data[i] = i: the target is the next token
    g2 = torch.Generator().manual_seed(0)
    x2, _ = get_batch(data, 4, 16, generator=g2)
    assert torch.equal(x, x2)                     # same generator state, same batch
    with pytest.raises(ValueError, match="too short"):
        get_batch(data[:10], 2, 16)


def test_iter_batches_covers_every_window_once():
    data = np.arange(1 + 10 * 8, dtype=np.uint16)                 # exactly 10 windows of 8
    xs, ys = zip(*iter_batches(data, batch_size=3, block_size=8, seed=1))
    assert [x.shape for x in xs] == [(3, 8), (3, 8), (3, 8), (1, 8)]
    x, y = torch.cat(xs), torch.cat(ys)
    assert torch.equal(y, x + 1)
    starts = sorted(x[:, 0].tolist())
    assert starts == list(range(0, 80, 8))                        # every window once
    ordered = torch.cat([b[0] for b in iter_batches(data, 3, 8, shuffle=False)])
    assert ordered[:, 0].tolist() == list(range(0, 80, 8))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=40), st.integers(1, 64))
def test_padding_waste_matches_built_batches(lengths, block):
    docs = [[7] * n for n in lengths]
    padded = pad_documents(docs, block, EOT, PAD)                 # (rows, block)
    measured = float((padded == PAD).mean())
    assert padding_waste(lengths, block) == pytest.approx(measured)
    # no real token is lost in the padded rows either
    assert (padded != PAD).sum() == sum(lengths) + len(lengths)
    packed = pack_documents(docs, EOT)
    rows = -(-len(packed) // block)
    assert packing_waste(lengths, block) == pytest.approx(1 - len(packed) / (rows * block))
    assert packing_waste(lengths, block) <= padding_waste(lengths, block) + 1e-12


def test_packing_wastes_less_on_short_documents():
    lengths = [10, 20, 30, 5] * 25                                # short docs, long windows
    assert padding_waste(lengths, 128) > 0.8
    assert packing_waste(lengths, 128) < 0.1


def test_stages_token_files_decode_back_to_the_corpus():
    """get_tokenizer/get_tokens (what notebooks 01-02 call): the token files hold exactly the
    cleaned corpus, split by document, each document closed by end-of-text."""
    from llmlab import stages
    from llmlab.config import PRESETS
    from llmlab.data.pipeline import read_corpus

    tok = stages.get_tokenizer("smoke")
    assert tok.vocab_size == PRESETS["smoke"].tokenizer.vocab_size == PRESETS["smoke"].model.vocab_size
    art = stages.get_tokens("smoke")
    texts = [d["text"] for d in read_corpus(stages.get_corpus("smoke"))]
    tr_idx, va_idx = split_documents(len(texts), PRESETS["smoke"].data.val_frac)
    for name, idx in (("train", tr_idx), ("val", va_idx)):
        data = load_tokens(art.file(f"{name}.bin"))
        assert int(data.max()) < tok.vocab_size
        assert [tok.decode(d) for d in _unpack(data, tok.eot_id)] == [texts[i] for i in idx]
        assert art.info[f"{name}_tokens"] == len(data)
    assert len(va_idx) >= 1
    assert art.info["bytes_per_token"] > 1.5
    assert stages.get_tokens("smoke").hash == art.hash            # cached, not rebuilt
    x, y = get_batch(load_tokens(art.file("train.bin")), 4, PRESETS["smoke"].data.block_size)
    assert x.shape == (4, PRESETS["smoke"].data.block_size) and torch.equal(x[:, 1:], y[:, :-1])
