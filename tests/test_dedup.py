"""Exact and near-duplicate detection (notebook 01, section 3)."""
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmlab.data import dedup

VOCAB = [f"w{i}" for i in range(400)]


def _pair(rng: random.Random, n: int, edits: int) -> tuple[str, str]:
    """A random text and a copy with ``edits`` words replaced (Jaccard falls with edits)."""
    a = [rng.choice(VOCAB) for _ in range(n)]
    b = list(a)
    for i in rng.sample(range(n), edits):
        b[i] = rng.choice(VOCAB) + "x"
    return " ".join(a), " ".join(b)


def test_exact_dedup_uses_normalised_text():
    keep, groups = dedup.exact_dedup(["The cat.", "the  CAT", "a dog", "The cat!"])
    assert keep == [0, 2]
    assert sorted(len(g) for g in groups.values()) == [1, 3]


def test_shingles_and_jaccard_by_hand():
    assert dedup.shingles("a b c d", 3) == {("a", "b", "c"), ("b", "c", "d")}
    assert dedup.shingles("a b", 3) == {("a", "b")}
    assert dedup.jaccard({1, 2, 3, 4}, {3, 4, 5}) == pytest.approx(2 / 5)


def test_s_curve_by_hand():
    # r = 2, b = 3, s = 0.5: 1 - (1 - 0.25)^3 = 1 - 27/64
    assert dedup.s_curve(0.5, 2, 3) == pytest.approx(37 / 64)
    assert dedup.s_curve(0.0, 8, 16) == 0.0 and dedup.s_curve(1.0, 8, 16) == 1.0
    s = np.linspace(0, 1, 11)
    assert np.all(np.diff(dedup.s_curve(s, 8, 16)) >= 0)           # monotone
    assert dedup.s_curve(0.8, 8, 16) == pytest.approx(1 - (1 - 0.8 ** 8) ** 16)


def test_mersenne_mod_matches_numpy():
    x = np.random.default_rng(0).integers(0, 2 ** 63, 10_000, dtype=np.uint64)
    assert np.array_equal(dedup.mod_mersenne31(x), x % np.uint64(dedup.MERSENNE_31))


@pytest.mark.parametrize("scheme", ["mod_prime", "affine32"])
def test_minhash_estimate_is_unbiased(scheme):
    """Over many pairs, the mean error of the MinHash estimate is ~0 and its spread ~ sqrt(J(1-J)/P)."""
    rng = random.Random(0)
    texts = []
    for k in range(150):
        texts += list(_pair(rng, 120, rng.randint(0, 40)))
    ws = [dedup.words(t) for t in texts]
    h, d = dedup.shingle_hashes(ws, 3)
    sig = dedup.minhash_signatures(h, d, len(texts), num_perm=128, scheme=scheme)
    est = dedup.estimate_jaccard(sig[0::2], sig[1::2])
    exact = np.array([dedup.jaccard(dedup.shingles(texts[i], 3), dedup.shingles(texts[i + 1], 3))
                      for i in range(0, len(texts), 2)])
    err = est - exact
    se = np.sqrt(exact * (1 - exact) / 128)
    assert abs(err.mean()) < 3 * np.sqrt((se ** 2).mean() / len(err))   # unbiased
    assert np.abs(err).max() < 6 * se.max() + 1e-9
    assert np.corrcoef(est, exact)[0, 1] > 0.97


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.sampled_from(VOCAB[:30]), min_size=0, max_size=25), min_size=1,
                max_size=8), st.integers(1, 5))
def test_vectorised_shingle_hashes_match_the_python_sets(docs, n):
    """The numpy shingle hashing gives each document as many distinct hashes as distinct shingles."""
    h, d = dedup.shingle_hashes(docs, n)
    for i, ws in enumerate(docs):
        assert len(set(h[d == i].tolist())) == len(dedup.shingles(" ".join(ws), n))
    assert np.all(np.diff(d) >= 0)


@pytest.mark.parametrize("scheme, empty", [("mod_prime", dedup.MERSENNE_31),
                                           ("affine32", 0xFFFFFFFF)])
