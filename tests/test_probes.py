"""Probes (notebook 02, "What the model learned"): log-probs against a direct computation,
minimal pairs, buckets by hand, and a short training run that must raise knowledge accuracy."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmlab import probes
from llmlab.config import ModelConfig, TrainConfig, get_preset
from llmlab.device import seed_everything
from llmlab.model import GPT
from llmlab.train import train
from llmlab.world import build_knowledge


class ByteTokenizer:
    """Bytes as tokens, 256 = end of text: the simplest tokenizer, for tests."""

    eot_id = 256
    vocab_size = 257

    def encode_ordinary(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


TOK = ByteTokenizer()
WORLD = build_knowledge(get_preset("smoke").world)


def test_continuation_logprobs_match_a_direct_computation():
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=257, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    pairs = [("ab", "cd"), ("hello", " w"), ("x", "yz!")]
    got = probes.continuation_logprobs(m, TOK, pairs, batch_size=2)   # two batches, padding
    for (ctx, cont), lp in zip(pairs, got):
        ids = [256] + list(ctx.encode()) + list(cont.encode())
        logits, _ = m(torch.tensor([ids[:-1]]))
        logp = F.log_softmax(logits[0], -1)
        n = len(cont)
        ref = sum(logp[len(ids) - 1 - n + j, ids[len(ids) - n + j]].item() for j in range(n))
        assert lp == pytest.approx(ref, abs=1e-4)
    with pytest.raises(ValueError, match="empty continuation"):
        probes.continuation_logprobs(m, TOK, [("a", "")])


def test_grammar_pairs_differ_only_in_the_rule():
    ps = probes.grammar_probes(WORLD)
    assert {p.kind for p in ps} == {"agreement (singular)", "agreement (plural)", "pronoun", "a/an"}
    for p in ps:                 # the same words but one: the word the rule decides
        g, b = p.good.split(), p.bad.split()
        assert len(g) == len(b) and sum(x != y for x, y in zip(g, b)) == 1, (p.kind, p.good, p.bad)
    a_an = [p for p in ps if p.kind == "a/an"]
    assert all((" an " + p.good.split()[-1]) in (p.good, p.bad) for p in a_an)


def test_accuracy_by_seen_by_hand():
    recs = [{"seen": 9, "correct": True, "n_candidates": 4}, {"seen": 5, "correct": False, "n_candidates": 2},
            {"seen": 2, "correct": True, "n_candidates": 10}, {"seen": 0, "correct": False, "n_candidates": 5}]
    acc = probes.accuracy_by_seen(recs)
    assert acc["seen >= 5"] == {"accuracy": 0.5, "chance": pytest.approx(0.375), "n": 2}
    assert acc["seen 1-4"]["accuracy"] == 1.0 and acc["never seen"]["n"] == 1


def test_top_next_tokens_sum_to_one_over_the_vocabulary():
    m = GPT(ModelConfig(vocab_size=257, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    top = probes.top_next_tokens(m, TOK, "abc", k=257, temperature=0.5)
    assert sum(p for _, p in top) == pytest.approx(1.0, abs=1e-4)
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    hot = probes.top_next_tokens(m, TOK, "abc", k=1, temperature=5.0)[0][1]
    assert hot < top[0][1]   # a higher temperature flattens the distribution
    with pytest.raises(ValueError, match="temperature"):
        probes.top_next_tokens(m, TOK, "abc", temperature=0)


def test_training_on_statements_teaches_the_facts():
    """A short run on the facts' statements lifts their probe accuracy far above chance."""
    facts = [f for f in WORLD.facts if f.relation in ("capital", "habitat", "colour")]
    seen = [f for f in facts if not f.heldout]
    rng = np.random.default_rng(0)
    text = "".join(chr(0) + seen[i].statement for i in rng.integers(0, len(seen), 3000))
    data = np.array([256 if c == chr(0) else b for c in text for b in (c.encode() or [0])],
                    dtype=np.uint16)
    seed_everything(0)
    m = GPT(ModelConfig(vocab_size=257, block_size=48, n_layer=2, n_head=2, n_embd=48))
    counts = {f.id: 5 for f in seen}
    before = probes.accuracy_by_seen(probes.knowledge_probes(m, TOK, WORLD, counts, facts))
    train(m, data, data, TrainConfig(batch_size=16, max_steps=150, lr=1e-2, warmup_steps=10,
                                     eval_every=1000, eval_batches=1), device="cpu")
    after = probes.accuracy_by_seen(probes.knowledge_probes(m, TOK, WORLD, counts, facts))
    chance = after["seen >= 5"]["chance"]
    assert after["seen >= 5"]["accuracy"] >= max(0.6, 2 * chance), after
    assert after["seen >= 5"]["accuracy"] > before["seen >= 5"]["accuracy"] + 0.3, (before, after)
    g = probes.score_grammar(m, TOK, [p for p in probes.grammar_probes(WORLD)
                                      if p.kind == "agreement (singular)"])
    assert g["all"][1] == len([e for e in WORLD.entities if e.kind == "animal"])


