"""Deduplication: exact, then near-duplicates with MinHash and LSH (notebook 01, section 3).

The web repeats itself: mirrors copy pages byte for byte, scrapers copy them with small edits.
Built up in steps, each simple version the test oracle of the next:

1. **Exact**: a hash of the normalised text (:func:`normalize`, :func:`exact_dedup`).
2. **Shingles and exact Jaccard**: a document as its set of word n-grams
   (:func:`shingles`), similarity as |A ∩ B| / |A ∪ B| (:func:`jaccard`). All pairs cost
   O(N²), fine for a sample (:func:`exact_jaccard_pairs`), hopeless for a crawl.
3. **MinHash** (Broder 1997): P[min h(A) = min h(B)] = J(A, B) for a random hash h, so the share
   of equal entries of two signatures estimates J (:func:`minhash_signatures`, written from
   scratch in numpy, vectorised over all documents at once; :func:`estimate_jaccard`).
4. **LSH banding**: cut each signature into b bands of r rows; two documents become a candidate
   pair if any band matches. A pair with Jaccard s is caught with probability
   1 - (1 - s^r)^b (:func:`s_curve`; Leskovec, Rajaraman & Ullman, *Mining of Massive Datasets*,
   section 3.4.2), so only near-duplicates are ever compared (:func:`lsh_candidate_pairs`).
5. **Confirm and cluster**: candidates whose (estimated or exact) Jaccard reaches the threshold
   are joined by union-find (:func:`connected_components`); one document is kept per cluster.
6. **Production path**: datasketch's ``MinHash.bulk`` and ``MinHashLSH``
   (:func:`datasketch_candidate_pairs`), the same steps in a maintained library.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from dataclasses import dataclass

import numpy as np

MERSENNE_31 = (1 << 31) - 1     # the prime of the universal hash family (a*x + b) mod p
_WORD_RE = re.compile(r"\w+")

# --------------------------------------------------------------------------------------------
# 1. Exact duplicates
# --------------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """Text as compared for exact duplicates: NFKC, lower case, words only, single spaces.

    >>> normalize("Hello,   WORLD!\\n")
    'hello world'
    """
    return " ".join(_WORD_RE.findall(unicodedata.normalize("NFKC", text).lower()))


def text_hash(text: str) -> str:
    """SHA-1 of the normalised text (what exact dedup compares)."""
    return hashlib.sha1(normalize(text).encode("utf-8")).hexdigest()


def exact_dedup(texts: list[str]) -> tuple[list[int], dict]:
    """Indices of the first document of each group of exact duplicates, and the groups.

    Returns ``(keep, groups)``: ``keep`` in input order; ``groups`` maps a hash to the list of
    indices that share it.

    >>> exact_dedup(["A b.", "c", "a B"])[0]
    [0, 1]
    """
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        groups.setdefault(text_hash(t), []).append(i)
    keep = sorted(g[0] for g in groups.values())
    return keep, groups


# --------------------------------------------------------------------------------------------
# 2. Shingles and exact Jaccard (the oracle)
# --------------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lower-cased word tokens: ``words("The cat, the hat.") -> ['the', 'cat', 'the', 'hat']``."""
    return _WORD_RE.findall(text.lower())


