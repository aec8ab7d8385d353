"""Quality filtering: Gopher/C4-style rules and a fastText-style classifier (notebook 01, section 4).

Two ways to drop the text a model should not learn from:

1. **Rules** (Rae et al. 2021, *Gopher*, appendix A.1.1; Raffel et al. 2020, *C4*, section 2.2).
   Each rule is a small pure function of the text returning one number (:func:`word_count`,
   :func:`mean_word_length`, :func:`stop_word_count` ...); :class:`QualityRules` holds every
   threshold in one place, visible and tunable; :func:`rule_failures` says which rules a text
   breaks. Code is exempt from the prose rules (code has no stop words or full stops).
2. **A classifier** (Joulin et al. 2017, *fastText*; the GPT-3 / Llama filtering recipe): hashed
   word uni- and bigrams, averaged embeddings, one linear layer, trained in torch to tell
   curated reference text (the world's encyclopedia and books) from random web text
   (:class:`HashedNgramClassifier`, :func:`train_classifier`).
"""
from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")   # Gopher's list
TERMINAL = (".", "!", "?", '"', "'", ":")
BULLETS = ("•", "-", "*", "·", "–")
_WORD = re.compile(r"\S+")

# --------------------------------------------------------------------------------------------
# 1. The rules: one number per rule, each a pure function of the text
# --------------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _lines(text: str) -> list[str]:
    return [l.strip() for l in text.split("\n") if l.strip()]


def word_count(text: str) -> int:
    """Whitespace-separated words: ``word_count("a b  c") -> 3``."""
    return len(_words(text))


def mean_word_length(text: str) -> float:
    """Mean characters per word, punctuation stripped: ``mean_word_length("ab, abcd") -> 3.0``."""
    ws = [w.strip(".,;:!?\"'()[]") for w in _words(text)]
    ws = [w for w in ws if w]
    return sum(map(len, ws)) / len(ws) if ws else 0.0


def symbol_ratio(text: str) -> float:
    """(# hashes + # ellipses) per word (Gopher: at most 0.1): ``symbol_ratio("a # b ...") -> 0.5``."""
    n = word_count(text)
    return (text.count("#") + text.count("...") + text.count("…")) / n if n else 0.0


def ellipsis_line_frac(text: str) -> float:
    """Share of lines ending in an ellipsis (Gopher: at most 0.3)."""
    ls = _lines(text)
    return sum(l.endswith(("...", "…")) for l in ls) / len(ls) if ls else 0.0


def bullet_line_frac(text: str) -> float:
    """Share of lines starting with a bullet (Gopher: at most 0.9)."""
    ls = _lines(text)
    return sum(l.startswith(BULLETS) for l in ls) / len(ls) if ls else 0.0


def alpha_word_frac(text: str) -> float:
    """Share of words with at least one letter (Gopher: at least 0.8)."""
    ws = _words(text)
    return sum(any(c.isalpha() for c in w) for w in ws) / len(ws) if ws else 0.0


def stop_word_count(text: str) -> int:
    """Occurrences of Gopher's 8 stop words: ``stop_word_count("The cat and the hat") -> 3``."""
    return sum(w.lower().strip(".,;:!?\"'") in STOP_WORDS for w in _words(text))


def terminal_punct_frac(text: str) -> float:
    """Share of lines ending in terminal punctuation (C4 keeps only such lines)."""
    ls = _lines(text)
    return sum(l.endswith(TERMINAL) for l in ls) / len(ls) if ls else 0.0


def dup_line_frac(text: str) -> float:
    """Share of lines that repeat an earlier line (Gopher: at most 0.3).

    >>> dup_line_frac("a\\nb\\na\\na")
    0.5
    """
    ls = _lines(text)
    if not ls:
        return 0.0
    return (len(ls) - len(set(ls))) / len(ls)