def test_next_token_widget_draws_the_models_top_k():
    import matplotlib
    matplotlib.use("Agg")
    from llmlab.widgets.next_token import next_token_widget, plot_top_k, sample_continuation

    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=257, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    top = probes.top_next_tokens(m, TOK, "The", k=5)
    ax = plot_top_k(top, "The", 1.0)
    widths = sorted(b.get_width() for b in ax.patches)
    assert widths == pytest.approx(sorted(p for _, p in top))
    box = next_token_widget(m, TOK, ["The", "Many"], k=5)
    pick, text, temp = box.children[:3]
    pick.value = "Many"
    assert text.value == "Many"
    a = sample_continuation(m, TOK, "The", 1.0, max_new_tokens=5, seed=3)
    assert a == sample_continuation(m, TOK, "The", 1.0, max_new_tokens=5, seed=3)
    with pytest.raises(ValueError, match="at least one context"):
        next_token_widget(m, TOK, [])


def test_per_token_scores_do_not_depend_on_the_token_count():
    """A model that gives every token the same probability (zero embeddings: all logits 0)
    scores every continuation -ln V per token whatever its length; summed, the shorter wins."""
    m = GPT(ModelConfig(vocab_size=257, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        m.wte.weight.zero_()                     # tied: the output layer is zero too
    pairs = [("The fox", " live"), ("The fox", " lives"), ("x", " live together in the hills")]
    per_tok = probes.continuation_logprobs(m, TOK, pairs, per_token=True)
    summed = probes.continuation_logprobs(m, TOK, pairs)
    assert per_tok == pytest.approx([-math.log(257)] * 3, abs=1e-4)
    assert summed == pytest.approx([-math.log(257) * len(c.encode()) for _, c in pairs], abs=1e-3)


def test_untrained_grammar_scores_are_chance_per_token_not_one():
    """Plural agreement: " live together" is a byte shorter than " lives together", so summed
    log-probabilities give every untrained model a perfect score; per token, near one half."""
    ps = [p for p in probes.grammar_probes(WORLD) if p.kind == "agreement (plural)"]
    assert probes.token_count_gaps(TOK, ps)["agreement (plural)"]["good shorter"] == len(ps)
    cfg = ModelConfig(vocab_size=257, block_size=32, n_layer=1, n_head=2, n_embd=16)
    summed = probes.untrained_grammar_baseline(cfg, TOK, ps, seeds=range(6), per_token=False)
    per_tok = probes.untrained_grammar_baseline(cfg, TOK, ps, seeds=range(6))
    assert summed["agreement (plural)"][0] == 1.0                 # the length artefact
    assert 0.2 <= per_tok["agreement (plural)"][0] <= 0.8          # chance, on average
    assert per_tok["all"][1] == len(ps)


# --- leakage between splits ----------------------------------------------------------------


def _page(text, cluster):
    from types import SimpleNamespace
    return SimpleNamespace(text=text, cluster=cluster)


def test_split_leakage_counts_shared_clusters_and_seen_ngrams():
    train = [_page("the cat sat on the mat", 0), _page("a dog ran far away", 1)]
    val = [_page("the cat sat on a log", 0),          # a copy of cluster 0: 2 of 4 trigrams seen
           _page("a dog ran far away", 2),             # verbatim text, new cluster: 3 of 3 seen
           _page("nothing here is in training", 3)]    # 0 of 3 seen
    out = probes.split_leakage(train, val, n=3)
    assert out["n_val"] == 3 and out["shared_cluster"] == 1
    assert (out["in_train"], out["val_ngrams"]) == (5, 10)
    assert out["ngram_overlap"] == pytest.approx(0.5)
    assert out["mostly_seen"] == 1                       # exactly half is not "more than half"
    with pytest.raises(ValueError):
        probes.split_leakage(train, val, n=0)


def test_page_tokens_joins_pages_like_the_token_files():
    tok = ByteTokenizer()
    pages = [_page("ab", 0), _page("b\u00e9 a", 1)]
    ids = probes.page_tokens(tok, pages)
    assert ids == [97, 98, 256, 98, 0xC3, 0xA9, 32, 97, 256]
    # one byte per text byte plus one per separator: the bytes World.entropy_of_pages counts
    assert len(ids) == sum(len(p.text.encode("utf-8")) + 1 for p in pages)