def shingles(text: str, n: int = 5) -> set[tuple]:
    """The set of word n-grams of ``text``; a text shorter than n words is one shingle.

    >>> sorted(shingles("a b c a b", 2))
    [('a', 'b'), ('b', 'c'), ('c', 'a')]
    """
    w = words(text)
    if len(w) < n:
        return {tuple(w)} if w else set()
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """|A ∩ B| / |A ∪ B| (1.0 for two empty sets).

    >>> jaccard({1, 2, 3}, {2, 3, 4})
    0.5
    """
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def exact_jaccard_pairs(sets: list[set], threshold: float) -> dict:
    """Every pair (i, j), i < j, with exact Jaccard >= ``threshold``: {(i, j): J}.

    All N² pairs at once with a sparse document x shingle matrix: the intersection sizes are
    the entries of X Xᵀ. Exact; the oracle that MinHash and LSH are measured against.
    """
    from scipy import sparse

    vocab: dict = {}
    rows, cols = [], []
    for i, s in enumerate(sets):
        for sh in s:
            rows.append(i)
            cols.append(vocab.setdefault(sh, len(vocab)))
    x = sparse.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)),
                          shape=(len(sets), max(len(vocab), 1)))            # (N, U)
    inter = sparse.triu(x @ x.T, k=1).tocoo()                                 # (N, N) |A ∩ B|
    size = np.array([len(s) for s in sets])                                   # (N,)
    union = size[inter.row] + size[inter.col] - inter.data
    jac = inter.data / np.maximum(union, 1)
    ok = jac >= threshold
    return {(int(i), int(j)): float(v) for i, j, v in zip(inter.row[ok], inter.col[ok], jac[ok])}