def test_identical_documents_get_identical_signatures(scheme, empty):
    ws = [["a", "b", "c", "d", "e", "f"], ["x", "y"], ["a", "b", "c", "d", "e", "f"], []]
    h, d = dedup.shingle_hashes(ws, 3)
    sig = dedup.minhash_signatures(h, d, 4, num_perm=64, scheme=scheme)
    assert np.array_equal(sig[0], sig[2]) and not np.array_equal(sig[0], sig[1])
    assert np.all(sig[3] == empty)                   # no shingles: the all-max signature


def test_chunking_does_not_change_signatures():
    ws = [[f"w{(i * 7 + j) % 50}" for j in range(30 + i)] for i in range(20)]
    h, d = dedup.shingle_hashes(ws, 3)
    assert np.array_equal(dedup.minhash_signatures(h, d, 20, 32, chunk=37),
                          dedup.minhash_signatures(h, d, 20, 32))


def test_lsh_bands_by_hand():
    sig = np.array([[1, 2, 3, 4], [1, 2, 9, 9], [7, 7, 3, 4], [5, 6, 7, 8]], dtype=np.uint32)
    assert dedup.lsh_candidate_pairs(sig, 2) == {(0, 1), (0, 2)}
    assert dedup.lsh_candidate_pairs(sig, 1) == set()
    with pytest.raises(ValueError, match="not divisible"):
        dedup.lsh_candidate_pairs(sig, 3)


def test_connected_components_by_hand():
    assert dedup.connected_components(6, [(4, 5), (1, 2), (2, 4)]).tolist() == [0, 1, 1, 3, 1, 1]


def test_numpy_path_agrees_with_datasketch():
    """Same documents: the numpy and datasketch Jaccard estimates agree within MinHash's error,
    and both find the near-duplicate pairs that exact Jaccard finds."""
    rng = random.Random(1)
    texts = []
    for k in range(40):
        a, b = _pair(rng, 100, rng.choice([0, 1, 2, 30, 60]))
        texts += [a, b]
    ws = [dedup.words(t) for t in texts]
    h, d = dedup.shingle_hashes(ws, 5)
    sig = dedup.minhash_signatures(h, d, len(texts), 128)
    ours = dedup.estimate_jaccard(sig[0::2], sig[1::2])
    mh = dedup.datasketch_signatures(texts, 5, 128)
    theirs = np.array([mh[i].jaccard(mh[i + 1]) for i in range(0, len(texts), 2)])
    assert np.abs(ours - theirs).max() < 0.2
    assert abs((ours - theirs).mean()) < 0.03
    sets = [dedup.shingles(t, 5) for t in texts]
    truth = set(dedup.exact_jaccard_pairs(sets, 0.8))
    ours_pairs = dedup.near_dedup(texts, 5, 128, 16, 0.8, confirm="exact").confirmed
    theirs_cand, _ = dedup.datasketch_candidate_pairs(mh, 16, 0.8)
    assert len(truth) >= 10
    assert ours_pairs <= truth                          # exact confirmation: no false pair
    assert len(ours_pairs) >= len(truth) - 2            # LSH misses a pair near 0.8 rarely
    assert len(theirs_cand & truth) >= len(truth) - 2   # datasketch's LSH finds them too


def test_exact_jaccard_pairs_matches_the_python_oracle():
    rng = random.Random(2)
    sets = [set(rng.sample(range(30), rng.randint(0, 12))) for _ in range(40)]
    want = {(i, j) for i in range(40) for j in range(i + 1, 40)
            if sets[i] | sets[j] and dedup.jaccard(sets[i], sets[j]) >= 0.3}
    got = dedup.exact_jaccard_pairs(sets, 0.3)
    assert set(got) == want
    for (i, j), v in got.items():
        assert v == pytest.approx(dedup.jaccard(sets[i], sets[j]))


def test_pair_prf_by_hand():
    r = dedup.pair_prf({(0, 1), (2, 3)}, {(0, 1), (4, 5), (6, 7)})
    assert (r["precision"], r["recall"]) == (0.5, pytest.approx(1 / 3))
    assert dedup.cluster_pairs([0, 1, 0, 0]) == {(0, 2), (0, 3), (2, 3)}