def top_ngram_char_frac(text: str, n: int = 2) -> float:
    """Characters in the most frequent word n-gram's occurrences over all word characters.

    Gopher's repetition rule (at most 0.20 for bigrams): keyword spam repeats a few n-grams.

    >>> round(top_ngram_char_frac("buy now buy now ok", 2), 3)     # 2 * 6 / 14
    0.857
    """
    ws = [w.lower() for w in _words(text)]
    if len(ws) < n:
        return 0.0
    grams = Counter(tuple(ws[i:i + n]) for i in range(len(ws) - n + 1))
    gram, count = grams.most_common(1)[0]
    if count < 2:
        return 0.0
    return min(1.0, count * sum(map(len, gram)) / sum(map(len, ws)))


def dup_ngram_char_frac(text: str, n: int = 5) -> float:
    """Characters covered by word n-grams that occur more than once, over all word characters.

    Gopher's rule for n = 5..10 (at most 0.15 for 5-grams): templated pages repeat whole phrases.

    >>> dup_ngram_char_frac("a b c a b c", 3)
    1.0
    """
    ws = [w.lower() for w in _words(text)]
    if len(ws) < n:
        return 0.0
    grams = [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]
    counts = Counter(grams)
    covered = np.zeros(len(ws), dtype=bool)
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered[i:i + n] = True
    lens = np.array([len(w) for w in ws])
    return float(lens[covered].sum() / lens.sum())


@dataclass(frozen=True)
class QualityRules:
    """Every rule's threshold (Gopher's value in the comment where it differs).

    The world's pages are short (a forum thread is a dozen words), so the length rule is
    lowered from Gopher's 50 words; the rest are Gopher's and C4's values.
    """

    min_words: int = 8                     # Gopher: 50 (our forum threads are short)
    max_words: int = 100_000               # Gopher: 100,000
    min_mean_word_len: float = 3.0         # Gopher: 3
    max_mean_word_len: float = 10.0        # Gopher: 10
    max_symbol_ratio: float = 0.1          # Gopher: 0.1 (# and ... per word)
    max_ellipsis_lines: float = 0.3        # Gopher: 0.3
    max_bullet_lines: float = 0.9          # Gopher: 0.9
    min_alpha_words: float = 0.8           # Gopher: 0.8
    min_stop_words: int = 2                # Gopher: 2
    min_terminal_lines: float = 0.5        # C4 drops lines without it; here: share per document
    max_dup_lines: float = 0.3             # Gopher: 0.3
    max_top_2gram: float = 0.2             # Gopher: 0.20
    max_dup_5gram: float = 0.3             # Gopher: 0.15 (our templated facts repeat phrases)
    code_exempt: tuple = ("mean_word_len", "symbol_ratio", "stop_words", "terminal_punct",
                          "alpha_words", "top_2gram", "dup_5gram", "dup_lines")  # prose-only rules


def rule_values(text: str) -> dict:
    """The value of every rule's statistic for ``text`` (what the thresholds are compared to)."""
    return {
        "words": word_count(text), "mean_word_len": mean_word_length(text),
        "symbol_ratio": symbol_ratio(text), "ellipsis_lines": ellipsis_line_frac(text),
        "bullet_lines": bullet_line_frac(text), "alpha_words": alpha_word_frac(text),
        "stop_words": stop_word_count(text), "terminal_punct": terminal_punct_frac(text),
        "dup_lines": dup_line_frac(text), "top_2gram": top_ngram_char_frac(text, 2),
        "dup_5gram": dup_ngram_char_frac(text, 5),
    }


RULE_ORDER = ("min_words", "max_words", "mean_word_len", "symbol_ratio", "ellipsis_lines",
              "bullet_lines", "alpha_words", "stop_words", "terminal_punct", "dup_lines",
              "top_2gram", "dup_5gram")


