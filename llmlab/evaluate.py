"""Evaluating a chat model: batched generation, reply scoring, metrics with intervals
(notebook 04, sections 7-8; the reward model, PPO and DPO notebooks use the same).

1. :func:`greedy_batch` continues many prompts at once (equal lengths share a batch and a
   KV cache); :func:`generate_replies` prompts a model with conversations in a chat template
   and decodes its replies.
   With ``template="plain"`` the prompt is the question alone as the start of a document,
   the base model's own form (it has never seen a chat marker).
2. :func:`score_reply` scores one reply against one held-out item: the response format, a
   factual answer in the chat format (``correct``) and in any form (``correct_any_form``), an
   honest "I don't know", a refusal, a summary (:func:`summary_ok`) and a polite rewrite
   (:func:`polite_ok`), each checked against the world's ground truth.
3. :func:`evaluate_chat` turns scores into shares with their counts and 95% Wilson intervals
   (:func:`wilson_interval`; :func:`share` when several replies or pairs share one prompt and
   so carry less than independent ones); :func:`metrics_row` / :func:`metrics_row_ci` are one column of
   a comparison table, :func:`compare` sets two models side by side with the interval of
   their difference (:func:`diff_interval`), :func:`failures` lists the replies that fail.
"""
from __future__ import annotations

import math
import re
from typing import Iterable

import torch

from .chat import IDK_PREFIX, REFUSAL, STOP_TOKENS, tokenize_chat


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``k / n`` (Wilson 1927; Brown, Cai & DasGupta
    2001 recommend it over the normal approximation, which breaks at 0 and 1 and small n).

    ``(p + z^2 / 2n -+ z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n)`` with ``p = k / n``;
    ``(nan, nan)`` when ``n == 0``.

    >>> [round(v, 4) for v in wilson_interval(8, 10)]
    [0.4902, 0.9433]
    >>> [round(v, 4) for v in wilson_interval(0, 10)]
    [0.0, 0.2775]
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def diff_interval(k1: int, n1: int, k2: int, n2: int, z: float = 1.96) -> tuple[float, float]:
    """95% interval of the difference ``k1 / n1 - k2 / n2`` of two proportions, from their
    Wilson intervals (Newcombe 1998, method 10): ``d - sqrt((p1 - l1)^2 + (u2 - p2)^2)`` to
    ``d + sqrt((u1 - p1)^2 + (p2 - l2)^2)``. It treats the two samples as independent, which is
    conservative when both models answered the same prompts.

    >>> [round(v, 4) for v in diff_interval(8, 10, 2, 10)]
    [0.1618, 0.8027]
    >>> lo, hi = diff_interval(5, 10, 5, 10); lo < 0 < hi
    True
    """
    if n1 == 0 or n2 == 0:
        return float("nan"), float("nan")
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, z)
    l2, u2 = wilson_interval(k2, n2, z)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def share(k: int, n: int, groups: list[tuple[int, int]] | None = None) -> dict:
    """A rate with its count and 95% Wilson interval: ``{"rate", "k", "n", "ci", "n_eff"}``.

    ``groups`` gives ``(hits, replies)`` per prompt when several sampled replies to one prompt
    are counted. Replies to the same prompt agree more often than replies to different prompts,
    so they carry less information than as many independent replies: the interval is then
    Wilson's at the *effective* sample size ``n_eff = n / deff`` (Kish 1965), where the design
    effect ``deff`` is the variance of the rate estimated from the per-prompt counts over the
    binomial variance ``p (1 - p) / n``, at least 1. When every reply hit (or none did) the
    counts hold no spread to estimate it from; the design effect is then taken as 1, the value
    the estimate tends to as the rate nears 0 or 1 (one hit in many replies is one prompt's), so
    a share of 0 gets the same interval as a share one reply away from it would.

    >>> {k: v for k, v in share(8, 10).items() if k != "ci"}
    {'rate': 0.8, 'k': 8, 'n': 10, 'n_eff': 10.0}
    >>> share(4, 8, [(2, 2), (2, 2), (0, 2), (0, 2)])["n_eff"]   # two replies, one verdict per prompt
    3.0
    """
    n_eff = float(n)
    if groups and n and any(g[1] > 1 for g in groups):
        p, m = k / n, len(groups)
        if 0 < p < 1 and m > 1:
            nbar = n / m
            var = sum((h - p * r) ** 2 for h, r in groups) / (m * (m - 1) * nbar ** 2)
            n_eff = n / max(1.0, var / (p * (1 - p) / n))
    ci = wilson_interval(k * n_eff / n, n_eff) if n else (float("nan"), float("nan"))
    out = {"rate": k / n if n else float("nan"), "k": k, "n": n, "ci": list(ci), "n_eff": round(n_eff, 2)}
    if groups:
        out["prompts"] = len(groups)
    return out


