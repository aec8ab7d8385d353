"""Byte-level BPE (llmlab.tokenizer): hand-worked merges, round trips, naive vs fast, tiktoken."""
import doctest
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmlab import tokenizer as T
from llmlab.config import PRESETS
from llmlab.tokenizer import (GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN, SPECIAL_TOKENS, Tokenizer,
                              get_pair_counts, merge, split_text, train_fast, train_naive)

NS = len(SPECIAL_TOKENS)


def _world_texts(preset="smoke"):
    from llmlab import stages

    return [p.text for p in stages.get_world(preset).pages]


@pytest.fixture(scope="module")
def smoke_tok():
    return Tokenizer.train(_world_texts("smoke"), PRESETS["smoke"].tokenizer.vocab_size)


def test_docstring_examples():
    res = doctest.testmod(T)
    assert res.attempted >= 10 and res.failed == 0


# --- hand-worked --------------------------------------------------------------------------


def test_pair_counts_and_merge_by_hand():
    assert get_pair_counts([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert get_pair_counts([5]) == {} and get_pair_counts([]) == {}
    assert merge([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]
    assert merge([1, 1, 1, 1], (1, 1), 9) == [9, 9]
    assert merge([1, 1, 1], (1, 1), 9) == [9, 1]
    assert merge([2, 1], (1, 2), 9) == [2, 1]


def test_hand_worked_bpe():
    # "aaabdaaabac" (Wikipedia's BPE example) is one pre-token chunk (letters only).
    # counts: aa 4, ab 2, ba 1, bd 1, da 1, ac 1  -> merge (a,a)=256:  Z a b d Z a b a c
    # counts: Za 2, ab 2, ...; tie -> smaller pair (97,98)=ab < (256,97) -> 257 = ab: Z Y d Z Y a c
    # counts: (256,257) 2, others 1 -> 258 = aaab: X d X a c
    a, b = ord("a"), ord("b")
    merges = train_naive("aaabdaaabac", 256 + 3, special_tokens=[])
    assert merges == [(a, a), (a, b), (256, 257)]
    assert train_fast("aaabdaaabac", 256 + 3, special_tokens=[]) == merges
    tok = Tokenizer(merges, special_tokens=[])
    assert tok.encode("aaabdaaabac") == [258, ord("d"), 258, a, ord("c")]
    assert tok.token_bytes(258) == b"aaab"


def test_merges_never_cross_chunks():
    # without pre-tokenisation "g," / "g!" / "g " would be among the most frequent pairs; with it
    # the chunks are 'the', ' dog', ',', ' the', ' dog', '!', ' ': only letters merge
    text = "the dog, the dog! " * 50
    merges = train_naive(text, 256 + 6, special_tokens=[])
    tok = Tokenizer(merges, special_tokens=[])
    made = {tok.token_bytes(256 + i) for i in range(len(merges))}
    assert all(b.strip(b" ").isalpha() and not b.endswith(b" ") for b in made), made
    assert b" dog" in made and b" the" in made
    with pytest.raises(ValueError, match="ran out of pairs after 6 merges"):
        train_fast(text, 256 + 7, special_tokens=[])   # ' the' and ' dog' take 3 merges each


def test_split_patterns_match_tiktokens_examples():
    assert split_text("I've 12345 cats!!\n\n  ok", GPT4_SPLIT_PATTERN) == \
        ["I", "'ve", " ", "123", "45", " cats", "!!\n\n", " ", " ok"]
    assert split_text("I've 12345 cats", GPT2_SPLIT_PATTERN) == ["I", "'ve", " 12345", " cats"]


# --- properties ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_round_trip_any_unicode(smoke_tok, s):
    assert smoke_tok.decode(smoke_tok.encode(s, allowed_special="none")) == s
    assert smoke_tok.decode(smoke_tok.encode_ordinary(s)) == s


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), min_size=30, max_size=300),
       st.integers(1, 40))
def test_fast_equals_naive_on_random_text(text, n_merges):
    try:
        naive = train_naive(text, 256 + n_merges, special_tokens=[])
    except ValueError:   # the text ran out of pairs: fast must say so too
        with pytest.raises(ValueError, match="ran out of pairs"):
            train_fast(text, 256 + n_merges, special_tokens=[])
        return
    assert train_fast(text, 256 + n_merges, special_tokens=[]) == naive


