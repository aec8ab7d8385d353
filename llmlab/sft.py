"""Supervised fine-tuning: instruction data, chat templates, loss on responses only (notebook 04).

The base model of notebook 02 knows the world's facts but *continues* a question instead of
answering it. SFT keeps the architecture and the cross-entropy loss and changes three things,
each of which notebook 04 measures by leaving it out:

1. **The data** (notebook 04, section 1): conversations built from the world --
   :func:`make_examples` writes factual questions with known answers, questions about entities
   that never appear (an honest "I don't know"), tasks over the world's text (summarise a
   story, list a category, rewrite politely), multi-turn chats and requests to decline.
   :func:`split_world` keeps facts, unknown entities, stories and decline requests apart for
   the held-out prompts (:func:`eval_items`). :func:`load_instructions` reads real Alpaca- or
   Dolly-style JSON / JSONL files into the same form.
2. **The template** (section 2): :func:`render` writes a conversation as text in the Llama-2
   or the ChatML format, with the special tokens reserved by notebook 01's tokenizer;
   :func:`tokenize_chat` turns it into ids plus a mask saying which tokens are the reply.
3. **The loss** (section 3): :func:`make_targets` sets the target of every prompt and
   template token to -100, and :func:`masked_nll` averages the cross-entropy over the reply
   tokens only (:func:`masked_nll_naive` is the same sum written out, the test oracle).

Then :func:`sft_train` fine-tunes at a learning rate 10-100x below pretraining's (section 4),
:func:`pad_batch` / :func:`pack_examples` build batches and :func:`batch_waste` measures what
each wastes (section 6), and :func:`generate_replies` / :func:`evaluate` score base and SFT
models on the held-out prompts (section 8).
"""
from __future__ import annotations

import json
import math
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from .model import IGNORE_INDEX
from .world import RELATIONS, World, a_an, fill

# --------------------------------------------------------------------------------------------
# 1. Instruction data from the world
# --------------------------------------------------------------------------------------------

SYSTEM_PROMPTS = ["You are a helpful assistant.", "You answer questions about the world.",
                  "Answer briefly and honestly."]
IDK_PREFIX = "I don't know"          # what an honest answer about an unknown entity starts with
REFUSAL = "Sorry, I can't help with that."
QUESTION_FORMS = ["{q}", "{q}", "Quick question: {q}", "Do you know this? {q}",
                  "Please tell me: {q}"]
RUDE_FORMS = ["Tell me {np}. Now!", "I want {np}, hurry up.", "Give me {np} right now.",
              "Just say {np}. Fast."]
POLITE_FORM = "Could you please tell me {np}? Thank you."
# the noun phrase of each relation, for the rewrite-politely task
NOUN_PHRASES = {
    "capital": "the capital of {s}", "language": "the language of {s}",
    "climate": "the climate of {s}", "export": "what {s} is known for",
    "born_in": "where {s} was born", "profession": "what {s} worked as",
    "birth_year": "the year {s} was born", "habitat": "where the {s} lives",
    "diet": "what the {s} eats", "colour": "the colour of the {s}",
    "inventor": "who invented the {s}", "year": "when the {s} was invented",
    "purpose": "what the {s} is used for",
}
# categories for the list task: (relation, question, answer lead)
LIST_TASKS = {
    "climate": ("List the countries with a {o} climate.", "Countries with a {o} climate: "),
    "export": ("List the countries known for their {o}.", "Countries known for their {o}: "),
    "habitat": ("List the animals that live in the {o}.", "Animals that live in the {o}: "),
    "diet": ("List the animals that eat {o}.", "Animals that eat {o}: "),
    "colour": ("List the animals that are {o}.", "Animals that are {o}: "),
    "profession": ("List the people who worked as a {o}.", "People who worked as a {o}: "),
}
THANKS = ["Thanks!", "Thank you.", "Great, thanks."]
WELCOME = "You're welcome."

# share of each kind of example in the generated datasets (they need not sum to one)
MIX = {"fact": 0.42, "unknown": 0.14, "decline": 0.08, "summary": 0.09, "list": 0.07,
       "polite": 0.08, "multi": 0.12}


@dataclass(frozen=True)
class Split:
    """Which parts of the world feed training and which only the held-out prompts."""

    train_facts: tuple          # Fact objects the SFT data asks about
    eval_facts: tuple           # Facts asked only in held-out prompts (never in SFT data)
    train_unknown: tuple        # unknown entities the SFT data says "I don't know" about
    eval_unknown: tuple         # unknown entities held out
    train_decline: tuple        # decline requests in the SFT data
    eval_decline: tuple         # decline requests held out
    train_stories: tuple        # story pages for the summary task
    eval_stories: tuple