def _corpus(seed: int, n_pairs: int = 60) -> list[str]:
    """Random texts, each with a copy edited by 0 to 40 words (so Jaccard spans 0.2 to 1)."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n_pairs):
        a, b = _pair(rng, 80, rng.choice([0, 1, 3, 6, 10, 20, 40]))
        texts += [a, b]
    rng.shuffle(texts)
    return texts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confirm_exact_agrees_with_the_naive_oracle(seed):
    """The linear confirmation gives exactly the old (quadratic) algorithm's pairs and clusters."""
    texts = _corpus(seed)
    h, d = dedup.shingle_hashes([dedup.words(t) for t in texts], 5)
    sig = dedup.minhash_signatures(h, d, len(texts), 128)
    cand = dedup.lsh_candidate_pairs(sig, 16)
    assert len(cand) >= 10
    for threshold in (0.5, 0.8, 0.95):
        want = dedup.confirm_exact_naive(cand, h, d, threshold)
        assert dedup.confirm_exact(cand, h, d, threshold, len(texts)) == want
    old_ok = dedup.confirm_exact_naive(cand, h, d, 0.8)
    old_labels = dedup.connected_components(len(texts), old_ok)
    nd = dedup.near_dedup(texts)                       # the default is exact confirmation
    assert nd.confirmed == old_ok and nd.candidates == cand
    assert nd.labels.tolist() == old_labels.tolist()
    assert nd.keep == [i for i in range(len(texts)) if old_labels[i] == i]
    assert 0 < nd.removed < len(texts) // 2 + 1


def test_confirm_exact_by_hand():
    h = np.array([1, 2, 3, 1, 2, 4, 9])                # doc 0: {1,2,3}; doc 1: {1,2,4}; doc 2: {9}
    d = np.array([0, 0, 0, 1, 1, 1, 3])                # doc 2 has no shingles, doc 3 has one
    assert dedup.doc_offsets(d, 4).tolist() == [0, 3, 6, 6, 7]
    assert dedup.confirm_exact({(0, 1)}, h, d, 0.5) == {(0, 1)}      # 2 / 4
    assert dedup.confirm_exact({(0, 1)}, h, d, 0.51) == set()
    assert dedup.confirm_exact({(0, 2), (2, 3)}, h, d, 0.1, 4) == set()


def test_near_dedup_default_is_the_pipelines():
    import inspect

    from llmlab.config import DataConfig

    assert inspect.signature(dedup.near_dedup).parameters["confirm"].default == \
        DataConfig().dedup_confirm


def test_exact_confirmation_time_per_document_does_not_grow():
    """4x the documents costs about 4x the time (the old confirmation: about 16x)."""
    import time

    def per_doc(n_pairs):
        texts = _corpus(3, n_pairs)
        h, d = dedup.shingle_hashes([dedup.words(t) for t in texts], 5)
        cand = {(i, i + 1) for i in range(0, len(texts) - 1, 2)}   # one pair per two docs
        t0 = time.perf_counter()
        dedup.confirm_exact(cand, h, d, 0.8, len(texts))
        return (time.perf_counter() - t0) / len(texts)

    per_doc(200)                                                    # warm up
    small = min(per_doc(500) for _ in range(3))
    large = min(per_doc(2000) for _ in range(3))
    assert large < 2.5 * small, (small, large)


@pytest.mark.parametrize("seed", [0, 1])
def test_lsh_candidate_pairs_agree_with_the_dict_oracle(seed):
    """Few distinct values, so many bands collide: the sorted-hash buckets give the same pairs."""
    rng = np.random.default_rng(seed)
    sig = rng.integers(0, 3, (300, 16)).astype(np.uint32)
    for bands in (4, 8):
        got = dedup.lsh_candidate_pairs(sig, bands)
        assert got == dedup.lsh_candidate_pairs_naive(sig, bands) and len(got) > 100
    texts = _corpus(seed)
    h, d = dedup.shingle_hashes([dedup.words(t) for t in texts], 5)
    sig = dedup.minhash_signatures(h, d, len(texts), 128)
    assert dedup.lsh_candidate_pairs(sig, 16) == dedup.lsh_candidate_pairs_naive(sig, 16)
