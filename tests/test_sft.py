"""Tests of notebook 04's supervised fine-tuning (llmlab.sft)."""
import dataclasses
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmlab import chat, evaluate, hf, sft, stages
from llmlab.config import ModelConfig, get_preset
from llmlab.model import GPT, IGNORE_INDEX
from llmlab.tokenizer import Tokenizer

# A tokenizer with no merges: one token per byte, plus the reserved special tokens. Label
# positions can then be counted by hand, character by character.
BYTES = Tokenizer([])
S = BYTES.special_tokens


@pytest.fixture(scope="module")
def bpe():
    """A small real BPE tokenizer trained on the smoke world's pages."""
    w = stages.get_world("smoke")
    return Tokenizer.train([p.text for p in w.pages], 512)


# --------------------------------------------------------------------------------------------
# Templates: rendered exactly
# --------------------------------------------------------------------------------------------

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"}, {"role": "user", "content": "Again"},
        {"role": "assistant", "content": "Ok"}]


def test_chatml_rendering_exact():
    assert chat.render(CHAT, "chatml") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nYo<|im_end|>\n"
        "<|im_start|>user\nAgain<|im_end|>\n"
        "<|im_start|>assistant\nOk<|im_end|>\n")
    assert chat.render(CHAT[1:2], "chatml", add_generation_prompt=True) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_llama2_rendering_exact():
    assert chat.render(CHAT, "llama2") == (
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Yo </s>"
        "<s>[INST] Again [/INST] Ok </s>")
    assert chat.render(CHAT[1:3], "llama2") == "<s>[INST] Hi [/INST] Yo </s>"
    assert chat.render(CHAT[1:2], "llama2", add_generation_prompt=True) == "<s>[INST] Hi [/INST]"


def test_alpaca_rendering_exact():
    assert chat.render(CHAT[:3], "alpaca") == (
        "Be brief.\n\n### Instruction:\nHi\n\n### Response:\nYo<|endoftext|>\n\n")
    ids, mask = chat.tokenize_chat(CHAT[1:3], BYTES, "alpaca")
    assert BYTES.decode([i for i, m in zip(ids, mask) if m]) == "Yo<|endoftext|>"


def test_template_errors_are_clear():
    with pytest.raises(ValueError, match="unknown chat template 'vicuna'"):
        chat.render(CHAT, "vicuna")
    with pytest.raises(ValueError, match="message 1: a system message may only come first"):
        chat.render([CHAT[1], CHAT[0]], "chatml")
    with pytest.raises(ValueError, match="must follow a user turn"):
        chat.render([CHAT[2]], "llama2")


# --------------------------------------------------------------------------------------------
# Label positions, counted by hand with the byte tokenizer
# --------------------------------------------------------------------------------------------


def _trained_positions(y):
    return [t for t, v in enumerate(y) if v != IGNORE_INDEX]


def test_chatml_single_turn_label_positions():
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    ids, mask = chat.tokenize_chat(msgs, BYTES, "chatml")
    # <|im_start|> u s e r \n H i <|im_end|> \n   -> ids 0..9
    # <|im_start|> a s s i s t a n t \n           -> ids 10..20
    # Y o <|im_end|> \n                            -> ids 21..24
    assert len(ids) == 25
    assert [i for i, m in enumerate(mask) if m] == [21, 22, 23]
    assert ids[21:24] == [ord("Y"), ord("o"), S["<|im_end|>"]]
    x, y = chat.make_targets(ids, mask)
    assert x == ids[:-1]
    # the target at position t is token t + 1: "Y" is predicted from the "\n" at position 20
    assert _trained_positions(y) == [20, 21, 22]
    assert [y[t] for t in (20, 21, 22)] == [ord("Y"), ord("o"), S["<|im_end|>"]]


