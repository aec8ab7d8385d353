"""What a language model learned, measured on the world (notebook 02, "What the model learned").

Everything here reads the model's log-probabilities of continuations; nothing is generated
except in :func:`question_continuations`.

1. :func:`continuation_logprobs` -- log p(continuation | context), summed over the
   continuation's tokens (or, with ``per_token``, averaged over them), for many (context,
   continuation) pairs at once. The one primitive.
2. **Grammar** (:func:`grammar_probes`, :func:`score_grammar`): minimal pairs in the spirit of
   BLiMP (Warstadt et al. 2020). The model "knows" a rule when it gives the grammatical
   continuation more probability per token than the ungrammatical one:
   ``The frostfox`` -> `` lives`` / `` live``; ``Many frostfoxes`` -> `` live`` / `` lives``;
   ``She carried a skyloom.`` -> `` Her skyloom`` / `` His skyloom``; a / an. The two
   continuations of a pair can have different token counts (:func:`token_count_gaps`); a
   summed log-probability then favours the shorter one whatever the model knows, so the score
   compares per-token means, and an untrained model scores near one half.
3. **Knowledge** (:func:`knowledge_probes`, :func:`accuracy_by_seen`): each fact's probe
   (its canonical statement cut before the answer, ``Fact.probe``) is completed with every
   object of the same relation; the model's choice is the most probable one. Accuracy is
   split by how often the fact was stated in the pretraining pages (``World.fact_counts``).
4. **Questions** (:func:`question_continuations`): a base model continues a question as text;
   it was never taught that a question is a turn to be answered (notebook 04 teaches that).
5. **Leakage** (:func:`split_leakage`, :func:`page_tokens`): before reading a validation loss
   as "what the model can do on unseen text", check what of the validation text was seen:
   pages in a duplicate cluster that also reached training (a copy the dedup missed), and
   word n-grams of validation pages that occur verbatim in training pages (templates,
   boilerplate, copied passages -- the check GPT-3 ran against its benchmarks, Brown et al.
   2020, appendix C, with 13-grams).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model import GPT, IGNORE_INDEX, sequence_logprobs
from .world import RELATIONS, World, a_an, plural


def _device(model):
    return next(model.parameters()).device


@torch.no_grad()
def continuation_logprobs(model, tokenizer, pairs: list, batch_size: int = 64,
                          bos: bool = True, per_token: bool = False) -> list[float]:
    """Sum of log p(continuation tokens | context) for each ``(context, continuation)`` pair;
    with ``per_token``, that sum divided by the continuation's number of tokens.

    Context and continuation are encoded separately (so the continuation's tokens are the same
    whatever precedes them) and, with ``bos``, preceded by the end-of-text token, so the context
    reads as the start of a document -- as documents start in the packed token files.
    Sequences longer than ``block_size`` keep their last ``block_size`` tokens.
    """
    was_training = model.training
    model.eval()
    dev = _device(model)
    block = model.config.block_size
    seqs = []
    for ctx, cont in pairs:
        c_ids = ([tokenizer.eot_id] if bos else []) + tokenizer.encode_ordinary(ctx)
        n_ids = tokenizer.encode_ordinary(cont)
        if not n_ids:
            raise ValueError(f"empty continuation for context {ctx!r}")
        ids = (c_ids + n_ids)[-(block + 1):]
        seqs.append((ids, len(n_ids)))
    out = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i:i + batch_size]
        T = max(len(ids) for ids, _ in chunk) - 1
        x = torch.zeros(len(chunk), T, dtype=torch.long)                       # (B, T)
        y = torch.full((len(chunk), T), IGNORE_INDEX, dtype=torch.long)        # (B, T)
        for r, (ids, n) in enumerate(chunk):
            t = torch.tensor(ids)
            x[r, :len(ids) - 1] = t[:-1]
            y[r, len(ids) - 1 - n:len(ids) - 1] = t[-n:]                       # continuation only
        logits, _ = model(x.to(dev))                                           # (B, T, V)
        lp = sequence_logprobs(logits, y.to(dev)).tolist()                     # (B,)
        if per_token:
            lp = [v / n for v, (_, n) in zip(lp, chunk)]
        out.extend(lp)
    model.train(was_training)
    return out


# --------------------------------------------------------------------------------------------
# Grammar
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GrammarProbe:
    kind: str          # which rule: "agreement (singular)", "agreement (plural)", "pronoun", "a/an"
    context: str       # what the model reads
    good: str          # the grammatical continuation
    bad: str           # the ungrammatical one


def grammar_probes(world: World) -> list[GrammarProbe]:
    """Minimal pairs built from the world's entities, in the patterns its pages use.

    >>> from llmlab.config import get_preset; from llmlab.world import build_knowledge
    >>> p = grammar_probes(build_knowledge(get_preset("smoke").world))
    >>> sorted({x.kind for x in p})
    ['a/an', 'agreement (plural)', 'agreement (singular)', 'pronoun']
    """
    probes = []
    animals = [e for e in world.entities if e.kind == "animal"]
    inventions = [e for e in world.entities if e.kind == "invention"]
    for a in animals:
        probes.append(GrammarProbe("agreement (singular)", f"The {a.name}", " lives in the",
                                   " live in the"))
        probes.append(GrammarProbe("agreement (plural)", f"Many {plural(a.name)}",
                                   " live together", " lives together"))
        good = a_an(a.name)
        bad = ("a " if good.startswith("an ") else "an ") + a.name
        probes.append(GrammarProbe("a/an", "One day she saw", " " + good, " " + bad))
    for inv in inventions:
        for he, his, other in (("She", "Her", "His"), ("He", "His", "Her")):
            probes.append(GrammarProbe("pronoun", f"{he} carried {a_an(inv.name)}.",
                                       f" {his} {inv.name}", f" {other} {inv.name}"))
    return probes


def score_grammar(model, tokenizer, probes: list[GrammarProbe], per_token: bool = True) -> dict:
    """Share of probes of each kind where the grammatical continuation is more probable.

    With ``per_token`` (the default) the two continuations are compared by their mean
    log-probability per token, so a pair whose continuations have different token counts is
    not decided by the count: an untrained model, which gives every token about the same
    probability, scores near 0.5. With ``per_token=False`` the sums are compared, as BLiMP
    does with equal-length sentences; on pairs of unequal length that favours the shorter one.

    Returns ``{kind: (accuracy, n)}`` plus ``"all"``.
    """
    pairs = [(p.context, p.good) for p in probes] + [(p.context, p.bad) for p in probes]
    lp = continuation_logprobs(model, tokenizer, pairs, per_token=per_token)
    n = len(probes)
    right = defaultdict(list)
    for p, g, b in zip(probes, lp[:n], lp[n:]):
        right[p.kind].append(g > b)
        right["all"].append(g > b)
    return {k: (sum(v) / len(v), len(v)) for k, v in right.items()}


def untrained_grammar_baseline(model_config, tokenizer, probes: list[GrammarProbe],
                               seeds=range(8), per_token: bool = True) -> dict:
    """:func:`score_grammar` of untrained models, one per seed: ``{kind: (mean accuracy, n,
    lowest, highest)}`` over the seeds.

    One untrained model's score on one kind can sit far from 0.5: the pairs of a kind share
    their continuation strings (`` lives in the`` / `` live in the`` for every animal), so a
    random initialisation that happens to prefer one string prefers it in every pair. The mean
    over initialisations is the chance level a trained model is compared with.
    """
    runs = []
    with torch.random.fork_rng(devices=[]):          # leaves the caller's random state as it was
        for seed in seeds:
            torch.manual_seed(seed)
            runs.append(score_grammar(GPT(model_config).eval(), tokenizer, probes, per_token))
    out = {}
    for k in runs[0]:
        accs = [r[k][0] for r in runs]
        out[k] = (sum(accs) / len(accs), runs[0][k][1], min(accs), max(accs))
    return out


def token_count_gaps(tokenizer, probes: list[GrammarProbe]) -> dict:
    """How often the grammatical continuation has fewer, as many or more tokens than the
    ungrammatical one, by kind: ``{kind: {"good shorter", "same length", "good longer"}}``.

    Where "good shorter" is every pair of a kind, summed log-probabilities give that kind a
    perfect score even from a model that knows nothing.
    """
    out: dict = {}
    for p in probes:
        g, b = len(tokenizer.encode_ordinary(p.good)), len(tokenizer.encode_ordinary(p.bad))
        key = "good shorter" if g < b else "same length" if g == b else "good longer"
        row = out.setdefault(p.kind, {"good shorter": 0, "same length": 0, "good longer": 0})
        row[key] += 1
    return out


# --------------------------------------------------------------------------------------------
# Knowledge
# --------------------------------------------------------------------------------------------


def candidates_by_relation(world: World) -> dict:
    """Every object of each relation (known, held-out and unknown entities' facts alike)."""
    cands = defaultdict(set)
    for f in world.facts:
        cands[f.relation].add(str(f.object))
    return {r: sorted(c) for r, c in cands.items()}


def _completion(relation: str, obj: str) -> str:
    """What follows the probe in the canonical statement: " Garville." for "capital"."""
    template = RELATIONS[relation][1]
    tail = template.split("{o}", 1)[1]
    return f" {obj}{tail}"


def knowledge_probes(model, tokenizer, world: World, counts: dict, facts=None) -> list[dict]:
    """Complete each fact's probe with every candidate of its relation; pick the most probable.

    ``counts``: how often each fact id was stated in the pretraining pages. Returns one record
    per fact: its id, relation, probe, answer, the model's choice, whether it is right, the
    number of candidates (chance is one over it) and ``seen`` (the count).
    """
    cands = candidates_by_relation(world)
    facts = world.facts if facts is None else facts
    pairs, spans = [], []
    for f in facts:
        start = len(pairs)
        pairs.extend((f.probe, _completion(f.relation, c)) for c in cands[f.relation])
        spans.append((start, len(pairs)))
    lp = continuation_logprobs(model, tokenizer, pairs)
    out = []
    for f, (a, b) in zip(facts, spans):
        scores = lp[a:b]
        best = max(range(b - a), key=scores.__getitem__)
        choice = cands[f.relation][best]
        out.append({"fact_id": f.id, "relation": f.relation, "probe": f.probe,
                    "answer": str(f.object), "choice": choice, "correct": choice == str(f.object),
                    "n_candidates": b - a, "seen": int(counts.get(f.id, 0)),
                    "heldout": f.heldout})
    return out


BUCKETS = (("seen >= 5", lambda n: n >= 5), ("seen 1-4", lambda n: 1 <= n <= 4),
           ("never seen", lambda n: n == 0))


def accuracy_by_seen(records: list[dict]) -> dict:
    """``{bucket: {"accuracy", "chance", "n"}}`` over the buckets seen >= 5, 1-4 and never.

    >>> accuracy_by_seen([{"seen": 7, "correct": True, "n_candidates": 4},
    ...                   {"seen": 0, "correct": False, "n_candidates": 4}])["seen >= 5"]
    {'accuracy': 1.0, 'chance': 0.25, 'n': 1}
    """
    out = {}
    for name, test in BUCKETS:
        rs = [r for r in records if test(r["seen"])]
        if rs:
            out[name] = {"accuracy": sum(r["correct"] for r in rs) / len(rs),
                         "chance": sum(1 / r["n_candidates"] for r in rs) / len(rs), "n": len(rs)}
        else:
            out[name] = {"accuracy": float("nan"), "chance": float("nan"), "n": 0}
    return out


# --------------------------------------------------------------------------------------------
# A base model continues questions
# --------------------------------------------------------------------------------------------


def question_continuations(model, tokenizer, world: World, n: int = 6, max_new_tokens: int = 30,
                           seed: int = 0) -> list[dict]:
    """Greedy continuations of ``n`` bare questions about well-known facts.

    Each record: the question, the continuation, the answer, and ``answered``: whether the
    answer appears in the first line the model wrote (what an assistant's reply would be).
    """
    import random

    from .generate import generate

    counts = world.fact_counts()
    facts = sorted((f for f in world.facts if not f.heldout), key=lambda f: -counts[f.id])
    pool = facts[:max(4 * n, n)]
    chosen = random.Random(seed).sample(pool, min(n, len(pool)))
    dev = _device(model)
    out = []
    for f in chosen:
        ids = [tokenizer.eot_id] + tokenizer.encode_ordinary(f.question)
        idx = torch.tensor([ids], device=dev)
        gen = generate(model, idx, max_new_tokens, temperature=0, eot_id=tokenizer.eot_id)
        new = [t for t in gen[0, len(ids):].tolist() if t != tokenizer.eot_id]
        text = tokenizer.decode(new)
        first = text.strip("\n").split("\n")[0] if text.strip() else ""
        out.append({"question": f.question, "continuation": text, "answer": str(f.object),
                    "answered": str(f.object) in first})
    return out


# --------------------------------------------------------------------------------------------
# Leakage between the training and validation splits
# --------------------------------------------------------------------------------------------


def word_ngrams(text: str, n: int) -> set:
    """The set of word ``n``-grams of ``text`` (whitespace-split words).

    >>> sorted(word_ngrams("a b c a b", 2))
    [('a', 'b'), ('b', 'c'), ('c', 'a')]
    """
    words = text.split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def split_leakage(train_pages: list, val_pages: list, n: int = 13) -> dict:
    """How much of the validation split was already seen in training.

    ``*_pages`` are the world's pages (with ``.text`` and ``.cluster``; copies share their
    original's cluster). Returns the number of validation pages whose duplicate cluster also
    has a training page (``shared_cluster``), and the share of validation word ``n``-grams
    found verbatim in training pages (``ngram_overlap``, over ``val_ngrams`` distinct-per-page
    n-grams), with the pages for which more than half of their n-grams were seen
    (``mostly_seen``).
    """
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    train_clusters = {p.cluster for p in train_pages}
    seen: set = set()
    for p in train_pages:
        seen |= word_ngrams(p.text, n)
    total = hit = mostly = 0
    for p in val_pages:
        grams = word_ngrams(p.text, n)
        k = len(grams & seen)
        total, hit = total + len(grams), hit + k
        mostly += bool(grams) and k > len(grams) / 2
    return {"n_val": len(val_pages), "shared_cluster": sum(p.cluster in train_clusters
                                                           for p in val_pages),
            "n": n, "val_ngrams": total, "in_train": hit,
            "ngram_overlap": hit / total if total else 0.0, "mostly_seen": mostly}


def page_tokens(tokenizer, pages: list) -> list[int]:
    """``pages``' texts tokenized and joined as the token files join documents: each text
    followed by the end-of-text token (so :func:`llmlab.train.bytes_of_tokens` counts the
    same bytes as :meth:`llmlab.world.World.entropy_of_pages`)."""
    ids: list[int] = []
    for p in pages:
        ids += tokenizer.encode_ordinary(p.text) + [tokenizer.eot_id]
    return ids


# --------------------------------------------------------------------------------------------
# Next-token distribution (the widget's engine)
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def top_next_tokens(model, tokenizer, text: str, k: int = 10, temperature: float = 1.0) -> list:
    """The ``k`` most probable next tokens after ``text`` at ``temperature``: [(token, prob)].

    The probabilities are those of the full softmax(logits / temperature), so they add up to
    at most one over the top k.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    was_training = model.training
    model.eval()
    ids = ([tokenizer.eot_id] + tokenizer.encode_ordinary(text))[-model.config.block_size:]
    logits, _ = model(torch.tensor([ids], device=_device(model)))               # (1, T, V)
    model.train(was_training)
    probs = F.softmax(logits[0, -1].float() / temperature, dim=-1)              # (V,)
    p, i = torch.topk(probs, min(k, probs.numel()))
    return [(tokenizer.decode([t]), float(q)) for t, q in zip(i.tolist(), p.tolist())]