def share_difference(b: dict, a: dict) -> tuple[float, float]:
    """95% interval of the difference of two shares ``b - a`` (Newcombe's method,
    :func:`diff_interval`) at their effective sample sizes (:func:`share`)."""
    def eff(s):
        n = s.get("n_eff", s["n"])
        return s["k"] * n / s["n"] if s["n"] else 0.0, n

    return diff_interval(*eff(b), *eff(a))


def fmt_share(s: dict, digits: int = 2, unit: str = "replies to") -> str:
    """A share as the series prints it: ``0.78 (95% CI 0.69-0.85, n=85)``; with several
    replies (or pairs: ``unit="pairs on"``) per prompt, ``n=160 replies to 40 prompts``.

    >>> fmt_share(share(8, 10))
    '0.80 (95% CI 0.49-0.94, n=10)'
    >>> fmt_share(share(4, 8, [(2, 2), (2, 2), (0, 2), (0, 2)]), 3, "pairs on")
    '0.500 (95% CI 0.125-0.875, n=8 pairs on 4 prompts)'
    """
    if not s["n"]:
        return "- (n=0)"
    n = f"{s['n']} {unit} {s['prompts']} prompts" if s.get("prompts", s["n"]) != s["n"] else s["n"]
    return f"{s['rate']:.{digits}f} (95% CI {s['ci'][0]:.{digits}f}-{s['ci'][1]:.{digits}f}, n={n})"


@torch.no_grad()
def greedy_batch(model, prompts: list[list[int]], max_new_tokens: int, stop_id: int,
                 also_stop: Iterable[int] = (), batch_size: int = 64) -> list[list[int]]:
    """Greedy continuations of many prompts with :func:`llmlab.generate.generate`.

    Prompts of equal length share a batch (so no padding and one KV cache); each continuation
    is cut after the first ``stop_id`` or ``also_stop`` id (kept) or ``max_new_tokens``, and
    never runs past the model's ``block_size``.
    """
    from .generate import generate

    device = next(model.parameters()).device
    block = model.config.block_size
    stops = {stop_id, *also_stop}
    out: list = [None] * len(prompts)
    by_len: dict = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    for T, idxs in sorted(by_len.items()):
        n_new = min(max_new_tokens, block - T)
        for k in range(0, len(idxs), batch_size):
            group = idxs[k:k + batch_size]
            if n_new <= 0:
                for i in group:
                    out[i] = []
                continue
            idx = torch.tensor([prompts[i] for i in group], device=device)     # (B, T)
            gen = generate(model, idx, n_new, temperature=0.0, eot_id=stop_id)  # (B, T + n)
            for i, g in zip(group, gen[:, T:].tolist()):
                cut = next((j for j, t in enumerate(g) if t in stops), None)
                out[i] = g if cut is None else g[:cut + 1]
    return out


PLAIN = "plain"   # no template: the last user message alone, as the start of a document


def generate_replies(model, tok, conversations: list[list[dict]], template: str = "chatml",
                     max_new_tokens: int = 40) -> list[dict]:
    """The model's greedy reply to each conversation (which ends with a user turn).

    Returns ``{"text", "stopped", "special_inside"}`` per conversation: the decoded reply
    without its stop token, whether the model ended its turn with the template's stop token,
    and whether it wrote any other special token. With ``template="plain"`` (:data:`PLAIN`)
    the prompt is end-of-text and the last user message as ordinary text -- how notebook 02
    asks the base model a question -- and the stop token is end-of-text.
    """
    if template == PLAIN:
        stop_id = tok.eot_id
        prompts = [[tok.eot_id] + tok.encode_ordinary(c[-1]["content"]) for c in conversations]
    else:
        stop_id = tok.special_tokens[STOP_TOKENS[template]]
        prompts = [tokenize_chat(c, tok, template, add_generation_prompt=True)[0]
                   for c in conversations]
    gens = greedy_batch(model, prompts, max_new_tokens, stop_id, also_stop=[tok.eot_id])
    out = []
    for g in gens:
        stopped = bool(g) and g[-1] == stop_id
        body = g[:-1] if g and g[-1] in (stop_id, tok.eot_id) else g
        out.append({"text": tok.decode(body).strip(), "stopped": stopped,
                    "special_inside": any(t in tok.inverse_special for t in body)})
    return out