def rule_failures(text: str, rules: QualityRules = QualityRules(), is_code: bool = False) -> list:
    """The names of the rules ``text`` breaks (empty list: it passes), in :data:`RULE_ORDER`.

    This is the oracle for :func:`failure_matrix`, which checks many documents at once.
    """
    v = rule_values(text)
    fails = {
        "min_words": v["words"] < rules.min_words,
        "max_words": v["words"] > rules.max_words,
        "mean_word_len": not rules.min_mean_word_len <= v["mean_word_len"] <= rules.max_mean_word_len,
        "symbol_ratio": v["symbol_ratio"] > rules.max_symbol_ratio,
        "ellipsis_lines": v["ellipsis_lines"] > rules.max_ellipsis_lines,
        "bullet_lines": v["bullet_lines"] > rules.max_bullet_lines,
        "alpha_words": v["alpha_words"] < rules.min_alpha_words,
        "stop_words": v["stop_words"] < rules.min_stop_words,
        "terminal_punct": v["terminal_punct"] < rules.min_terminal_lines,
        "dup_lines": v["dup_lines"] > rules.max_dup_lines,
        "top_2gram": v["top_2gram"] > rules.max_top_2gram,
        "dup_5gram": v["dup_5gram"] > rules.max_dup_5gram,
    }
    return [name for name in RULE_ORDER if fails[name]
            and not (is_code and name in rules.code_exempt)]


def value_table(values: list[dict]) -> dict:
    """Column arrays of many :func:`rule_values` dicts: ``{statistic: array (N,)}``."""
    keys = values[0].keys() if values else rule_values("").keys()
    return {k: np.array([v[k] for v in values], dtype=float) for k in keys}


def failure_matrix(table: dict, is_code, rules: QualityRules = QualityRules()) -> np.ndarray:
    """Which rule each document breaks, for many documents at once: bool (N, len(RULE_ORDER)).

    ``table`` from :func:`value_table`. Unlike :func:`rule_failures` (one text, a list of
    names), every comparison is one numpy operation over all documents, so a grid of
    thresholds can be scored quickly (:func:`tune_rules`). Row ``i`` is true exactly where
    ``rule_failures`` of document ``i`` names the rule.
    """
    t, code = table, np.asarray(is_code, dtype=bool)
    cols = {
        "min_words": t["words"] < rules.min_words,
        "max_words": t["words"] > rules.max_words,
        "mean_word_len": (t["mean_word_len"] < rules.min_mean_word_len)
        | (t["mean_word_len"] > rules.max_mean_word_len),
        "symbol_ratio": t["symbol_ratio"] > rules.max_symbol_ratio,
        "ellipsis_lines": t["ellipsis_lines"] > rules.max_ellipsis_lines,
        "bullet_lines": t["bullet_lines"] > rules.max_bullet_lines,
        "alpha_words": t["alpha_words"] < rules.min_alpha_words,
        "stop_words": t["stop_words"] < rules.min_stop_words,
        "terminal_punct": t["terminal_punct"] < rules.min_terminal_lines,
        "dup_lines": t["dup_lines"] > rules.max_dup_lines,
        "top_2gram": t["top_2gram"] > rules.max_top_2gram,
        "dup_5gram": t["dup_5gram"] > rules.max_dup_5gram,
    }
    return np.stack([cols[r] & ~(code & (r in rules.code_exempt)) for r in RULE_ORDER], axis=1)


# the thresholds tune_rules searches, each listed from Gopher's value outward (ties keep the
# first, so the search moves away from Gopher's value only where that removes better)
TUNE_GRID = {
    "min_words": (50, 30, 20, 12, 8, 5),
    "min_stop_words": (2, 1, 0),
    "max_top_2gram": (0.2, 0.3, 0.4, 0.5, 0.6),
    "max_dup_5gram": (0.15, 0.3, 0.45, 0.6),
}


def tune_rules(table: dict, is_code, is_bad, base: QualityRules = QualityRules(),
               grid: dict = TUNE_GRID) -> tuple[QualityRules, dict]:
    """The thresholds in ``grid`` whose removals best match the labels: highest F1 at finding
    bad documents (removing = predicting bad), ties to the earliest in grid order.

    1) every combination of the grid's values (the other thresholds stay ``base``'s);
    2) the documents it removes (:func:`failure_matrix`); 3) precision, recall and F1 against
    ``is_bad``; 4) the best. Returns ``(rules, removal_prf of the best on these documents)``.
    The score on the documents it was tuned on is optimistic by construction: report the
    tuned rules on documents they were not tuned on (notebook 01, section 4).

    >>> t = value_table([rule_values("a b c"),
    ...                  rule_values("The river runs to the sea and people fish there.")])
    >>> rules, prf = tune_rules(t, [False, False], [True, False], grid={"min_words": (20, 5)})
    >>> rules.min_words, prf["precision"], prf["recall"]
    (5, 1.0, 1.0)
    """
    import itertools

    is_bad = np.asarray(is_bad, dtype=bool)
    names = list(grid)
    best, best_key = None, None
    for combo in itertools.product(*(grid[n] for n in names)):
        rules = _replace(base, **dict(zip(names, combo)))
        removed = failure_matrix(table, is_code, rules).any(axis=1)
        prf = removal_prf(removed, is_bad)
        p, r = prf["precision"], prf["recall"]
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        if best_key is None or f1 > best_key:
            best, best_key = (rules, prf | {"f1": f1}), f1
    return best


