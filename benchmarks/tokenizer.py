"""BPE training speed, compression and encode throughput, next to Hugging Face tokenizers and tiktoken.

    python benchmarks/tokenizer.py [--preset cpu] [--vocab 4096] [--repeats 3]

The preset's cleaned corpus (``stages.get_corpus``) is written in the synthetic world's small
language: BPE runs out of pairs to merge long before 4096 tokens (``corpus_merge_limit``). So
the training-time and compression figures at ``--vocab`` use the text of every crawled page
(spam and gibberish included: ``bench_source``) where the cleaned corpus cannot reach that size,
and the compression of the tokenizer the series actually uses (the preset's vocabulary, on the
cleaned corpus) is measured too. In one run:

- BPE training time of ``llmlab.tokenizer.train_fast`` at ``--vocab`` next to a Hugging Face
  ``tokenizers`` byte-level BPE trained on the same texts, split pattern and vocabulary size
  (goal: within 5x of it);
- speed-up of ``train_fast`` over ``train_naive`` on a slice of the cleaned corpus, with
  identical merges checked (goal: at least 100x);
- bytes per token of both tokenizers at ``--vocab`` and at the preset's vocabulary on the
  cleaned corpus (goal: ours within 2% of tokenizers');
- encode throughput in MB/s of ``Tokenizer.encode_ordinary`` (fresh tokenizer, empty cache)
  next to tiktoken's Rust BPE with *our* ranks (the ``gpt2`` files cannot be downloaded
  offline), with identical token ids checked;
- bytes per token of tiktoken's ``gpt2`` encoding where its files are cached or reachable,
  else null with the reason.

Timings are medians of ``--repeats`` runs. The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmlab import stages  # noqa: E402
from llmlab import tokenizer as T  # noqa: E402
from llmlab.config import get_preset  # noqa: E402




def median_time(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slice-bytes", type=int, default=60_000, help="corpus slice for the naive trainer")
    ap.add_argument("--slice-merges", type=int, default=400, help="merges on the slice")
    args = ap.parse_args()
    p = get_preset(args.preset)
    pattern = T.split_pattern(p.tokenizer.split_pattern)
    corpus = stages._corpus_texts(stages.get_corpus(p))
    corpus_bytes = sum(len(t.encode("utf-8")) for t in corpus)
    limit = len(T.train_fast(corpus, 10**7, pattern, strict=False))
    print(f"cleaned corpus: {len(corpus)} documents, {corpus_bytes / 1e6:.3f} MB, "
          f"BPE runs out of pairs after {limit} merges", flush=True)
    if 256 + limit + len(T.SPECIAL_TOKENS) >= args.vocab:
        texts, source = corpus, "cleaned corpus (stages.get_corpus)"
    else:
        texts = [pg.text for pg in stages.get_world(p).pages]
        source = (f"text of every crawled page (world.pages): the cleaned corpus allows only "
                  f"{limit} merges, fewer than vocab {args.vocab} needs")
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    print(f"benchmark text: {len(texts)} documents, {n_bytes / 1e6:.3f} MB ({source})", flush=True)

    # 1) training time at --vocab, ours and Hugging Face's
    merges, t_ours = median_time(lambda: T.train_fast(texts, args.vocab, pattern), args.repeats)
    print(f"train_fast, vocab {args.vocab}: {t_ours:.3f} s", flush=True)
    hf, t_hf = median_time(lambda: T.train_hf_bpe(texts, args.vocab, pattern), args.repeats)
    print(f"tokenizers BpeTrainer, vocab {args.vocab}: {t_hf:.3f} s", flush=True)

    # 2) naive versus fast on a slice (same merges)
    slice_texts, size = [], 0
    for t in corpus:
        if size >= args.slice_bytes:
            break
        slice_texts.append(t)
        size += len(t.encode("utf-8"))
    v_slice = 256 + args.slice_merges + len(T.SPECIAL_TOKENS)
    naive, t_naive = median_time(lambda: T.train_naive(slice_texts, v_slice, pattern), args.repeats)
    fast, t_fast = median_time(lambda: T.train_fast(slice_texts, v_slice, pattern), max(args.repeats, 5))
    print(f"slice of {size} bytes, {args.slice_merges} merges: naive {t_naive:.3f} s, "
          f"fast {t_fast:.4f} s, same merges: {naive == fast}", flush=True)

    # 3) compression: at --vocab on the benchmark text, at the preset's vocab on the cleaned corpus
    tok = T.Tokenizer(merges, pattern)
    bpt_ours = T.bytes_per_token(tok.encode_ordinary, texts)
    bpt_hf = T.bytes_per_token(lambda t: hf.encode(t).ids, texts)
    v = p.tokenizer.vocab_size
    tok_c = T.Tokenizer.train(corpus, v, pattern)
    hf_c = T.train_hf_bpe(corpus, v, pattern)
    bpt_c_ours = T.bytes_per_token(tok_c.encode_ordinary, corpus)
    bpt_c_hf = T.bytes_per_token(lambda t: hf_c.encode(t).ids, corpus)
    gpt2, gpt2_reason = T.gpt2_encoding()
    bpt_gpt2 = (T.bytes_per_token(gpt2.encode_ordinary, corpus) if gpt2 is not None else None)
    print(f"bytes/token at vocab {args.vocab}: ours {bpt_ours:.4f}, tokenizers {bpt_hf:.4f}; "
          f"cleaned corpus at vocab {v}: ours {bpt_c_ours:.4f}, tokenizers {bpt_c_hf:.4f}, "
          f"gpt2 {bpt_gpt2} {'' if gpt2 else '(' + gpt2_reason + ')'}", flush=True)

    # 4) encode throughput: ours (fresh cache each repeat) versus tiktoken with our ranks
    enc = tok.to_tiktoken()
    text = "\n\n".join(texts)
    mb = len(text.encode("utf-8")) / 1e6
    ids_ours, t_enc = median_time(lambda: T.Tokenizer(merges, pattern).encode_ordinary(text), args.repeats)
    _, t_enc_warm = median_time(lambda: tok.encode_ordinary(text), args.repeats)
    ids_tt, t_tt = median_time(lambda: enc.encode_ordinary(text), args.repeats)
    print(f"encode {mb:.3f} MB: ours {mb / t_enc:.2f} MB/s (warm cache {mb / t_enc_warm:.2f}), "
          f"tiktoken {mb / t_tt:.2f} MB/s, identical ids: {ids_ours == ids_tt}", flush=True)

    out = {
        "benchmark": "tokenizer", "preset": args.preset,
        "corpus_docs": len(corpus), "corpus_mb": round(corpus_bytes / 1e6, 4),
        "corpus_merge_limit": limit, "bench_source": source,
        "bench_docs": len(texts), "bench_mb": round(n_bytes / 1e6, 4), "vocab_size": args.vocab,
        "split_pattern": p.tokenizer.split_pattern, "cpu_count": os.cpu_count(),
        "train_seconds_median": round(t_ours, 4),
        "peer_tokenizers_train_seconds_median": round(t_hf, 4),
        "train_time_ratio_vs_tokenizers": round(t_ours / t_hf, 3),
        "goal_train_time_ratio_max": 5.0,
        "naive_slice_bytes": size, "naive_slice_merges": args.slice_merges,
        "naive_seconds_median": round(t_naive, 4), "fast_seconds_median_on_slice": round(t_fast, 5),
        "speedup_over_naive": round(t_naive / t_fast, 1), "goal_speedup_min": 100,
        "naive_and_fast_merges_identical": naive == fast,
        "bytes_per_token": round(bpt_ours, 4),
        "peer_tokenizers_bytes_per_token": round(bpt_hf, 4),
        "bytes_per_token_rel_diff_vs_tokenizers": round(bpt_ours / bpt_hf - 1, 4),
        "goal_bytes_per_token_rel_diff_max": 0.02,
        "preset_vocab_size": v,
        "corpus_bytes_per_token": round(bpt_c_ours, 4),
        "peer_tokenizers_corpus_bytes_per_token": round(bpt_c_hf, 4),
        "corpus_bytes_per_token_rel_diff_vs_tokenizers": round(bpt_c_ours / bpt_c_hf - 1, 4),
        "gpt2_corpus_bytes_per_token": None if bpt_gpt2 is None else round(bpt_gpt2, 4),
        "gpt2_unavailable_reason": gpt2_reason,
        "encode_mb": round(mb, 4),
        "encode_mb_per_s": round(mb / t_enc, 3),
        "encode_mb_per_s_warm_cache": round(mb / t_enc_warm, 3),
        "peer_tiktoken_same_ranks_encode_mb_per_s": round(mb / t_tt, 3),
        "encode_identical_to_tiktoken": ids_ours == ids_tt,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