def split_world(world: World, eval_frac: float = 0.25, seed: int = 0) -> Split:
    """Split facts (only those some page states), unknown entities, decline requests and
    stories into a training part and a held-out part, deterministically."""
    rng = random.Random(seed)

    def cut(items):
        items = list(items)
        rng.shuffle(items)
        k = max(1, int(round(eval_frac * len(items))))
        return tuple(items[k:]), tuple(items[:k])

    facts = [f for f in world.facts if not f.heldout]
    stories = [p for p in world.pages if p.kind == "story" and not p.copy_type]
    stories.sort(key=lambda p: p.url)
    tf, ef = cut(facts)
    tu, eu = cut(world.unknown)
    td, ed = cut(world.decline_requests)
    ts, es = cut(stories)
    return Split(tf, ef, tu, eu, td, ed, ts, es)


def heldout_split(split: Split) -> Split:
    """The split with its held-out parts in the training fields: :func:`make_examples` on it
    writes conversations about held-out facts and entities only (the validation set)."""
    return Split(split.eval_facts, split.eval_facts, split.eval_unknown, split.eval_unknown,
                 split.eval_decline, split.eval_decline, split.eval_stories, split.eval_stories)


def _user(content: str) -> dict:
    return {"role": "user", "content": content}


def _assistant(content: str) -> dict:
    return {"role": "assistant", "content": content}


def idk_answer(name: str) -> str:
    """The honest reply about an entity the model has never seen."""
    return f"{IDK_PREFIX}. I have never heard of {name}."


def unknown_question(entity, rng: random.Random) -> tuple[str, str]:
    """A question about an unknown entity, phrased exactly like a known one's: (question, rel)."""
    rels = [r for r, (kind, *_rest) in RELATIONS.items() if kind == entity.kind and r in entity.attrs]
    rel = rng.choice(rels)
    return fill(RELATIONS[rel][2], entity.name, entity.attrs[rel]), rel


def story_summary(world: World, page, max_chars: int) -> tuple[str, str]:
    """(excerpt, one-sentence summary) of a story page, cut to at most ``max_chars``.

    The summary names the hero and the animal they meet, when the excerpt has them (never a
    fact of the knowledge base: a summary must not teach a held-out fact).
    """
    lines = []
    for line in page.lines:
        if lines and len(" ".join(lines + [line])) > max_chars:
            break
        lines.append(line)
    text = " ".join(lines)
    people = [e.name for e in world.entities if e.kind == "person" and e.name in lines[0]]
    hero = max(people, key=len) if people else None
    animals = [e.name for e in world.entities if e.kind == "animal" and f" {e.name} " in f" {text} "
               .replace(".", " ")]
    who = hero or "someone"
    if animals:
        summary = f"{who} meets {a_an(max(animals, key=len))}."
    else:
        summary = f"A story about {who}."
    return text, summary[0].upper() + summary[1:]


def _fact_pair(f, rng: random.Random) -> tuple[dict, dict]:
    q = rng.choice(QUESTION_FORMS).format(q=f.question)
    return _user(q), _assistant(f.statement)


def make_example(kind: str, world: World, split: Split, rng: random.Random,
                 max_story_chars: int = 240) -> dict:
    """One training conversation of ``kind`` (a key of :data:`MIX`) from the training split.

    Returns ``{"kind", "messages": [{"role", "content"}...]}``; the last message is always the
    assistant's. A system prompt is added to a third of them.
    """
    msgs: list = []
    if kind == "fact":
        msgs += _fact_pair(rng.choice(split.train_facts), rng)
    elif kind == "unknown":
        e = rng.choice(split.train_unknown)
        q, _ = unknown_question(e, rng)
        msgs += [_user(rng.choice(QUESTION_FORMS).format(q=q)), _assistant(idk_answer(e.name))]
    elif kind == "decline":
        msgs += [_user(rng.choice(split.train_decline)), _assistant(REFUSAL)]
    elif kind == "summary":
        text, summary = story_summary(world, rng.choice(split.train_stories), max_story_chars)
        msgs += [_user(f"Summarise this story in one sentence.\n{text}"), _assistant(summary)]
    elif kind == "list":
        # members from training facts only: a list must not leak a held-out fact's answer
        rel = rng.choice([r for r in sorted(LIST_TASKS)
                          if any(f.relation == r for f in split.train_facts)])
        values = sorted({f.object for f in split.train_facts if f.relation == rel})
        o = rng.choice(values)
        members = sorted(f.subject for f in split.train_facts if f.relation == rel and f.object == o)
        q, lead = LIST_TASKS[rel]
        msgs += [_user(q.format(o=o)), _assistant(lead.format(o=o) + ", ".join(members) + ".")]
    elif kind == "polite":
        f = rng.choice(split.train_facts)
        np_ = NOUN_PHRASES[f.relation].replace("{s}", f.subject)
        rude = rng.choice(RUDE_FORMS).format(np=np_)
        rude = rude[0].upper() + rude[1:]
        msgs += [_user(f"Rewrite this politely: {rude}"), _assistant(POLITE_FORM.format(np=np_))]
    elif kind == "multi":
        f = rng.choice(split.train_facts)
        msgs += _fact_pair(f, rng)
        r = rng.random()
        if r < 0.4:
            msgs += [_user(rng.choice(THANKS)), _assistant(WELCOME)]
        elif r < 0.8:
            msgs += _fact_pair(rng.choice(split.train_facts), rng)
        else:
            e = rng.choice(split.train_unknown)
            q, _ = unknown_question(e, rng)
            msgs += [_user(q), _assistant(idk_answer(e.name))]
    else:
        raise ValueError(f"unknown example kind {kind!r}; expected one of {sorted(MIX)}")
    if rng.random() < 1 / 3:
        msgs.insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    return {"kind": kind, "messages": msgs}