def base_knows(model, tok, facts, max_new_tokens: int = 8) -> dict:
    """For each fact, whether the base model completes its probe with the answer.

    The probe is the canonical statement cut before the object ("The capital of Velmora is");
    the fact counts as known when the greedy continuation starts with the object.
    Returns ``{fact_id: bool}``.
    """
    facts = list(facts)
    prompts = [tok.encode(f.probe, allowed_special="none") for f in facts]
    gens = greedy_batch(model, prompts, max_new_tokens, tok.eot_id)
    return {f.id: tok.decode(g).strip().lower().startswith(f.object.lower())
            for f, g in zip(facts, gens)}


def mentions(text: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``text`` as whole words, ignoring case.

    >>> mentions("It is Kotiford.", "kotiford"), mentions("Kotifordshire.", "Kotiford")
    (True, False)
    """
    pat = r"(?<!\w)" + re.escape(phrase.lower()) + r"(?!\w)"
    return re.search(pat, text.lower()) is not None


RUDE_MARKERS = ("now!", "hurry", "right now", "fast")     # what the rude requests of the task say
POLITE_MARKERS = ("please", "could you", "would you")


def summary_ok(text: str, key_entities: list[str], source_chars: int) -> bool:
    """A summary passes when it names every key entity of the story (its hero and the animal
    met, from the world's ground truth) and is shorter than the story excerpt it summarises.

    >>> summary_ok("Ivo Quinzel meets a frostfox.", ["Ivo Quinzel", "frostfox"], 240)
    True
    >>> summary_ok("Ivo Morlo meets a frostfox.", ["Ivo Quinzel", "frostfox"], 240)   # wrong hero
    False
    """
    return bool(text.strip()) and len(text) < source_chars and all(mentions(text, e)
                                                                   for e in key_entities)


def polite_ok(text: str, names: list[str], content_words: list[str]) -> bool:
    """A polite rewrite passes when it keeps every name and content word of the rude request
    (so it asks for the same thing about the same entity), asks politely and drops the rude
    words.

    >>> polite_ok("Could you please tell me the capital of Velmora? Thank you.", ["Velmora"], ["capital"])
    True
    >>> polite_ok("Could you please tell me the capital of Brask? Thank you.", ["Velmora"], ["capital"])
    False
    >>> polite_ok("Tell me the capital of Velmora. Now!", ["Velmora"], ["capital"])
    False
    """
    low = text.lower()
    return (all(mentions(text, w) for w in list(names) + list(content_words))
            and any(m in low for m in POLITE_MARKERS)
            and not any(m in low if not m.isalpha() else mentions(low, m) for m in RUDE_MARKERS))


def score_reply(item: dict, reply: dict) -> dict:
    """Metrics of one reply to one held-out item (see :func:`evaluate_chat`).

    ``reply`` is one of :func:`generate_replies`' results. ``format``: the reply ended with
    the stop token, says something and holds no template marker. Then by the item's kind:

    - ``fact``: ``correct`` (in format, the answer as a word, no "I don't know");
      ``correct_any_form`` (the answer as a word anywhere in what the model wrote, no "I don't
      know", *no* format needed: knowledge apart from format); ``distractor_any_form`` (the
      same test with another object of the relation, the rate of hits by chance); ``wrong``
      (in format, no answer, no "I don't know": a confident wrong reply);
    - ``unknown``: ``idk`` (in format, opens with "I don't know"); ``hallucinated`` (in
      format and no "I don't know" anywhere: an answer about an entity that does not exist);
    - ``decline``: ``refused`` (in format, "sorry" or "can't help"); ``partial_refusal``
      (refused, but with more than the refusal);
    - ``summary``: ``summary_ok`` (in format and :func:`summary_ok`);
    - ``polite``: ``polite_ok`` (in format and :func:`polite_ok`); ``names_kept`` (in format
      and every name of the request kept).

    >>> ok = {"stopped": True, "special_inside": False}
    >>> score_reply({"kind": "fact", "answer": "Kotiford"}, ok | {"text": "It is Kotiford."})
    {'format': True, 'correct': True, 'correct_any_form': True, 'wrong': False}
    >>> score_reply({"kind": "fact", "answer": "Kotiford"},
    ...             {"stopped": False, "special_inside": False, "text": "Kotiford. The road"})
    {'format': False, 'correct': False, 'correct_any_form': True, 'wrong': False}
    """
    text = reply["text"]
    low = text.lower()
    idk = IDK_PREFIX.lower()
    fmt = reply["stopped"] and bool(low) and not reply["special_inside"]
    s = {"format": fmt}
    kind = item["kind"]
    if kind == "fact":
        said = mentions(low, str(item["answer"]))
        s["correct"] = fmt and said and idk not in low
        s["correct_any_form"] = said and idk not in low
        if "distractor" in item:
            s["distractor_any_form"] = mentions(low, str(item["distractor"])) and idk not in low
        s["wrong"] = fmt and not said and idk not in low
    elif kind == "unknown":
        s["idk"] = fmt and low.startswith(idk)
        if "entity" in item:
            s["hallucinated"] = fmt and idk not in low
    elif kind == "decline":
        s["refused"] = fmt and ("sorry" in low or "can't help" in low)
        s["partial_refusal"] = s["refused"] and low.strip() != REFUSAL.lower()
    elif kind == "summary" and "key_entities" in item:
        s["summary_ok"] = fmt and summary_ok(text, item["key_entities"], item["source_chars"])
    elif kind == "polite" and "names" in item:
        s["polite_ok"] = fmt and polite_ok(text, item["names"], item["content_words"])
        s["names_kept"] = fmt and all(mentions(text, n) for n in item["names"])
    return s


# name: (kind of item it is measured on, or None for all; key of score_reply). Fact shares
# count only the facts of ``known`` (see evaluate_chat).
METRICS = {
    "format": (None, "format"),
    "factual": ("fact", "correct"),
    "factual_any_form": ("fact", "correct_any_form"),
    "distractor_any_form": ("fact", "distractor_any_form"),
    "fact_wrong": ("fact", "wrong"),
    "idk": ("unknown", "idk"),
    "unknown_answered": ("unknown", "hallucinated"),
    "refusal": ("decline", "refused"),
    "partial_refusal": ("decline", "partial_refusal"),
    "summary": ("summary", "summary_ok"),
    "polite": ("polite", "polite_ok"),
    "polite_names_kept": ("polite", "names_kept"),
}


def evaluate_chat(model, tok, items: list[dict], template: str = "chatml", known: dict | None = None,
                  max_new_tokens: int = 40) -> dict:
    """Held-out metrics of ``model`` (notebook 04, section 8), one per entry of :data:`METRICS`:

    - ``format``: share of replies in the response format -- the model ends its turn with the
      template's stop token, says something, and writes no other template marker (instead of
      continuing the prompt);
    - ``factual``: share of held-out fact questions answered with the right object in format,
      over the facts in ``known`` that the base model knows (all held-out facts if ``known`` is
      None); ``factual_any_form`` the same without the format (knowledge apart from format),
      ``distractor_any_form`` its chance level, ``fact_wrong`` the confident wrong replies;
    - ``idk``: share of questions about unknown entities answered "I don't know";
      ``unknown_answered``: answered as if the entity existed;
    - ``refusal``: share of decline requests refused; ``partial_refusal``: refused with more;
    - ``summary``, ``polite``, ``polite_names_kept``: the two tasks, checked against the world.

    Returns the shares, the prompts behind them (``n_format`` ...), the successes (``k_...``),
    their 95% Wilson intervals (``ci``: ``{share: (low, high)}``, :func:`wilson_interval`), and
    the replies and their scores (for :func:`failures`). A share without prompts is nan.
    """
    replies = generate_replies(model, tok, [it["messages"] for it in items], template, max_new_tokens)
    scores = [score_reply(it, r) for it, r in zip(items, replies)]

    def count(kind, key, keep=lambda it: True):
        vals = [s[key] for it, s in zip(items, scores) if (kind is None or it["kind"] == kind)
                and key in s and keep(it)]
        return sum(vals), len(vals)

    keep = (lambda it: known.get(it["fact_id"], False)) if known is not None else (lambda it: True)
    counts = {name: count(kind, key, keep if kind == "fact" else (lambda it: True))
              for name, (kind, key) in METRICS.items()}
    k_all, n_all = count("fact", "correct")
    out = {name: (k / n if n else float("nan")) for name, (k, n) in counts.items()}
    out |= {f"n_{name}": n for name, (_, n) in counts.items()}
    out |= {f"k_{name}": k for name, (k, _) in counts.items()}
    out["ci"] = {name: wilson_interval(k, n) for name, (k, n) in counts.items()}
    return out | {"factual_all_heldout": k_all / n_all if n_all else float("nan"), "n": len(items),
                  "n_unknown": counts["idk"][1], "n_decline": counts["refusal"][1],
                  "replies": replies, "scores": scores, "template": template}


HEADLINE = ("format", "factual", "factual_any_form", "idk", "refusal", "summary", "polite")


def metrics_row(m: dict, keys=HEADLINE) -> dict:
    """The headline shares of an :func:`evaluate_chat` result, rounded for a table (None
    where a share has no prompts, e.g. ``factual`` when the base model knows no held-out fact);
    keys ``m`` does not have are left out."""
    return {k: nan_to_none(round(float(m[k]), 3)) for k in keys if k in m}


def rate_ci(k: int, n: int) -> str:
    """``k / n`` as a paper's table writes it.

    >>> rate_ci(8, 10)
    '0.80 (95% CI 0.49-0.94, n=10)'
    """
    if not n:
        return "- (n=0)"
    lo, hi = wilson_interval(k, n)
    return f"{k / n:.2f} (95% CI {lo:.2f}-{hi:.2f}, n={n})"


def metrics_row_ci(m: dict, keys=HEADLINE) -> dict:
    """The headline shares as a paper's table writes them: ``0.78 (95% CI 0.69-0.85, n=85)``."""
    out = {}
    for k in keys:
        if k not in m:
            continue
        n, (lo, hi) = m[f"n_{k}"], m["ci"][k]
        out[k] = f"{m[k]:.2f} (95% CI {lo:.2f}-{hi:.2f}, n={n})" if n else "- (n=0)"
    return out


def compare(a: dict, b: dict, names: tuple = ("A", "B"), keys=HEADLINE) -> dict:
    """Two :func:`evaluate_chat` results side by side: ``{metric: {name_a, name_b,
    "difference", "resolved"}}``; the difference ``a - b`` carries its 95% interval
    (:func:`diff_interval`) and ``resolved`` says whether that interval excludes zero -- if
    not, this evaluation cannot tell the two models apart on that metric."""
    rows = {}
    for k in keys:
        if k not in a or k not in b:
            continue
        n1, n2 = a[f"n_{k}"], b[f"n_{k}"]
        row = {names[0]: rate_ci(a[f"k_{k}"], n1), names[1]: rate_ci(b[f"k_{k}"], n2)}
        if n1 and n2:
            lo, hi = diff_interval(a[f"k_{k}"], n1, b[f"k_{k}"], n2)
            row["difference"] = f"{a[k] - b[k]:+.2f} ({lo:+.2f} to {hi:+.2f})"
            row["resolved"] = bool(lo > 0 or hi < 0)
        else:
            row["difference"], row["resolved"] = "-", False
        rows[k] = row
    return rows


def failures(items: list[dict], m: dict, metric: str, value: bool = False, k: int = 3,
             known: dict | None = None) -> list[tuple[str, str]]:
    """Up to ``k`` (prompt, reply) pairs of :func:`evaluate_chat` result ``m`` whose score for
    ``metric`` (a key of :data:`METRICS`) is ``value``, one per distinct underlying item
    (fact, entity, request) where the items say which."""
    kind, key = METRICS[metric]
    out, seen = [], set()
    for it, r, s in zip(items, m["replies"], m["scores"]):
        if (kind is not None and it["kind"] != kind) or key not in s or s[key] != value:
            continue
        if kind == "fact" and known is not None and not known.get(it["fact_id"], False):
            continue
        ident = it.get("fact_id") or it.get("entity") or it.get("request") or it["messages"][-1]["content"]
        if ident in seen:
            continue
        seen.add(ident)
        out.append((it["messages"][-1]["content"], r["text"]))
        if len(out) == k:
            break
    return out


def nan_to_none(x: float):
    return None if isinstance(x, float) and math.isnan(x) else x