@pytest.mark.parametrize("pattern", [GPT4_SPLIT_PATTERN, GPT2_SPLIT_PATTERN])
def test_fast_equals_naive_on_corpus_texts(pattern):
    texts = _world_texts("smoke")
    rng = random.Random(0)
    samples = [texts, rng.sample(texts, 10), ["abab " * 30 + "aaaa bbbb " * 7], ["🙂 héllo wörld 😀😀 " * 9]]
    for s, n in zip(samples, (150, 60, 5, 12)):
        naive = train_naive(s, 256 + n + NS, pattern)
        assert len(naive) == n and train_fast(s, 256 + n + NS, pattern) == naive


def test_vocab_layout_and_specials(smoke_tok):
    tok = smoke_tok
    assert tok.vocab_size == PRESETS["smoke"].tokenizer.vocab_size
    assert len(tok.merges) == tok.vocab_size - 256 - NS
    assert list(tok.special_tokens) == SPECIAL_TOKENS
    assert sorted(tok.special_tokens.values()) == list(range(tok.vocab_size - NS, tok.vocab_size))
    assert tok.eot_id == tok.special_tokens["<|endoftext|>"] and tok.pad_id == tok.special_tokens["<|pad|>"]
    # every merge token is the concatenation of its pair's bytes; every id has bytes
    for i, (a, b) in enumerate(tok.merges):
        assert tok.token_bytes(256 + i) == tok.token_bytes(a) + tok.token_bytes(b)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.token_bytes(tok.vocab_size)


def test_special_token_handling(smoke_tok):
    tok = smoke_tok
    text = "<|im_start|>user\nhi<|im_end|><|endoftext|>"
    with pytest.raises(ValueError, match="special token '<\\|im_start\\|>'"):
        tok.encode(text)                                     # default: none_raise
    ids = tok.encode(text, allowed_special="all")
    assert ids[0] == tok.special_tokens["<|im_start|>"] and ids[-1] == tok.eot_id
    assert ids[-2] == tok.special_tokens["<|im_end|>"]
    assert tok.decode(ids) == text
    # 'none': the markers are ordinary bytes, no special id appears
    plain = tok.encode(text, allowed_special="none")
    assert not set(plain) & set(tok.special_tokens.values()) and tok.decode(plain) == text
    assert plain == tok.encode_ordinary(text)
    # a subset: allowed ones become ids, the others still raise
    with pytest.raises(ValueError, match="<\\|endoftext\\|>"):
        tok.encode(text, allowed_special={"<|im_start|>", "<|im_end|>"})
    assert tok.encode("a<s>b", allowed_special={"<s>"})[1] == tok.special_tokens["<s>"]
    with pytest.raises(ValueError, match="not special"):
        tok.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(ValueError, match="allowed_special='sometimes'"):
        tok.encode("x", allowed_special="sometimes")
    # the longest marker wins: "<</SYS>>" is not "<" + "</s>" ...
    assert tok.encode("<</SYS>>", allowed_special="all") == [tok.special_tokens["<</SYS>>"]]


def test_bad_input_is_a_clear_error(smoke_tok):
    with pytest.raises(ValueError, match="smaller than the 256 byte tokens"):
        train_fast("abc", 100)
    with pytest.raises(ValueError, match="ran out of pairs"):
        train_fast("ab", 256 + 5 + NS)
    with pytest.raises(ValueError, match="ran out of pairs"):
        train_naive("ab", 256 + 5 + NS)
    with pytest.raises(ValueError, match="lone surrogate"):
        smoke_tok.encode("a\ud800b")
    with pytest.raises(TypeError, match="expects a str"):
        smoke_tok.encode_ordinary(b"bytes")
    with pytest.raises(ValueError, match="does not exist yet"):
        Tokenizer([(300, 1)])
    with pytest.raises(ValueError, match="unknown split pattern"):
        T.split_pattern("gpt5")