def make_examples(world: World, split: Split, n: int, seed: int = 0,
                  max_story_chars: int = 240) -> list[dict]:
    """``n`` training conversations drawn i.i.d. with the shares of :data:`MIX`.

    Any prefix of the list is itself a random sample, so the 1K dataset of the LIMA
    comparison is the first 1K of the 10K one.
    """
    rng = random.Random(seed)
    kinds, weights = zip(*MIX.items())
    return [make_example(rng.choices(kinds, weights)[0], world, split, rng, max_story_chars)
            for _ in range(n)]


def eval_items(world: World, split: Split, max_story_chars: int = 240, seed: int = 1) -> list[dict]:
    """The held-out prompts: one conversation per item, ending with the user's turn.

    Kinds: ``fact`` (a held-out fact's question; ``answer`` is its object, ``fact_id`` its
    id), ``unknown`` (every relation of each held-out unknown entity), ``decline`` (held-out
    requests), and ``summary`` / ``polite`` (tasks, scored for format only).
    """
    rng = random.Random(seed)
    items = []
    for f in split.eval_facts:
        items.append({"kind": "fact", "messages": [_user(f.question)], "answer": f.object,
                      "fact_id": f.id})
    for e in split.eval_unknown:
        for rel, (kind, *_rest) in RELATIONS.items():
            if kind == e.kind and rel in e.attrs:
                items.append({"kind": "unknown", "entity": e.name,
                              "messages": [_user(fill(RELATIONS[rel][2], e.name, ""))]})
    for req in split.eval_decline:
        items.append({"kind": "decline", "messages": [_user(req)]})
    for page in split.eval_stories[:10]:
        text, summary = story_summary(world, page, max_story_chars)
        items.append({"kind": "summary", "reference": summary,
                      "messages": [_user(f"Summarise this story in one sentence.\n{text}")]})
    for f in list(split.eval_facts)[:10]:
        np_ = NOUN_PHRASES[f.relation].replace("{s}", f.subject)
        items.append({"kind": "polite", "reference": POLITE_FORM.format(np=np_),
                      "messages": [_user("Rewrite this politely: "
                                         + rng.choice(RUDE_FORMS).format(np=np_))]})
    return items


# --------------------------------------------------------------------------------------------
# 1b. Real instruction data: Alpaca / Dolly JSON and JSONL
# --------------------------------------------------------------------------------------------


class InstructionFormatError(ValueError):
    """A record of an instruction file is malformed; the message names the file and line."""


# field names of the two common formats: (instruction, optional context, response)
_FIELDS = [("instruction", "input", "output"),        # Alpaca (Taori et al. 2023)
           ("instruction", "context", "response")]    # Dolly 15k (Databricks 2023)


def record_to_messages(rec, where: str) -> list[dict]:
    """One Alpaca or Dolly record -> a user turn and an assistant turn.

    >>> record_to_messages({"instruction": "Add.", "input": "2 and 3", "output": "5"}, "x")
    [{'role': 'user', 'content': 'Add.\\n\\n2 and 3'}, {'role': 'assistant', 'content': '5'}]
    """
    if not isinstance(rec, dict):
        raise InstructionFormatError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    for ins, ctx, out in _FIELDS:
        if ins in rec and out in rec:
            for key in (ins, out) + ((ctx,) if ctx in rec else ()):
                if not isinstance(rec[key], str):
                    raise InstructionFormatError(f"{where}: field {key!r} must be a string, got "
                                                 f"{type(rec[key]).__name__}")
            if not rec[ins].strip() or not rec[out].strip():
                empty = ins if not rec[ins].strip() else out
                raise InstructionFormatError(f"{where}: field {empty!r} is empty")
            prompt = rec[ins].strip()
            if rec.get(ctx, "").strip():
                prompt += "\n\n" + rec[ctx].strip()
            return [_user(prompt), _assistant(rec[out].strip())]
    raise InstructionFormatError(
        f"{where}: a record needs 'instruction' and 'output' (Alpaca) or 'instruction' and "
        f"'response' (Dolly); this one has {sorted(rec)}")