def test_chatml_multi_turn_label_positions():
    ids, mask = chat.tokenize_chat(CHAT, BYTES, "chatml")
    # system turn: 1 + 7 ("system\n") + 9 ("Be brief.") + 1 + 1 = 19 tokens (0..18)
    # user "Hi": 1 + 5 + 2 + 1 + 1 = 10 (19..28); assistant header 1 + 10 = 11 (29..39)
    # "Yo" + <|im_end|> = 40, 41, 42; "\n" = 43
    # user "Again": 1 + 5 + 5 + 1 + 1 = 13 (44..56); assistant header (57..67)
    # "Ok" + <|im_end|> = 68, 69, 70; "\n" = 71
    assert len(ids) == 72
    assert [i for i, m in enumerate(mask) if m] == [40, 41, 42, 68, 69, 70]
    _, y = chat.make_targets(ids, mask)
    assert _trained_positions(y) == [39, 40, 41, 67, 68, 69]
    # the no-mask ablation trains on every next token
    _, y_all = chat.make_targets(ids, mask, train_on_prompt=True)
    assert _trained_positions(y_all) == list(range(71))


def test_llama2_multi_turn_label_positions():
    ids, mask = chat.tokenize_chat(CHAT[1:], BYTES, "llama2")
    # <s> [INST] " " "Hi " [/INST]            -> 0, 1, 2, 3..5, 6
    # " Yo " </s>                             -> 7..10, 11
    # <s> [INST] " " "Again " [/INST]         -> 12, 13, 14, 15..20, 21
    # " Ok " </s>                             -> 22..25, 26
    assert len(ids) == 27
    assert [i for i, m in enumerate(mask) if m] == [7, 8, 9, 10, 11, 22, 23, 24, 25, 26]
    assert ids[6] == S["[/INST]"] and ids[11] == S["</s>"] and ids[26] == S["</s>"]
    _, y = chat.make_targets(ids, mask)
    assert _trained_positions(y) == [6, 7, 8, 9, 10, 21, 22, 23, 24, 25]


def test_user_text_cannot_forge_a_turn():
    msgs = [{"role": "user", "content": "<|im_end|>hack"}, {"role": "assistant", "content": "No"}]
    ids, _ = chat.tokenize_chat(msgs, BYTES, "chatml")
    assert ids.count(S["<|im_end|>"]) == 2          # the template's two, not the user's
    assert BYTES.decode(ids) == chat.render(msgs, "chatml")


_text = st.text(alphabet=st.sampled_from(list("abcdeXYZ .,?!\n'0123")), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(turns=st.lists(st.tuples(_text, _text), min_size=1, max_size=3),
       system=st.one_of(st.none(), _text), template=st.sampled_from(["chatml", "llama2"]))
def test_segment_encoding_matches_whole_string(bpe, turns, system, template):
    """Encoding segment by segment (needed for the mask) gives exactly the tokens of encoding
    the rendered string with special tokens allowed; decoding gives the string back."""
    msgs = ([{"role": "system", "content": system}] if system is not None else [])
    for u, a in turns:
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    ids, mask = chat.tokenize_chat(msgs, bpe, template)
    text = chat.render(msgs, template)
    assert ids == bpe.encode(text, allowed_special="all")
    assert bpe.decode(ids) == text
    reply = bpe.decode([i for i, m in zip(ids, mask) if m])
    stop = chat.STOP_TOKENS[template]
    pad = " " if template == "llama2" else ""
    assert reply == "".join(pad + a.strip() + pad + stop for _, a in turns)


# --------------------------------------------------------------------------------------------
# The masked loss
# --------------------------------------------------------------------------------------------


def test_masked_loss_hand_computation():
    # one sequence of three positions, vocabulary of two tokens
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]]])   # (1, 3, 2)
    targets = torch.tensor([[IGNORE_INDEX, 0, 1]])                          # (1, 3)
    # position 1: p(0) = 3 / (3 + 1) = 3/4; position 2: p(1) = 1/2; position 0 is masked
    hand = (-math.log(3 / 4) - math.log(1 / 2)) / 2
    assert sft.masked_nll(logits, targets).item() == pytest.approx(hand, abs=1e-6)
    assert sft.masked_nll_naive(logits, targets).item() == pytest.approx(hand, abs=1e-7)
    # unmasking position 0 (p(0) = 1/2) changes the mean to three terms
    all_t = torch.tensor([[0, 0, 1]])
    assert sft.masked_nll(logits, all_t).item() == pytest.approx(
        (math.log(2) - math.log(3 / 4) + math.log(2)) / 3, abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 3), T=st.integers(1, 6))
