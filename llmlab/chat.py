"""Chat templates: a conversation as text, as tokens, and as reply-only targets (notebook 04,
sections 2-3).

A conversation is a list of ``{"role", "content"}`` messages (system, user, assistant).

1. **Templates** (section 2): :func:`chatml_segments`, :func:`llama2_segments` and
   :func:`alpaca_segments` cut a conversation into segments; :func:`render` joins them into
   text, :func:`tokenize_chat` into token ids plus a mask saying which tokens are the reply.
2. **Targets** (section 3): :func:`make_targets` keeps the next-token target of reply tokens
   only and sets every other to ``IGNORE_INDEX`` (-100, defined in :mod:`llmlab.model`);
   :func:`mask_html` shows which tokens count.

Every later stage uses these: SFT trains on them (:mod:`llmlab.sft`), the reward model, PPO
and DPO score replies written in them, :mod:`llmlab.evaluate` prompts models with them.
"""
from __future__ import annotations

from .model import IGNORE_INDEX

IDK_PREFIX = "I don't know"          # what an honest answer about an unknown entity starts with
# The honest answer itself names no entity: a small model cannot copy a name it has never seen
# (with "I don't know. I have never heard of <name>." the cpu preset's SFT model opened 34 of
# 160 replies about held-out unknown entities with "I don't know" and named the entity in none).
IDK_ANSWER = f"{IDK_PREFIX} that name."
REFUSAL = "Sorry, I can't help with that."   # the reply to a request the assistant declines


def user(content: str) -> dict:
    """A user message."""
    return {"role": "user", "content": content}


def assistant(content: str) -> dict:
    """An assistant message."""
    return {"role": "assistant", "content": content}


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


# --------------------------------------------------------------------------------------------
# 3. Targets: the loss only on the reply
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