def load_instructions(path: str | Path) -> list[dict]:
    """Read an Alpaca- or Dolly-style file: a JSON array of records, or JSON lines.

    The format is decided by the content, not the file name: a file whose first character
    (after an optional UTF-8 byte-order mark and whitespace) is ``[`` is a JSON array, anything
    else one JSON record per line. Lines are split on ``\n`` only: U+2028, U+2029 and U+0085
    are legal inside JSON strings and stay part of the record (``str.splitlines`` would cut
    there). Returns ``[{"kind": "file", "messages": [...]}]``. A malformed record raises
    :class:`InstructionFormatError` naming the file and the line the record starts on.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")      # utf-8-sig: drops a byte-order mark
    out = []
    i = _skip_ws(text, 0)
    if i >= len(text) or text[i] != "[":
        for lineno, line in enumerate(text.split("\n"), 1):
            if not line.strip(" \t\r"):
                continue
            where = f"{path.name}, line {lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InstructionFormatError(f"{where}: not valid JSON ({exc.msg}); expected "
                                             f"a JSON array of records or one record per line"
                                             ) from None
            out.append({"kind": "file", "messages": record_to_messages(rec, where)})
        return out
    # a JSON array: decode one element at a time so an error can name the element's line
    dec = json.JSONDecoder()

    def line_of(pos):
        return text.count("\n", 0, pos) + 1

    i = _skip_ws(text, i + 1)
    if i < len(text) and text[i] == "]":
        return out
    while True:
        where = f"{path.name}, line {line_of(i)}"
        try:
            rec, i = dec.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise InstructionFormatError(f"{path.name}, line {exc.lineno}: not valid JSON "
                                         f"({exc.msg})") from None
        out.append({"kind": "file", "messages": record_to_messages(rec, where)})
        i = _skip_ws(text, i)
        if i < len(text) and text[i] == ",":
            i = _skip_ws(text, i + 1)
        elif i < len(text) and text[i] == "]":
            return out
        else:
            raise InstructionFormatError(f"{path.name}, line {line_of(i)}: expected ',' or ']' "
                                         f"after a record")


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


# --------------------------------------------------------------------------------------------
# 2. Chat templates
# --------------------------------------------------------------------------------------------
# A template turns a conversation into *segments*: (text, is_special, is_reply). Rendering
# joins the texts; tokenising encodes each segment on its own (special segments become one
# reserved id, everything else is ordinary text, so a user cannot forge a turn marker) and
# marks the reply segments' tokens as the ones to learn. Message text is stripped of leading
# and trailing whitespace (as Llama-2's reference code does), so a segment boundary always
# falls where the tokenizer's own pre-tokenisation would cut: encoding segment by segment
# gives exactly the tokens of encoding the rendered string (a tested property).


def _check_messages(messages: list[dict]) -> None:
    if not messages:
        raise ValueError("a conversation needs at least one message")
    for k, m in enumerate(messages):
        if m.get("role") not in ("system", "user", "assistant"):
            raise ValueError(f"message {k}: role must be system, user or assistant, got "
                             f"{m.get('role')!r}")
        if not isinstance(m.get("content"), str):
            raise ValueError(f"message {k}: content must be a string")
        if m["role"] == "system" and k != 0:
            raise ValueError(f"message {k}: a system message may only come first")


def chatml_segments(messages: list[dict], add_generation_prompt: bool = False) -> list[tuple]:
    """ChatML (OpenAI 2023): ``<|im_start|>role\\ncontent<|im_end|>\\n`` per message.

    The reply is the assistant's content and its ``<|im_end|>`` (so the model learns to stop);
    ``add_generation_prompt`` ends with ``<|im_start|>assistant\\n`` for the model to continue.
    """
    _check_messages(messages)
    segs = []
    for m in messages:
        reply = m["role"] == "assistant"
        segs += [("<|im_start|>", True, False), (m["role"] + "\n", False, False),
                 (m["content"].strip(), False, reply), ("<|im_end|>", True, reply),
                 ("\n", False, False)]
    if add_generation_prompt:
        segs += [("<|im_start|>", True, False), ("assistant\n", False, False)]
    return [s for s in segs if s[0]]


def llama2_segments(messages: list[dict], add_generation_prompt: bool = False) -> list[tuple]:
    """Llama-2 chat (Touvron et al. 2023): ``<s>[INST] <<SYS>>\\nsys\\n<</SYS>>\\n\\nuser [/INST]
    reply </s>``, then ``<s>[INST] user [/INST] reply </s>`` for each later turn.

    The reply is `` reply `` and its ``</s>``. ``add_generation_prompt`` is a no-op: a
    conversation that ends with the user's turn already ends with ``[/INST]``.
    """
    _check_messages(messages)
    msgs = list(messages)
    system = msgs.pop(0)["content"] if msgs[0]["role"] == "system" else None
    segs: list = []
    first = True
    for m in msgs:
        content = m["content"].strip()
        if m["role"] == "user":
            segs += [("<s>", True, False), ("[INST]", True, False)]
            if first and system is not None:
                segs += [(" ", False, False), ("<<SYS>>", True, False),
                         ("\n" + system.strip() + "\n", False, False), ("<</SYS>>", True, False),
                         ("\n\n" + content + " ", False, False)]
            else:
                segs += [(" " + content + " ", False, False)]
            segs += [("[/INST]", True, False)]
            first = False
        else:
            if not segs or segs[-1][0] != "[/INST]":
                raise ValueError("Llama-2 template: every assistant turn must follow a user turn")
            segs += [(" " + content + " ", False, True), ("</s>", True, True)]
    return segs


def alpaca_segments(messages: list[dict], add_generation_prompt: bool = False) -> list[tuple]:
    """Alpaca's plain-text prompt (Taori et al. 2023) for tokenizers without chat markers,
    such as GPT-2's (section 9): ``### Instruction:\\nuser\\n\\n### Response:\\nreply<|endoftext|>``
    per turn, with GPT-2's end-of-text as the stop token. A system message opens the text.
    """
    _check_messages(messages)
    segs: list = []
    for m in messages:
        content = m["content"].strip()
        if m["role"] == "system":
            segs += [(content + "\n\n", False, False)]
        elif m["role"] == "user":
            segs += [("### Instruction:\n" + content + "\n\n### Response:\n", False, False)]
        else:
            segs += [(content, False, True), ("<|endoftext|>", True, True), ("\n\n", False, False)]
    return segs


TEMPLATES = {"chatml": chatml_segments, "llama2": llama2_segments, "alpaca": alpaca_segments}
STOP_TOKENS = {"chatml": "<|im_end|>", "llama2": "</s>", "alpaca": "<|endoftext|>"}  # ends a reply


def render(messages: list[dict], template: str = "chatml", add_generation_prompt: bool = False) -> str:
    """The conversation as text in ``template`` ("chatml", "llama2" or "alpaca")."""
    return "".join(s[0] for s in _segments(messages, template, add_generation_prompt))


def _segments(messages, template, add_generation_prompt):
    if template not in TEMPLATES:
        raise ValueError(f"unknown chat template {template!r}; expected one of {sorted(TEMPLATES)}")
    return TEMPLATES[template](messages, add_generation_prompt)


def tokenize_chat(messages: list[dict], tok, template: str = "chatml",
                  add_generation_prompt: bool = False) -> tuple[list[int], list[int]]:
    """Token ids of the rendered conversation and a 0/1 mask: 1 on reply tokens.

    Template markers become their reserved special ids; message text is encoded as ordinary
    text (a ``<|im_end|>`` typed by a user stays characters, never a turn boundary).
    """
    ids, mask = [], []
    for text, special, reply in _segments(messages, template, add_generation_prompt):
        piece = [tok.special_tokens[text]] if special else tok.encode(text, allowed_special="none")
        ids += piece
        mask += [int(reply)] * len(piece)
    return ids, mask


# --------------------------------------------------------------------------------------------
# 3. Loss only on the response
# --------------------------------------------------------------------------------------------


def make_targets(ids: list[int], mask: list[int], train_on_prompt: bool = False) -> tuple[list, list]:
    """Inputs and next-token targets of one conversation; prompt targets become -100.

    ``x = ids[:-1]``; ``y[t] = ids[t + 1]`` where token t + 1 is a reply token, else -100.
    With ``train_on_prompt`` every target is kept (plain language modelling, the ablation).

    >>> make_targets([5, 6, 7, 8], [0, 0, 1, 1])
    ([5, 6, 7], [-100, 7, 8])
    """
    if len(ids) != len(mask) or len(ids) < 2:
        raise ValueError(f"need ids and mask of the same length >= 2, got {len(ids)} and {len(mask)}")
    x = list(ids[:-1])
    y = [t if (m or train_on_prompt) else IGNORE_INDEX for t, m in zip(ids[1:], mask[1:])]
    return x, y


def masked_nll_naive(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over targets != -100, written out position by position.

    logits: (B, T, V); targets: (B, T). The test oracle for :func:`masked_nll`.
    """
    total, count = 0.0, 0
    B, T, _ = logits.shape
    for b in range(B):
        for t in range(T):
            y = int(targets[b, t])
            if y == IGNORE_INDEX:
                continue
            logp = logits[b, t].double().log_softmax(-1)          # (V,)
            total = total - logp[y]
            count += 1
    if count == 0:
        raise ValueError("every target is -100: nothing to learn from")
    return total / count