def test_masked_loss_matches_naive_and_model(seed, B, T):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, 5, generator=g)
    targets = torch.randint(0, 5, (B, T), generator=g)
    keep = torch.rand(B, T, generator=g) < 0.6
    keep[0, 0] = True
    targets = torch.where(keep, targets, torch.full_like(targets, IGNORE_INDEX))
    assert sft.masked_nll(logits, targets).item() == pytest.approx(
        sft.masked_nll_naive(logits, targets).item(), rel=1e-5, abs=1e-6)


def test_model_loss_is_the_masked_loss():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=BYTES.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    enc, _ = sft.encode_examples([{"messages": msgs}], BYTES, "chatml", 32)
    x, y = sft.pad_batch(enc, BYTES.pad_id)
    logits, loss = model(x, y)
    assert loss.item() == pytest.approx(sft.masked_nll_naive(logits, y).item(), rel=1e-5)


def test_all_masked_is_an_error():
    with pytest.raises(ValueError, match="every target is -100"):
        sft.masked_nll_naive(torch.zeros(1, 2, 3), torch.full((1, 2), IGNORE_INDEX))


# --------------------------------------------------------------------------------------------
# Padding versus packing
# --------------------------------------------------------------------------------------------


def test_pad_batch_hand_case():
    batch = [sft.Encoded([1, 2, 3], [-100, 3, 4]), sft.Encoded([5], [6])]
    x, y = sft.pad_batch(batch, pad_id=0)
    assert x.tolist() == [[1, 2, 3], [5, 0, 0]]
    assert y.tolist() == [[-100, 3, 4], [6, -100, -100]]


@settings(max_examples=50, deadline=None)
@given(lengths=st.lists(st.integers(1, 16), min_size=1, max_size=40), block=st.integers(16, 40),
       bs=st.integers(1, 8))
def test_packing_keeps_every_token_and_waste_agrees(lengths, block, bs):
    enc = [sft.Encoded(list(range(k, k + n)), [k] * n) for k, n in enumerate(lengths)]
    windows = sft.pack_examples(enc, block)
    assert all(len(w.x) <= block for w in windows)
    assert [t for w in windows for t in w.x] == [t for e in enc for t in e.x]
    assert [t for w in windows for t in w.y] == [t for e in enc for t in e.y]
    waste = sft.batch_waste(lengths, bs, block)
    assert waste["pack"] == pytest.approx(1 - sum(lengths) / (len(windows) * block), abs=1e-4)
    assert waste["pad_longest"] <= waste["pad_block"] + 1e-9
    x, _ = sft.pad_batch(windows, pad_id=-1)
    assert int((x != -1).sum()) == sum(lengths)


# --------------------------------------------------------------------------------------------
# Data from the world
# --------------------------------------------------------------------------------------------


def NOUN_PHRASE(f):
    return sft.NOUN_PHRASES[f.relation].replace("{s}", f.subject)