def _replace(rules: QualityRules, **kw) -> QualityRules:
    from dataclasses import replace

    return replace(rules, **kw)


# --------------------------------------------------------------------------------------------
# 2. A fastText-style classifier: hashed n-grams -> mean embedding -> linear
# --------------------------------------------------------------------------------------------


def hashed_ngrams(text: str, buckets: int, ngrams: int = 2) -> list[int]:
    """Bucket ids of the text's word 1..``ngrams``-grams (CRC-32 mod ``buckets``; the hashing trick).

    >>> hashed_ngrams("a b", 1000) == [zlib.crc32(b"a") % 1000, zlib.crc32(b"b") % 1000,
    ...                                zlib.crc32(b"a b") % 1000]
    True
    """
    ws = [w.lower() for w in re.findall(r"\w+|[^\w\s]", text)]
    ids = []
    for n in range(1, ngrams + 1):
        ids += [zlib.crc32(" ".join(ws[i:i + n]).encode("utf-8")) % buckets
                for i in range(len(ws) - n + 1)]
    return ids or [0]


def _torch_model(buckets: int, dim: int):
    import torch

    class HashedNgramClassifier(torch.nn.Module):
        """fastText: logit = w · mean(E[ngram ids]) + b.  ids (N,) with offsets (B,) -> (B,)."""

        def __init__(self):
            super().__init__()
            self.emb = torch.nn.EmbeddingBag(buckets, dim, mode="mean", sparse=True)
            self.out = torch.nn.Linear(dim, 1)

        def forward(self, ids, offsets):
            return self.out(self.emb(ids, offsets)).squeeze(-1)    # (B,)

    return HashedNgramClassifier()


@dataclass
class HashedNgramClassifier:
    """A trained classifier and how to score new texts with it (P(reference-like))."""

    model: object
    buckets: int
    ngrams: int
    history: list = field(default_factory=list)   # training loss per epoch

    def score(self, texts: list[str], batch: int = 512) -> np.ndarray:
        """P(text looks like the reference corpus) for each text, shape (N,)."""
        import torch

        out = []
        self.model.eval()
        with torch.no_grad():
            for lo in range(0, len(texts), batch):
                ids, offs = _pack([hashed_ngrams(t, self.buckets, self.ngrams)
                                   for t in texts[lo:lo + batch]])
                out.append(torch.sigmoid(self.model(ids, offs)).numpy())
        return np.concatenate(out) if out else np.zeros(0)


def _pack(id_lists):
    import torch

    offsets = torch.tensor([0] + [len(x) for x in id_lists[:-1]]).cumsum(0)     # (B,)
    ids = torch.tensor([i for x in id_lists for i in x], dtype=torch.long)      # (N,)
    return ids, offsets