def masked_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The same loss in one call: ``sum_{t: y_t != -100} -log p(y_t) / #{t: y_t != -100}``.

    logits: (B, T, V); targets: (B, T). Every reply token of the batch counts once, so a long
    reply weighs more than a short one (the mean is over tokens, not over conversations).
    """
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def mask_html(tok, ids: list[int], mask: list[int]) -> str:
    """HTML of a tokenised conversation, one coloured box per token: green where the token is
    a reply token (its loss counts), grey where its target is -100. Newlines show as ``\\n``.
    """
    import html

    spans = []
    for t, m in zip(ids, mask):
        piece = tok.decode([t]).replace("\n", "\\n")
        style = ("background:#b7e4b0;color:#000" if m else "background:#e6e6e6;color:#666")
        weight = ";font-weight:bold" if t in tok.inverse_special else ""
        spans.append(f'<span style="{style}{weight};border:1px solid #fff;padding:1px 2px;'
                     f'font-family:monospace;white-space:pre">{html.escape(piece)}</span>')
    legend = ('<div style="margin-top:4px;font-size:90%"><span style="background:#b7e4b0">'
              '&nbsp;green&nbsp;</span> reply tokens (loss counts) &nbsp; <span style="background:'
              '#e6e6e6">&nbsp;grey&nbsp;</span> system, user and template tokens (target -100)</div>')
    return '<div style="line-height:1.9">' + "".join(spans) + "</div>" + legend


# --------------------------------------------------------------------------------------------
# 6. Batches: padding versus packing
# --------------------------------------------------------------------------------------------


@dataclass
class Encoded:
    """One tokenised training conversation: inputs ``x`` and targets ``y`` (same length)."""

    x: list
    y: list
    kind: str = ""


def encode_examples(examples: list[dict], tok, template: str, block_size: int,
                    train_on_prompt: bool = False) -> tuple[list[Encoded], int]:
    """Tokenise conversations; drop the ones longer than ``block_size + 1`` tokens.

    Returns (encoded, number dropped).
    """
    out, dropped = [], 0
    for ex in examples:
        ids, mask = tokenize_chat(ex["messages"], tok, template)
        if len(ids) > block_size + 1:
            dropped += 1
            continue
        x, y = make_targets(ids, mask, train_on_prompt)
        out.append(Encoded(x, y, ex.get("kind", "")))
    return out, dropped


def pad_batch(batch: list[Encoded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a batch to its longest member: x with ``pad_id``, y with -100.

    Returns x, y of shape (B, T_max). Padding sits after each sequence, so causal attention
    never lets a real token see it.
    """
    T = max(len(e.x) for e in batch)
    x = torch.full((len(batch), T), pad_id, dtype=torch.long)                # (B, T)
    y = torch.full((len(batch), T), IGNORE_INDEX, dtype=torch.long)          # (B, T)
    for b, e in enumerate(batch):
        x[b, :len(e.x)] = torch.tensor(e.x)
        y[b, :len(e.y)] = torch.tensor(e.y)
    return x, y