# --------------------------------------------------------------------------------------------
# 3. MinHash from scratch (numpy, vectorised over documents)
# --------------------------------------------------------------------------------------------


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finaliser: scrambles the bits of uint32 values (a bijection)."""
    h = h.astype(np.uint32, copy=True)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def shingle_hashes(docs_words: list[list[str]], n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """31-bit hashes of every word n-gram of every document, and which document each is from.

    1) each distinct word gets a CRC-32 (a Python loop over the *vocabulary*, not the text);
    2) the n-gram hash is a polynomial in its words' hashes, computed for all positions of all
       documents at once; 3) duplicates within a document are dropped.
    Returns ``(hashes, doc)`` of shape (S,) each, sorted by document. A document shorter than n
    words is one shingle (as :func:`shingles`); an empty one has none.
    """
    all_words = [w for ws in docs_words for w in ws]                                    # (W,)
    vocab = {w: i for i, w in enumerate(dict.fromkeys(all_words))}                      # (V,)
    word_hash = np.array([zlib.crc32(w.encode("utf-8")) for w in vocab], dtype=np.uint32)  # (V,)
    lengths = np.array([len(ws) for ws in docs_words], dtype=np.int64)                  # (D,)
    ids = np.fromiter(map(vocab.__getitem__, all_words), dtype=np.int64, count=len(all_words))
    flat = word_hash[ids]                                                               # (W,)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)            # (D,)
    n_sh = np.where(lengths >= n, lengths - n + 1, (lengths > 0).astype(np.int64))      # (D,)
    doc = np.repeat(np.arange(len(docs_words)), n_sh)                                   # (S,)
    pos = starts[doc] + (np.arange(len(doc)) - np.repeat(np.cumsum(n_sh) - n_sh, n_sh))  # (S,)
    width = np.minimum(lengths[doc], n)                                                  # (S,)
    h = np.zeros(len(doc), dtype=np.uint32)
    for k in range(n):                               # 2) h = fmix(h * 31 + word_k), k < width
        valid = k < width
        idx = np.where(valid, pos + k, 0)
        nxt = _fmix32(h * np.uint32(0x01000193) + flat[idx]) if len(flat) else h
        h = np.where(valid, nxt, h)
    h = h & np.uint32(MERSENNE_31)                   # into [0, 2^31): inputs of the hash family
    key = np.sort((doc.astype(np.uint64) << np.uint64(32)) | h.astype(np.uint64))      # 3)
    key = key[np.r_[True, key[1:] != key[:-1]]] if len(key) else key      # unique, sorted
    return key & np.uint64(0xFFFFFFFF), (key >> np.uint64(32)).astype(np.int64)


def mod_mersenne31(x: np.ndarray) -> np.ndarray:
    """x mod (2^31 - 1) for uint64 x < 2^63 with shifts and masks instead of a division.

    Since 2^31 ≡ 1 (mod p): x = hi * 2^31 + lo ≡ hi + lo; two folds and one subtraction.

    >>> mod_mersenne31(np.array([2**31 - 1, 2**31, 2**62 + 5], dtype=np.uint64)).tolist()
    [0, 1, 6]
    """
    p, s = np.uint64(MERSENNE_31), np.uint64(31)
    y = (x & p) + (x >> s)
    y = (y & p) + (y >> s)
    return np.where(y >= p, y - p, y)


def hash_params(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The ``num_perm`` random hash functions h_k(x) = (a_k x + b_k) mod p, as arrays a, b."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, MERSENNE_31, num_perm, dtype=np.uint64)      # (P,)
    b = rng.integers(0, MERSENNE_31, num_perm, dtype=np.uint64)      # (P,)
    return a, b


def minhash_signatures(hashes: np.ndarray, doc: np.ndarray, n_docs: int, num_perm: int = 128,
                       seed: int = 1, scheme: str = "affine32", chunk: int = 1 << 12) -> np.ndarray:
    """MinHash signatures of all documents at once: sig[d, k] = min over d's shingles of h_k.

    ``hashes`` (S,) and ``doc`` (S,) come from :func:`shingle_hashes` (sorted by document).
    1) apply every hash function to every shingle, (S, P), in chunks; 2) take the minimum per
    document with ``np.minimum.reduceat`` over each document's run of rows.

    Two hash families:

    - ``"mod_prime"``, the textbook one: h_k(x) = (a_k x + b_k) mod (2^31 - 1). a, x < 2^31,
      so a*x + b < 2^63 is exact in uint64; :func:`mod_mersenne31` reduces it. About 10
      array passes per element.
    - ``"affine32"`` (the default): h_k(x) = a_k x' + b_k mod 2^32 with a_k odd and x' = x
      scrambled once by MurmurHash3's finaliser, which uint32 arithmetic does by wrapping
      around: 2 passes per element, several times faster. datasketch 2.x uses this family.

    Returns (D, P) uint32; a document with no shingles gets the all-max signature.
    """
    if scheme not in ("mod_prime", "affine32"):
        raise ValueError(f"scheme must be 'mod_prime' or 'affine32', not {scheme!r}")
    a, b = hash_params(num_perm, seed)
    empty = MERSENNE_31 if scheme == "mod_prime" else 0xFFFFFFFF
    dtype = np.uint64 if scheme == "mod_prime" else np.uint32
    if scheme == "affine32":
        a = (a.astype(np.uint32) << np.uint32(1)) | np.uint32(1)           # odd: a bijection
        b = b.astype(np.uint32)
    sig = np.full((n_docs, num_perm), empty, dtype=dtype)                  # (D, P)
    for lo in range(0, len(hashes), chunk):
        x, d = hashes[lo:lo + chunk], doc[lo:lo + chunk]                   # (s,) (s,)
        if scheme == "mod_prime":
            hv = mod_mersenne31(x[:, None] * a[None, :] + b[None, :])      # (s, P)
        else:
            xm = _fmix32(x.astype(np.uint32))                              # (s,)
            hv = np.multiply.outer(xm, a)                                  # (s, P) mod 2^32
            hv += b[None, :]                                               # in place
        run_starts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])          # first row per doc
        mins = np.minimum.reduceat(hv, run_starts, axis=0)                 # (docs in chunk, P)
        rows = d[run_starts]
        sig[rows] = np.minimum(sig[rows], mins)
    return sig.astype(np.uint32)


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Share of equal signature entries: an unbiased estimate of J. (..., P), (..., P) -> (...)."""
    return (sig_a == sig_b).mean(axis=-1)


# --------------------------------------------------------------------------------------------
# 4. LSH banding and the S-curve
# --------------------------------------------------------------------------------------------