def test_save_load_round_trip(smoke_tok, tmp_path):
    path = tmp_path / "tok" / "tokenizer.json"
    smoke_tok.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]   # no temp file left
    tok2 = Tokenizer.load(path)
    assert tok2.merges == smoke_tok.merges and tok2.special_tokens == smoke_tok.special_tokens
    assert tok2.pattern == smoke_tok.pattern and tok2.vocab_size == smoke_tok.vocab_size
    text = "\n".join(_world_texts("smoke")[:5])
    assert tok2.encode(text) == smoke_tok.encode(text)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        Tokenizer.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"model": "x"}')
    with pytest.raises(ValueError, match="not an llmlab tokenizer"):
        Tokenizer.load(tmp_path / "other.json")


# --- agreement with trusted references ----------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_encode_equals_tiktoken_with_our_ranks_random(smoke_tok, s):
    enc = smoke_tok.to_tiktoken()
    assert smoke_tok.encode_ordinary(s) == enc.encode_ordinary(s)


@pytest.mark.parametrize("pattern", [GPT4_SPLIT_PATTERN, GPT2_SPLIT_PATTERN])
def test_encode_equals_tiktoken_on_corpus(pattern):
    texts = _world_texts("smoke")
    tok = Tokenizer.train(texts, 512, pattern)
    enc = tok.to_tiktoken()
    for t in texts + ["<|endoftext|> and <|im_start|>", "   spaces\n\n\ttabs  ", "Ünïcödé 🙂 1234567"]:
        assert tok.encode_ordinary(t) == enc.encode_ordinary(t)
        assert tok.encode(t, allowed_special="all") == enc.encode(t, allowed_special="all")
    assert enc.n_vocab == tok.vocab_size


def test_compression_close_to_hugging_face(smoke_tok):
    texts = _world_texts("smoke")
    hf = T.train_hf_bpe(texts, smoke_tok.vocab_size)
    assert hf.get_vocab_size() == smoke_tok.vocab_size
    ours = T.bytes_per_token(smoke_tok.encode_ordinary, texts)
    theirs = T.bytes_per_token(lambda t: hf.encode(t).ids, texts)
    assert ours > 2.0                       # BPE compresses well beyond one byte per token
    assert abs(ours / theirs - 1) < 0.05    # same algorithm, same data: nearly the same
    assert hf.decode(hf.encode(texts[0]).ids) == texts[0]


def test_more_merges_compress_more():
    texts = _world_texts("smoke")
    bpt = [T.bytes_per_token(Tokenizer.train(texts, v).encode_ordinary, texts)
           for v in (256 + NS, 300, 400, 512)]
    assert bpt[0] == 1.0
    assert all(a < b for a, b in zip(bpt, bpt[1:])), bpt


def test_smaller_vocab_is_a_prefix_and_sweep_improves():
    texts = _world_texts("smoke")
    big = train_fast(texts, 512)
    assert train_fast(texts, 400) == big[:400 - 256 - NS]
    rows = T.vocab_sweep(texts[::2], texts[1::2], [300, 512, 400])     # held-out half
    assert [r["vocab_size"] for r in rows] == [300, 400, 512]
    assert rows[0]["ours"] < rows[1]["ours"] < rows[2]["ours"]
    assert all(abs(r["ours"] / r["tokenizers"] - 1) < 0.05 for r in rows)
    assert not any(r["complete"] for r in rows)
    # past the text's limit: every distinct chunk is one token, the sweep says so
    limit = len(train_fast(texts, 10**6, strict=False))
    assert 246 < limit < 10**6 - 266
    with pytest.raises(ValueError, match=f"ran out of pairs after {limit} merges"):
        train_fast(texts, 256 + limit + 1 + NS)
    last = T.vocab_sweep(texts, texts, [256 + limit + NS, 256 + limit + 50 + NS], peers=False)
    assert [r["complete"] for r in last] == [False, True]
    assert last[0]["n_merges"] == last[1]["n_merges"] == limit
    assert last[0]["ours"] == last[1]["ours"]


def test_gpt2_encoding_reports_a_reason_offline(monkeypatch, tmp_path):
    # an empty tiktoken cache and no network: the function must answer, not hang or raise
    import socket

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))

    def no_net(*a, **k):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", no_net)
    enc, reason = T.gpt2_encoding()
    assert enc is None and "not in tiktoken's cache" in reason