def pack_examples(encoded: list[Encoded], block_size: int) -> list[Encoded]:
    """Concatenate conversations into windows of at most ``block_size`` tokens (in order; a
    conversation that does not fit in the current window starts the next one).

    A conversation never straddles two windows; :func:`pad_batch` pads each window's tail.
    Unlike padding, later conversations in a window attend to earlier ones (the model has no
    per-document attention mask) and sit at later positions -- the price of packing.
    """
    windows: list[Encoded] = []
    for e in encoded:
        if len(e.x) > block_size:
            raise ValueError(f"a conversation of {len(e.x)} tokens does not fit in block_size={block_size}")
        if windows and len(windows[-1].x) + len(e.x) <= block_size:
            windows[-1].x.extend(e.x)
            windows[-1].y.extend(e.y)
        else:
            windows.append(Encoded(list(e.x), list(e.y), "packed"))
    return windows


def batch_waste(lengths: list[int], batch_size: int, block_size: int) -> dict:
    """Share of token slots that hold padding, for three ways to batch conversations.

    ``pad_block``: every sequence padded to ``block_size``; ``pad_longest``: each batch of
    ``batch_size`` (in data order) padded to its longest; ``pack``: :func:`pack_examples`.

    >>> batch_waste([1, 3, 2, 2], batch_size=2, block_size=4)
    {'pad_block': 0.5, 'pad_longest': 0.2, 'pack': 0.0}
    """
    real = sum(lengths)
    slots_block = block_size * len(lengths)
    slots_longest = sum(max(lengths[i:i + batch_size]) * len(lengths[i:i + batch_size])
                        for i in range(0, len(lengths), batch_size))
    n_windows, fill_ = 0, block_size + 1
    for n in lengths:
        if fill_ + n > block_size:
            n_windows, fill_ = n_windows + 1, 0
        fill_ += n
    slots_pack = n_windows * block_size
    return {"pad_block": round(1 - real / slots_block, 4),
            "pad_longest": round(1 - real / slots_longest, 4),
            "pack": round(1 - real / slots_pack, 4)}