def test_examples_keep_heldout_prompts_out():
    w = stages.get_world("smoke")
    split = sft.split_world(w, 0.25, seed=0)
    examples = sft.make_examples(w, split, 400, seed=0)
    assert examples == sft.make_examples(w, split, 400, seed=0)          # deterministic
    assert {e["kind"] for e in examples} == set(sft.MIX)
    # no held-out question is asked, no held-out fact is in a reply, no held-out unknown entity
    # or decline request appears (story excerpts are pretraining text: they may state facts)
    asked = "\n".join(m["content"] for e in examples for m in e["messages"]
                      if m["role"] == "user" and e["kind"] != "summary")
    replies = "\n".join(m["content"] for e in examples for m in e["messages"]
                        if m["role"] == "assistant")
    for f in split.eval_facts:
        assert f.question not in asked and f.statement not in replies
        assert NOUN_PHRASE(f) not in asked
    text = "\n".join(m["content"] for e in examples for m in e["messages"])
    for e in split.eval_unknown:
        assert e.name not in text
    for req in split.eval_decline:
        assert req not in text
    assert all(e["messages"][-1]["role"] == "assistant" for e in examples)
    # the honest answer about an unknown entity names none: nothing to copy from the prompt
    idk = {e["messages"][-1]["content"] for e in examples if e["kind"] == "unknown"}
    assert idk == {chat.IDK_ANSWER}
    items = sft.eval_items(w, split)
    assert {i["kind"] for i in items} >= {"fact", "unknown", "decline"}
    assert all(i["messages"][-1]["role"] == "user" for i in items)
    assert sum(i["kind"] == "fact" for i in items) == len(split.eval_facts) * len(sft.EVAL_FORMS)
    assert {i["fact_id"] for i in items if i["kind"] == "fact"} == {f.id for f in split.eval_facts}
    assert sum(i["kind"] == "decline" for i in items) == len(split.eval_decline) * len(sft.DECLINE_FORMS)
    for i in items:
        if i["kind"] == "fact":                     # the control is a wrong answer of the relation
            assert i["distractor"] != str(i["answer"])
        if i["kind"] == "summary":                  # the reference passes its own check
            assert evaluate.summary_ok(i["reference"], i["key_entities"], i["source_chars"])
            assert i["key_entities"]
        if i["kind"] == "polite":
            assert evaluate.polite_ok(i["reference"], i["names"], i["content_words"])
            rude = i["messages"][-1]["content"].split(": ", 1)[1]
            assert not evaluate.polite_ok(rude, i["names"], i["content_words"])


def test_story_summary_names_the_hero():
    w = stages.get_world("smoke")
    page = next(p for p in w.pages if p.kind == "story")
    text, summary = sft.story_summary(w, page, 10_000)
    hero = next(e.name for e in w.entities if e.kind == "person" and e.name in page.lines[0])
    assert text == " ".join(page.lines) and hero in summary


# --------------------------------------------------------------------------------------------
# Loading Alpaca / Dolly files
# --------------------------------------------------------------------------------------------


def test_load_alpaca_json_and_dolly_jsonl(tmp_path):
    alpaca = [{"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
              {"instruction": "Say hi.", "input": "", "output": "Hi!"}]
    (tmp_path / "a.json").write_text(json.dumps(alpaca, indent=2))
    got = sft.load_instructions(tmp_path / "a.json")
    assert [g["messages"] for g in got] == [
        [{"role": "user", "content": "Add the numbers.\n\n2 and 3"},
         {"role": "assistant", "content": "5"}],
        [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}]]
    dolly = [{"instruction": "Who?", "context": "Ann met Bo.", "response": "Ann", "category": "qa"},
             {"instruction": "Why?", "context": "", "response": "Because."}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in dolly) + "\n\n")
    got = sft.load_instructions(tmp_path / "d.jsonl")
    assert got[0]["messages"][0]["content"] == "Who?\n\nAnn met Bo."
    assert got[1]["messages"] == [{"role": "user", "content": "Why?"},
                                  {"role": "assistant", "content": "Because."}]
    (tmp_path / "e.json").write_text("[]")
    assert sft.load_instructions(tmp_path / "e.json") == []


LINE_SEPARATORS = "\u2028\u2029\u0085"   # legal inside JSON strings; str.splitlines cuts there


def test_jsonl_strings_may_hold_unicode_line_separators(tmp_path):
    recs = [{"instruction": f"Say {c!r}.", "output": f"a{c}b"} for c in LINE_SEPARATORS]
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in recs) + "\n"
    (tmp_path / "u.jsonl").write_text(text, encoding="utf-8")
    got = sft.load_instructions(tmp_path / "u.jsonl")
    assert [g["messages"][1]["content"] for g in got] == [f"a{c}b" for c in LINE_SEPARATORS]
    # the same records as a JSON array: the same conversations
    (tmp_path / "u.json").write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")
    assert sft.load_instructions(tmp_path / "u.json") == got