def s_curve(s, r: int, b: int):
    """Probability that a pair with Jaccard ``s`` shares at least one of ``b`` bands of ``r`` rows.

    P = 1 - (1 - s^r)^b  (Mining of Massive Datasets, section 3.4.2). Works on arrays.

    >>> float(s_curve(0.5, 2, 2))     # 1 - (1 - 0.25)^2
    0.4375
    """
    return 1.0 - (1.0 - np.asarray(s, dtype=float) ** r) ** b


def lsh_candidate_pairs_naive(sig: np.ndarray, bands: int) -> set[tuple[int, int]]:
    """The same pairs as :func:`lsh_candidate_pairs` from a dict of buckets per band, in plain
    Python: the test oracle. ``{tuple(band row): [documents]}``, then every pair per bucket."""
    r = sig.shape[1] // bands
    pairs = set()
    for k in range(bands):
        buckets: dict = {}
        for i, row in enumerate(sig[:, k * r:(k + 1) * r].tolist()):
            buckets.setdefault(tuple(row), []).append(i)
        pairs |= {(g[x], g[y]) for g in buckets.values()
                  for x in range(len(g)) for y in range(x + 1, len(g))}
    return pairs


def lsh_candidate_pairs(sig: np.ndarray, bands: int) -> set[tuple[int, int]]:
    """Pairs (i, j), i < j, whose signatures agree on all rows of at least one band.

    ``sig`` (D, P) with P divisible by ``bands``; r = P / bands rows per band. Per band:
    1) hash each document's r values into one uint64; 2) sort the documents by it, so equal
    bands sit side by side; 3) a bucket is a run of rows whose band values are all equal (the
    full rows are compared, so a hash collision never joins different bands); 4) every pair
    within a bucket is a candidate. Sorting uint64 keys is several times faster than sorting
    the rows themselves (``np.unique`` on a void view, as a first version did).

    >>> sig = np.array([[1, 2, 3, 4], [1, 2, 9, 9], [7, 7, 3, 4], [5, 5, 5, 5]], dtype=np.uint32)
    >>> sorted(lsh_candidate_pairs(sig, 2))       # band 0: docs 0 and 1; band 1: docs 0 and 2
    [(0, 1), (0, 2)]
    """
    n_docs, num_perm = sig.shape
    if num_perm % bands:
        raise ValueError(f"num_perm={num_perm} is not divisible by lsh_bands={bands}")
    r = num_perm // bands
    pairs: set = set()
    for k in range(bands):
        band = sig[:, k * r:(k + 1) * r].astype(np.uint64)                        # (D, r)
        key = np.zeros(n_docs, dtype=np.uint64)                                  # 1) (D,)
        for j in range(r):
            key = _fmix64(key * np.uint64(0x9E3779B97F4A7C15) + band[:, j])
        order = np.argsort(key, kind="stable")                                   # 2) (D,)
        rows = band[order]                                                       # (D, r)
        same = np.all(rows[1:] == rows[:-1], axis=1)                             # 3) (D-1,)
        if not same.any():
            continue
        starts = np.flatnonzero(np.r_[True, ~same])                              # bucket starts
        sizes = np.diff(np.r_[starts, n_docs])
        for st, sz in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
            members = sorted(order[st:st + sz].tolist())                         # 4)
            for x in range(sz):
                for y in range(x + 1, sz):
                    pairs.add((members[x], members[y]))
    return pairs


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser on uint64 values (a bijection that mixes all bits)."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


# --------------------------------------------------------------------------------------------
# 5. Confirm and cluster
# --------------------------------------------------------------------------------------------


def connected_components(n: int, pairs) -> np.ndarray:
    """Cluster label of each of ``n`` items joined by ``pairs`` (union-find, path halving).

    The label is the smallest index in the cluster.

    >>> connected_components(5, [(0, 3), (3, 4)]).tolist()
    [0, 1, 2, 0, 0]
    """
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(i) for i in range(n)], dtype=np.int64)