def train_classifier(positive: list[str], negative: list[str], buckets: int = 1 << 16,
                     dim: int = 16, ngrams: int = 2, epochs: int = 10, lr: float = 2.0,
                     batch: int = 64, seed: int = 0, progress: bool = False) -> HashedNgramClassifier:
    """Train reference (label 1) against random web text (label 0) with binary cross-entropy.

    Plain SGD on sparse embedding gradients, as fastText does: a step touches only the rows of
    the n-grams in its batch, so a large hash table costs nothing per step. With ``progress``
    a bar shows the epochs and the loss as it trains.
    """
    from tqdm.auto import tqdm

    import torch

    if not positive or not negative:
        raise ValueError(f"the classifier needs both classes: got {len(positive)} reference "
                         f"and {len(negative)} web texts")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = _torch_model(buckets, dim)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    texts = positive + negative
    ys = torch.tensor([1.0] * len(positive) + [0.0] * len(negative))
    feats = [hashed_ngrams(t, buckets, ngrams) for t in texts]
    clf = HashedNgramClassifier(model, buckets, ngrams)
    bar = tqdm(range(epochs), desc="classifier epochs", disable=not progress)
    for _ in bar:
        perm = torch.randperm(len(texts), generator=g).tolist()
        total = 0.0
        model.train()
        for lo in range(0, len(perm), batch):
            idx = perm[lo:lo + batch]
            ids, offs = _pack([feats[i] for i in idx])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(ids, offs), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        clf.history.append(total / len(texts))
        bar.set_postfix(loss=f"{clf.history[-1]:.3f}")
    return clf


def removal_prf(removed: list[bool], is_bad: list[bool]) -> dict:
    """Precision and recall of a filter at finding bad documents (removing = predicting bad)."""
    removed, is_bad = np.asarray(removed, bool), np.asarray(is_bad, bool)
    tp = int((removed & is_bad).sum())
    p = tp / removed.sum() if removed.sum() else 1.0
    r = tp / is_bad.sum() if is_bad.sum() else 1.0
    return {"precision": float(p), "recall": float(r), "removed": int(removed.sum()),
            "bad": int(is_bad.sum()), "tp": tp}


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a rate of ``k`` successes in ``n`` trials (95% for z = 1.96).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at k = 0 or k = n.

    >>> [round(x, 3) for x in wilson_interval(10, 10)]
    [0.722, 1.0]
    >>> wilson_interval(0, 0)
    (0.0, 1.0)
    """
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return float(max(0.0, mid - half)), float(min(1.0, mid + half))


def format_rate(k: int, n: int) -> str:
    """A rate as a paper's table writes it: ``format_rate(9, 10) -> '0.90 (95% CI 0.60-0.98, n=10)'``."""
    lo, hi = wilson_interval(k, n)
    return f"{k / n if n else float('nan'):.2f} (95% CI {lo:.2f}-{hi:.2f}, n={n})"


def pr_curve(scores, is_bad) -> dict:
    """Precision and recall of "remove every document scoring below t" for every useful t.

    Thresholds are the distinct scores plus one above the maximum (remove everything);
    arrays of equal length, thresholds increasing.

    >>> c = pr_curve([0.1, 0.4, 0.8], [True, False, False])
    >>> c["threshold"].tolist(), c["precision"].tolist(), c["recall"].tolist()
    ([0.1, 0.4, 0.8, 1.8], [1.0, 1.0, 0.5, 0.3333333333333333], [0.0, 1.0, 1.0, 1.0])
    """
    scores, is_bad = np.asarray(scores, float), np.asarray(is_bad, bool)
    ts = np.unique(np.append(scores, scores.max() + 1.0 if len(scores) else 1.0))
    prec, rec = [], []
    for t in ts:
        r = removal_prf(scores < t, is_bad)
        prec.append(r["precision"])
        rec.append(r["recall"])
    return {"threshold": ts, "precision": np.array(prec), "recall": np.array(rec)}


def best_threshold(scores, is_bad) -> float:
    """The threshold of :func:`pr_curve` with the highest F1 (ties: the lowest threshold).

    >>> best_threshold([0.1, 0.4, 0.8], [True, False, False])
    0.4
    """
    c = pr_curve(scores, is_bad)
    p, r = c["precision"], c["recall"]
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    return float(c["threshold"][int(np.argmax(f1))])


__all__ = ["QualityRules", "rule_values", "rule_failures", "value_table", "failure_matrix",
           "tune_rules", "TUNE_GRID", "train_classifier", "removal_prf", "pr_curve",
           "best_threshold", "wilson_interval", "format_rate", "hashed_ngrams",
           "HashedNgramClassifier", "asdict"]