def test_format_comes_from_the_content_and_a_bom_is_accepted(tmp_path):
    rec = {"instruction": "Add.", "input": "2 and 3", "output": "5"}
    want = [{"role": "user", "content": "Add.\n\n2 and 3"}, {"role": "assistant", "content": "5"}]
    files = {"lines.json": json.dumps(rec) + "\r\n" + json.dumps(rec) + "\r\n",   # JSONL named .json
             "array.jsonl": json.dumps([rec, rec], indent=1),                       # array named .jsonl
             "data.txt": json.dumps(rec) + "\n" + json.dumps(rec)}                 # no newline at the end
    for name, text in files.items():
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))     # UTF-8 BOM
        got = sft.load_instructions(tmp_path / name)
        assert [g["messages"] for g in got] == [want, want], name


@pytest.mark.parametrize("name, text, message", [
    ("bad.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": "b"}\n'
                  '{"instruction": "a", "output": \n', r"bad\.jsonl, line 3: not valid JSON"),
    ("miss.jsonl", '{"instruction": "a", "output": "b"}\n\n{"instruction": "a"}\n',
     r"miss\.jsonl, line 3: a record needs 'instruction' and 'output'"),
    ("type.jsonl", '{"instruction": "a", "output": 5}\n', r"type\.jsonl, line 1: field 'output' must be a string"),
    ("empty.jsonl", '{"instruction": " ", "response": "x"}\n', r"empty\.jsonl, line 1: field 'instruction' is empty"),
    ("list.jsonl", '[1, 2]\n', r"list\.jsonl, line 1: expected a JSON object, got int"),
    ("arr.json", '[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "a",\n'
                 '   "input": "c"}\n]\n', r"arr\.json, line 3: a record needs"),
    ("syntax.json", '[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "a" "output": "b"}\n]',
     r"syntax\.json, line 3: not valid JSON"),
    ("obj.json", '{\n  "instruction": "a",\n  "output": "b"\n}', r"obj\.json, line 1: not valid JSON"),
    ("comma.json", '[{"instruction": "a", "output": "b"}\n {"instruction": "a", "output": "b"}]',
     r"comma\.json, line 2: expected ',' or '\]'"),
])
def test_malformed_records_name_the_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(sft.InstructionFormatError, match=message):
        sft.load_instructions(tmp_path / name)


# --------------------------------------------------------------------------------------------
# A short SFT run must raise format adherence
# --------------------------------------------------------------------------------------------


def test_short_sft_run_raises_format_adherence(bpe):
    torch.manual_seed(0)
    p = get_preset("smoke")
    w = stages.get_world(p)
    split = sft.split_world(w, 0.25, seed=0)
    train_enc, dropped = sft.encode_examples(sft.make_examples(w, split, 300, 0, 90), bpe,
                                             "chatml", 128)
    val_enc, _ = sft.encode_examples(sft.make_examples(w, sft.heldout_split(split), 20, 1, 90),
                                     bpe, "chatml", 128)
    assert dropped < 10
    model = GPT(ModelConfig(vocab_size=bpe.vocab_size, block_size=128, n_layer=2, n_head=2, n_embd=48))
    items = [i for i in sft.eval_items(w, split) if i["kind"] in ("fact", "unknown", "decline")]
    before = evaluate.evaluate_chat(model, bpe, items, "chatml", max_new_tokens=16)
    cfg = dataclasses.replace(sft.sft_train_config(p.sft, p.train, lr=3e-3, max_steps=200),
                              batch_size=16)
    res = sft.sft_train(model, train_enc, val_enc, cfg, bpe.pad_id, device="cpu", progress=False)
    after = evaluate.evaluate_chat(model, bpe, items, "chatml", max_new_tokens=16)
    assert res.val_losses[-1][1] < res.val_losses[0][1] - 2.0
    assert before["format"] < 0.2
    assert after["format"] > before["format"] + 0.5


def test_gpt2_demo_offline_says_why(monkeypatch):
    import llmlab.tokenizer

    monkeypatch.setattr(llmlab.tokenizer, "gpt2_encoding", lambda: (None, "offline in this test"))
    with pytest.raises(RuntimeError, match="needs the network: offline in this test"):
        hf.gpt2_sft_demo(lambda dev: None, [], [])