# --------------------------------------------------------------------------------------------
# 4. Fine-tuning
# --------------------------------------------------------------------------------------------


# the fine-tuning runs notebook 04 compares (llmlab.stages.get_sft_model(preset, variant))
VARIANTS = {
    "main": {"data": "large", "train_on_prompt": False, "lr": "sft"},     # the SFT model
    "nomask": {"data": "large", "train_on_prompt": True, "lr": "sft"},    # loss on every token
    "high_lr": {"data": "large", "train_on_prompt": False, "lr": "high"}, # pretraining's rate
    "small": {"data": "small", "train_on_prompt": False, "lr": "sft"},    # 1K instead of 10K
}


def sft_batch_fn(pad_id: int) -> Callable:
    """A ``batch_fn`` for :func:`llmlab.train.train`: ``batch_size`` random conversations
    (or packed windows) of a list of :class:`Encoded`, padded by :func:`pad_batch`."""
    def batch_fn(data: list[Encoded], batch_size: int, generator: torch.Generator):
        ix = torch.randint(len(data), (batch_size,), generator=generator)       # (B,)
        return pad_batch([data[i] for i in ix.tolist()], pad_id)               # (B, T) each
    return batch_fn


def sft_train_config(sft_cfg, train_cfg, lr: float | None = None, max_steps: int | None = None):
    """Pretraining's :class:`~llmlab.config.TrainConfig` with SFT's batch, budget and rate."""
    import dataclasses

    return dataclasses.replace(
        train_cfg, batch_size=sft_cfg.batch_size, grad_accum=1,
        max_steps=sft_cfg.max_steps if max_steps is None else max_steps,
        lr=sft_cfg.lr if lr is None else lr, warmup_steps=sft_cfg.warmup_steps,
        weight_decay=sft_cfg.weight_decay, eval_every=sft_cfg.eval_every,
        eval_batches=sft_cfg.eval_batches, compile=False, seed=sft_cfg.seed)


def sft_train(model, train_enc: list[Encoded], val_enc: list[Encoded], cfg, pad_id: int,
              device=None, pack: bool = False, callback: Callable | None = None,
              progress: bool = True):
    """Fine-tune ``model`` in place (notebook 04, section 4); returns pretraining's
    :class:`~llmlab.train.TrainResult`.

    This *is* pretraining's loop, :func:`llmlab.train.train` (AdamW, warmup and cosine decay,
    clipping, mixed precision), given two things: batches of conversations whose prompt targets
    are -100 (:func:`sft_batch_fn`, so the model's cross-entropy counts reply tokens only) and
    ``cfg`` from :func:`sft_train_config`, whose learning rate is 10-100x lower. With ``pack``,
    conversations are first packed into windows (:func:`pack_examples`).
    """
    from .train import train

    block = model.config.block_size
    if pack:
        train_enc, val_enc = pack_examples(train_enc, block), pack_examples(val_enc, block)
    return train(model, train_enc, val_enc, cfg, device=device, callback=callback,
                 batch_fn=sft_batch_fn(pad_id), progress=progress)


# --------------------------------------------------------------------------------------------
# 7-8. Replies and metrics
# --------------------------------------------------------------------------------------------


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


def generate_replies(model, tok, conversations: list[list[dict]], template: str = "chatml",
                     max_new_tokens: int = 40) -> list[dict]:
    """The model's greedy reply to each conversation (which ends with a user turn).

    Returns ``{"text", "stopped"}`` per conversation: the decoded reply without its stop
    token, and whether the model ended its turn with the template's stop token.
    """
    stop_id = tok.special_tokens[STOP_TOKENS[template]]
    prompts = [tokenize_chat(c, tok, template, add_generation_prompt=True)[0] for c in conversations]
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


def score_reply(item: dict, reply: dict) -> dict:
    """Metrics of one reply to one held-out item (see :func:`evaluate`)."""
    text = reply["text"].lower()
    fmt = reply["stopped"] and bool(text) and not reply["special_inside"]
    s = {"format": fmt}
    if item["kind"] == "fact":
        s["correct"] = fmt and re.search(r"\b" + re.escape(item["answer"].lower()) + r"\b",
                                         text) is not None and IDK_PREFIX.lower() not in text
    elif item["kind"] == "unknown":
        s["idk"] = fmt and text.startswith(IDK_PREFIX.lower())
    elif item["kind"] == "decline":
        s["refused"] = fmt and ("sorry" in text or "can't help" in text)
    return s