@dataclass
class NearDedup:
    """The result of near-duplicate detection on a list of texts."""

    keep: list                     # indices kept (the first document of each cluster)
    labels: np.ndarray             # cluster label per document (smallest index in its cluster)
    candidates: set                # LSH candidate pairs
    confirmed: set                 # candidate pairs at or above the threshold
    signatures: np.ndarray         # (D, P) MinHash signatures

    @property
    def removed(self) -> int:
        return len(self.labels) - len(self.keep)


def confirm_exact_naive(pairs, hashes: np.ndarray, doc: np.ndarray, threshold: float) -> set:
    """Candidate pairs whose shingle-hash sets have Jaccard >= ``threshold`` (the oracle).

    Rebuilds each document's set by scanning every shingle (``hashes[doc == i]``), so its cost
    is (documents in a pair) x (all shingles): quadratic in the corpus. Kept as the test oracle
    of :func:`confirm_exact`, which gives the same pairs in linear time.
    """
    sets = {i: set(hashes[doc == i].tolist()) for i in {i for p in pairs for i in p}}
    return {p for p in pairs if jaccard(sets[p[0]], sets[p[1]]) >= threshold}


def doc_offsets(doc: np.ndarray, n_docs: int) -> np.ndarray:
    """Where each document's run of shingles starts in ``doc`` (sorted): (D + 1,) offsets.

    Document i's shingles are ``hashes[off[i]:off[i + 1]]``.

    >>> doc_offsets(np.array([0, 0, 2, 2, 2]), 4).tolist()
    [0, 2, 2, 5, 5]
    """
    return np.searchsorted(doc, np.arange(n_docs + 1), side="left")


def confirm_exact(pairs, hashes: np.ndarray, doc: np.ndarray, threshold: float,
                  n_docs: int | None = None) -> set:
    """Candidate pairs whose shingle-hash sets have Jaccard >= ``threshold``, in linear time.

    Unlike :func:`confirm_exact_naive`: the shingles are indexed by document once (``doc`` is
    sorted, so each document is one slice, :func:`doc_offsets`), and each document's set is
    built once from its own slice. Cost: O(S + shingles of the candidates), not O(S x D).

    >>> h, d = np.array([1, 2, 3, 1, 2, 4, 9]), np.array([0, 0, 0, 1, 1, 1, 2])
    >>> sorted(confirm_exact({(0, 1), (1, 2)}, h, d, 0.5))     # J(0, 1) = 2/4, J(1, 2) = 0
    [(0, 1)]
    """
    n_docs = int(doc[-1]) + 1 if n_docs is None and len(doc) else (n_docs or 0)
    off = doc_offsets(doc, n_docs)                                          # (D + 1,)
    sets: dict = {}

    def shingle_set(i):
        if i not in sets:
            sets[i] = set(hashes[off[i]:off[i + 1]].tolist())
        return sets[i]

    return {p for p in pairs if jaccard(shingle_set(p[0]), shingle_set(p[1])) >= threshold}


