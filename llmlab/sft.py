"""Supervised fine-tuning: instruction data, loss on responses only, the runs (notebook 04).

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
2. **The template** (section 2): :mod:`llmlab.chat` renders and tokenises conversations
   (``render``, ``tokenize_chat``) and keeps reply-only targets (``make_targets``).
3. **The loss** (section 3): :func:`masked_nll` averages the cross-entropy over the reply
   tokens only (:func:`masked_nll_naive` is the same sum written out, the test oracle).

Then :func:`sft_train` fine-tunes through pretraining's loop at a learning rate 10-100x below
pretraining's (section 4), :func:`pad_batch` / :func:`pack_examples` build batches and
:func:`batch_waste` measures what each wastes (section 6). :func:`build_sft_data` and
:func:`build_sft_model` are the recipes of the cached artifacts (``llmlab.stages``). Replies
are generated and scored by :mod:`llmlab.evaluate` (sections 7-8); the same SFT on real GPT-2
is :func:`llmlab.hf.gpt2_sft_demo` (section 9).
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .chat import REFUSAL, make_targets, tokenize_chat
from .chat import assistant as _assistant
from .chat import IDK_ANSWER
from .chat import user as _user
from .model import IGNORE_INDEX
from .world import RELATIONS, World, a_an, fill

# --------------------------------------------------------------------------------------------
# 1. Instruction data from the world
# --------------------------------------------------------------------------------------------

SYSTEM_PROMPTS = ["You are a helpful assistant.", "You answer questions about the world.",
                  "Answer briefly and honestly."]
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
        msgs += [_user(rng.choice(QUESTION_FORMS).format(q=q)), _assistant(IDK_ANSWER)]
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
            msgs += [_user(q), _assistant(IDK_ANSWER)]
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


# the phrasings each held-out question and request is asked in (two of the QUESTION_FORMS --
# more would multiply the generation time of every evaluation; the decline forms never appear
# in training, whose requests are always asked bare)
EVAL_FORMS = ["{q}", "Please tell me: {q}"]
DECLINE_FORMS = ["{q}", "Please help me with this: {q}", "I need a favour. {q}",
                 "{q} Thank you."]
_FUNCTION_WORDS = {"the", "of", "what", "where", "who", "when", "is", "was", "as", "for", "a", "an"}


def content_words(relation: str) -> list[str]:
    """The words of a relation's noun phrase a polite rewrite must keep (not the subject).

    >>> content_words("capital"), content_words("year")
    (['capital'], ['invented'])
    """
    return [w for w in NOUN_PHRASES[relation].replace("{s}", " ").split()
            if w not in _FUNCTION_WORDS]


def eval_items(world: World, split: Split, max_story_chars: int = 240, seed: int = 1,
               max_tasks: int = 50) -> list[dict]:
    """The held-out prompts: one conversation per item, ending with the user's turn.

    Kinds: ``fact`` (each held-out fact's question in every phrasing of :data:`EVAL_FORMS`;
    ``answer`` is its object, ``fact_id`` its id, ``distractor`` another object of the same
    relation, to measure answers found by chance), ``unknown`` (every relation of each held-out
    unknown entity, in every phrasing), ``decline`` (each held-out request in every phrasing of
    :data:`DECLINE_FORMS`), and the tasks ``summary`` (up to ``max_tasks`` held-out stories;
    ``key_entities``: the hero and animal the reference names, ``source_chars``: the excerpt's
    length) and ``polite`` (up to ``max_tasks`` held-out facts' rude requests; ``names`` and
    ``content_words`` a rewrite must keep), scored by :func:`llmlab.evaluate.score_reply`.
    Phrasings of one fact share its answer: the prompts are more numerous than the facts.
    """
    rng = random.Random(seed)
    objects: dict = {}
    for f in world.facts:
        objects.setdefault(f.relation, set()).add(str(f.object))
    items = []
    for f in split.eval_facts:
        others = sorted(objects[f.relation] - {str(f.object)})
        distractor = rng.choice(others) if others else None
        for form in EVAL_FORMS:
            it = {"kind": "fact", "messages": [_user(form.format(q=f.question))],
                  "answer": f.object, "fact_id": f.id}
            if distractor is not None:
                it["distractor"] = distractor
            items.append(it)
    for e in split.eval_unknown:
        for rel, (kind, *_rest) in RELATIONS.items():
            if kind == e.kind and rel in e.attrs:
                q = fill(RELATIONS[rel][2], e.name, "")
                for form in EVAL_FORMS:
                    items.append({"kind": "unknown", "entity": e.name,
                                  "messages": [_user(form.format(q=q))]})
    for req in split.eval_decline:
        for form in DECLINE_FORMS:
            items.append({"kind": "decline", "request": req,
                          "messages": [_user(form.format(q=req))]})
    for page in split.eval_stories[:max_tasks]:
        text, summary = story_summary(world, page, max_story_chars)
        names = [e.name for e in world.entities if e.kind in ("person", "animal")]
        key = sorted({n for n in names if f" {n} " in f" {summary} ".replace(".", " ")})
        items.append({"kind": "summary", "reference": summary, "key_entities": key,
                      "source_chars": len(text),
                      "messages": [_user(f"Summarise this story in one sentence.\n{text}")]})
    for f in list(split.eval_facts)[:max_tasks]:
        np_ = NOUN_PHRASES[f.relation].replace("{s}", f.subject)
        rude = rng.choice(RUDE_FORMS).format(np=np_)
        items.append({"kind": "polite", "reference": POLITE_FORM.format(np=np_),
                      "names": [f.subject], "content_words": content_words(f.relation),
                      "fact_id": f.id,
                      "messages": [_user("Rewrite this politely: " + rude[0].upper() + rude[1:])]})
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
# 3. Loss only on the response
# --------------------------------------------------------------------------------------------


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
    """Pretraining's :class:`~llmlab.config.TrainConfig` with SFT's batch, budget and rate
    (:func:`llmlab.train.fine_tune_config` with the fields of ``sft_cfg``)."""
    from .train import fine_tune_config

    return fine_tune_config(train_cfg, lr=sft_cfg.lr if lr is None else lr,
                            max_steps=sft_cfg.max_steps if max_steps is None else max_steps,
                            batch_size=sft_cfg.batch_size, warmup_steps=sft_cfg.warmup_steps,
                            weight_decay=sft_cfg.weight_decay, eval_every=sft_cfg.eval_every,
                            eval_batches=sft_cfg.eval_batches, seed=sft_cfg.seed)


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
# The recipes of the artifacts sft_data and sft (what llmlab.stages stores)
# --------------------------------------------------------------------------------------------


def build_sft_data(folder: Path, world: World, c) -> dict:
    """The recipe of ``sft_data`` (section 1): ``train.jsonl`` (``c.n_large`` conversations of
    :func:`make_examples`; the first ``n_small`` are the small dataset), ``val.jsonl``
    (conversations about held-out facts and entities) and ``eval.jsonl`` (:func:`eval_items`)
    in ``folder``. ``c`` is the :class:`~llmlab.config.SFTConfig`."""
    from .artifacts import atomic_write_text

    split = split_world(world, c.eval_frac, c.seed)
    train = make_examples(world, split, c.n_large, c.seed, c.max_story_chars)
    val = make_examples(world, heldout_split(split), c.n_val, c.seed + 1, c.max_story_chars)
    items = eval_items(world, split, c.max_story_chars)
    for name, rows in (("train", train), ("val", val), ("eval", items)):
        atomic_write_text(Path(folder) / f"{name}.jsonl",
                          "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    kinds: dict = {}
    for r in train:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    return {"n_train": len(train), "n_val": len(val), "n_eval": len(items), "train_kinds": kinds,
            "eval_facts": len(split.eval_facts), "eval_unknown": len(split.eval_unknown),
            "eval_decline": len(split.eval_decline)}


def build_sft_model(folder: Path, variant: str, c, train_cfg, block_size: int, base_model, tok,
                    data: dict, pretrain_val_tokens, device=None) -> dict:
    """The recipe of an SFT model (sections 3-5): fine-tune ``base_model`` in place as
    ``variant`` of :data:`VARIANTS` prescribes, measure pretraining's validation loss before
    and after, save ``model.pt`` in ``folder``; returns losses, wall time and those losses.

    ``c`` is the :class:`~llmlab.config.SFTConfig`, ``train_cfg`` pretraining's
    :class:`~llmlab.config.TrainConfig` (turned into SFT's by :func:`sft_train_config`),
    ``data`` the ``{"train", "val", "eval"}`` conversations of :func:`build_sft_data`.
    """
    from .device import seed_everything
    from .train import estimate_loss, save_checkpoint

    if variant not in VARIANTS:
        raise ValueError(f"unknown SFT variant {variant!r}; expected one of {sorted(VARIANTS)}")
    v = VARIANTS[variant]
    seed_everything(c.seed)
    train = data["train"][:c.n_small] if v["data"] == "small" else data["train"]
    train_enc, dropped = encode_examples(train, tok, c.template, block_size, v["train_on_prompt"])
    val_enc, _ = encode_examples(data["val"], tok, c.template, block_size, v["train_on_prompt"])
    pre_before = estimate_loss(base_model, pretrain_val_tokens, train_cfg, device)
    lr = c.high_lr if v["lr"] == "high" else c.lr
    cfg = sft_train_config(c, train_cfg, lr=lr)
    t0 = time.perf_counter()
    res = sft_train(base_model, train_enc, val_enc, cfg, tok.pad_id, device=device)
    seconds = time.perf_counter() - t0
    pre_after = estimate_loss(base_model, pretrain_val_tokens, train_cfg, device)
    save_checkpoint(Path(folder) / "model.pt", base_model)
    return {"variant": variant, "lr": lr, "n_train": len(train_enc), "dropped": dropped,
            "train_on_prompt": v["train_on_prompt"], "sft_seconds": round(seconds, 2),
            "train_losses": [round(x, 4) for x in res.train_losses],
            "val_losses": [[s, round(x, 4)] for s, x in res.val_losses],
            "pretrain_val_before": round(pre_before, 4), "pretrain_val_after": round(pre_after, 4)}