def evaluate(model, tok, items: list[dict], template: str = "chatml", known: dict | None = None,
             max_new_tokens: int = 40) -> dict:
    """Held-out metrics of ``model`` (notebook 04, section 8).

    - ``format``: share of replies in the response format -- the model ends its turn with the
      template's stop token, says something, and writes no other template marker (instead of
      continuing the prompt);
    - ``factual``: share of held-out fact questions answered with the right object, over the
      facts in ``known`` that the base model knows (all held-out facts if ``known`` is None);
    - ``idk``: share of questions about unknown entities answered "I don't know";
    - ``refusal``: share of decline requests refused.

    Returns the four shares, the counts behind them and the replies.
    """
    replies = generate_replies(model, tok, [it["messages"] for it in items], template, max_new_tokens)
    scores = [score_reply(it, r) for it, r in zip(items, replies)]

    def share(kind, key, keep=lambda it: True):
        vals = [s[key] for it, s in zip(items, scores) if it["kind"] == kind and keep(it)]
        return (sum(vals) / len(vals) if vals else float("nan")), len(vals)

    fmt = [s["format"] for s in scores]
    keep = (lambda it: known.get(it["fact_id"], False)) if known is not None else (lambda it: True)
    factual, n_fact = share("fact", "correct", keep)
    factual_all, _ = share("fact", "correct")
    idk, n_unk = share("unknown", "idk")
    refusal, n_dec = share("decline", "refused")
    return {"format": sum(fmt) / len(fmt), "factual": factual, "factual_all_heldout": factual_all,
            "idk": idk, "refusal": refusal, "n": len(items), "n_factual": n_fact,
            "n_unknown": n_unk, "n_decline": n_dec, "replies": replies}


def metrics_row(m: dict) -> dict:
    """The four headline shares of an :func:`evaluate` result, rounded for a table (None where
    a share has no prompts, e.g. ``factual`` when the base model knows no held-out fact)."""
    return {k: nan_to_none(round(float(m[k]), 3)) for k in ("format", "factual", "idk", "refusal")}


def nan_to_none(x: float):
    return None if isinstance(x, float) and math.isnan(x) else x


# --------------------------------------------------------------------------------------------
# 9. The same SFT on real GPT-2 (online only)
# --------------------------------------------------------------------------------------------


class TiktokenChat:
    """GPT-2's tiktoken encoding with the few members :func:`tokenize_chat` and
    :func:`generate_replies` use (its only special token is ``<|endoftext|>``)."""

    def __init__(self, enc):
        self.enc = enc
        self.eot_id = enc.eot_token
        self.pad_id = enc.eot_token
        self.special_tokens = {"<|endoftext|>": enc.eot_token}
        self.inverse_special = {enc.eot_token: "<|endoftext|>"}

    def encode(self, text: str, allowed_special="none") -> list[int]:
        return self.enc.encode_ordinary(text)

    def decode(self, ids) -> str:
        return self.enc.decode(list(ids))


def gpt2_sft_demo(load_model: Callable, train: list[dict], items: list[dict], steps: int = 300,
                  lr: float = 3e-5, batch_size: int = 16, device=None) -> dict:
    """Fine-tune real GPT-2 with this module's data, template, masking and loop (section 9).

    ``load_model(device)`` returns GPT-2 as a :class:`~llmlab.model.GPT` (notebook 02's
    converter, ``llmlab.hf``). Needs the network for the weights and tiktoken's GPT-2 files;
    raises ``RuntimeError`` with the reason when they cannot be had. Returns the held-out
    metrics before and after, the fine-tuning time and the peak GPU memory.
    """
    import dataclasses

    from .config import TrainConfig
    from .device import pick_device
    from .tokenizer import gpt2_encoding

    enc, reason = gpt2_encoding()
    if enc is None:
        raise RuntimeError(f"GPT-2 demo needs the network: {reason}")
    tok = TiktokenChat(enc)
    device = pick_device(device) if not hasattr(device, "type") else device
    model = load_model(device)
    block = min(model.config.block_size, 256)
    train_enc, _ = encode_examples(train, tok, "alpaca", block)
    val_enc, _ = encode_examples(train[-64:], tok, "alpaca", block)
    before = metrics_row(evaluate(model, tok, items, "alpaca"))
    cfg = dataclasses.replace(TrainConfig(), batch_size=batch_size, max_steps=steps, lr=lr,
                              warmup_steps=max(steps // 20, 1), weight_decay=0.0,
                              eval_every=max(steps // 3, 1), eval_batches=4)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    sft_train(model, train_enc, val_enc, cfg, tok.pad_id, device=device)
    seconds = time.perf_counter() - t0
    after = metrics_row(evaluate(model, tok, items, "alpaca"))
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"before": before, "after": after, "sft_seconds": round(seconds, 1),
            "peak_gpu_gib": None if mem is None else round(mem, 2), "steps": steps}