def near_dedup(texts: list[str], shingle_n: int = 5, num_perm: int = 128, bands: int = 16,
               threshold: float = 0.8, confirm: str = "exact", seed: int = 1) -> NearDedup:
    """Near-duplicate removal: shingles -> MinHash -> LSH -> confirm -> clusters -> keep one.

    ``confirm="exact"`` (the default, as in ``DataConfig.dedup_confirm``) computes the true
    Jaccard of each candidate pair's shingle sets (:func:`confirm_exact`, linear in the corpus);
    ``"estimate"`` keeps a pair if its signatures agree on at least ``threshold`` of entries.

    >>> a = "the cat sat on the mat and looked at the dog for a long time"
    >>> near_dedup([a, a + " today", "something else entirely is written here"]).keep
    [0, 2]
    """
    docs_words = [words(t) for t in texts]
    hashes, doc = shingle_hashes(docs_words, shingle_n)                     # 1) shingles (S,)
    sig = minhash_signatures(hashes, doc, len(texts), num_perm, seed)      # 2) (D, P)
    cand = lsh_candidate_pairs(sig, bands)                                 # 3) LSH
    if confirm == "exact":                                                 # 4) confirm
        ok = confirm_exact(cand, hashes, doc, threshold, len(texts))
    elif confirm == "estimate":
        c = np.array(sorted(cand), dtype=np.int64).reshape(-1, 2)          # (C, 2)
        est = estimate_jaccard(sig[c[:, 0]], sig[c[:, 1]]) if len(c) else np.zeros(0)  # (C,)
        ok = {(int(i), int(j)) for (i, j), e in zip(c, est) if e >= threshold}
    else:
        raise ValueError(f"confirm must be 'estimate' or 'exact', not {confirm!r}")
    labels = connected_components(len(texts), ok)                          # 5) clusters
    keep = [i for i in range(len(texts)) if labels[i] == i]                # 6) one per cluster
    return NearDedup(keep, labels, cand, ok, sig)


# --------------------------------------------------------------------------------------------
# 6. The production path: datasketch
# --------------------------------------------------------------------------------------------


def datasketch_signatures(texts: list[str], shingle_n: int = 5, num_perm: int = 128,
                          seed: int = 1) -> list:
    """datasketch ``LeanMinHash`` es of the texts' shingles, built with ``MinHash.bulk``."""
    from datasketch import LeanMinHash, MinHash

    data = [[" ".join(s).encode("utf-8") for s in shingles(t, shingle_n)] for t in texts]
    return [LeanMinHash(m) for m in MinHash.bulk(data, num_perm=num_perm, seed=seed)]


def datasketch_candidate_pairs(minhashes: list, bands: int, threshold: float = 0.8,
                               confirm: bool = True) -> tuple[set, set]:
    """Candidate pairs from datasketch's ``MinHashLSH`` with b bands, and those confirmed.

    Confirmation uses datasketch's own ``jaccard`` estimate against ``threshold``.
    """
    from datasketch import MinHashLSH

    num_perm = len(minhashes[0].hashvalues) if minhashes else 128
    lsh = MinHashLSH(num_perm=num_perm, params=(bands, num_perm // bands))
    cand: set = set()
    for i, m in enumerate(minhashes):
        for j in lsh.query(m):
            cand.add((j, i))
        lsh.insert(i, m)
    ok = {p for p in cand if minhashes[p[0]].jaccard(minhashes[p[1]]) >= threshold} \
        if confirm else set(cand)
    return cand, ok


# --------------------------------------------------------------------------------------------
# Measuring against the truth


def edit_words(text: str, frac: float, seed: int = 0) -> str:
    """A copy of ``text`` with a share ``frac`` of its words replaced by new ones.

    Pairs (text, edited copy) over a range of ``frac`` span the whole range of Jaccard
    similarity: notebook 01 uses them to measure LSH's detection rate against the S-curve.
    """
    import random

    rng = random.Random(seed)
    ws = text.split()
    for i in rng.sample(range(len(ws)), int(round(frac * len(ws)))):
        ws[i] = f"edit{rng.randrange(10**6)}"
    return " ".join(ws)

# --------------------------------------------------------------------------------------------


def cluster_pairs(labels) -> set[tuple[int, int]]:
    """All pairs (i, j), i < j, that share a cluster label."""
    by: dict = {}
    for i, c in enumerate(labels):
        by.setdefault(c, []).append(i)
    return {(g[x], g[y]) for g in by.values() for x in range(len(g)) for y in range(x + 1, len(g))}


def pair_prf(predicted: set, truth: set) -> dict:
    """Precision, recall and F1 of predicted duplicate pairs against true pairs."""
    tp = len(predicted & truth)
    p = tp / len(predicted) if predicted else 1.0
    r = tp / len(truth) if truth else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "predicted": len(predicted),
            "true": len(truth), "tp": tp}
