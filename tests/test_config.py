import dataclasses

import pytest
import torch

from llmlab import config
from llmlab.config import PRESETS, get_preset
from llmlab.device import choose_precision, pick_device, seed_everything


def test_presets_named_and_complete():
    assert set(PRESETS) == {"smoke", "cpu", "gpu"}
    for name, p in PRESETS.items():
        assert p.name == name
        # the model reads the tokenizer's vocabulary and the packer's block size
        assert p.model.vocab_size == p.tokenizer.vocab_size
        assert p.model.block_size == p.data.block_size
        assert p.model.n_embd % p.model.n_head == 0


def test_sizes_grow_from_smoke_to_gpu():
    s, c, g = (PRESETS[k] for k in ("smoke", "cpu", "gpu"))
    for f in ("n_countries", "n_people", "n_stories", "n_threads"):
        assert getattr(s.world, f) < getattr(c.world, f) < getattr(g.world, f)
    assert s.model.n_embd < c.model.n_embd < g.model.n_embd


def test_unknown_preset_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="valid presets are: cpu, gpu, smoke"):
        get_preset("laptop")
    monkeypatch.setenv("LLMLAB_PRESET", "tiny")
    with pytest.raises(ValueError, match="unknown preset 'tiny'"):
        get_preset()


def test_preset_from_environment_and_default(monkeypatch):
    monkeypatch.setenv("LLMLAB_PRESET", "SMOKE")
    assert get_preset().name == "smoke"
    monkeypatch.delenv("LLMLAB_PRESET")
    assert get_preset().name == ("gpu" if torch.cuda.is_available() else "cpu")


def test_every_config_field_has_a_comment():
    src = open(config.__file__).read()
    for cls in (config.WorldConfig, config.DataConfig, config.TokenizerConfig, config.ModelConfig,
                config.TrainConfig, config.ScalingConfig, config.SFTConfig):
        for f in dataclasses.fields(cls):
            line = next(l for l in src.splitlines() if l.strip().startswith(f"{f.name}:"))
            assert "#" in line, f"{cls.__name__}.{f.name} has no comment"


def test_config_hash_changes_with_any_field():
    a = PRESETS["cpu"].world
    assert config.config_hash(a) == config.config_hash(PRESETS["cpu"].world)
    for f in dataclasses.fields(a):              # each field, changed alone, changes the hash
        v = getattr(a, f.name)
        other = (not v) if isinstance(v, bool) else v + 1 if isinstance(v, (int, float)) else v + "x"
        assert config.config_hash(a) != config.config_hash(dataclasses.replace(a, **{f.name: other})), f.name


def test_precision_rules():
    cuda = torch.device("cuda")
    assert choose_precision(torch.device("cpu")).name == "fp32"
    assert choose_precision(torch.device("mps")).name == "fp32"
    t4 = choose_precision(cuda, capability=(7, 5))      # bf16 only emulated on a T4
    assert (t4.name, t4.dtype, t4.use_scaler) == ("fp16", torch.float16, True)
    a100 = choose_precision(cuda, capability=(8, 0))
    assert (a100.name, a100.dtype, a100.use_scaler) == ("bf16", torch.bfloat16, False)


def test_pick_device(monkeypatch):
    """CUDA first, then MPS, then the CPU; a device asked for (argument or $LLMLAB_DEVICE) wins
    and must exist."""
    from llmlab import device as device_mod

    monkeypatch.delenv("LLMLAB_DEVICE", raising=False)
    for cuda, mps, want in ((True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        monkeypatch.setattr(device_mod, "_mps_available", lambda mps=mps: mps)
        assert pick_device().type == want
    assert pick_device("cpu").type == "cpu"
    monkeypatch.setenv("LLMLAB_DEVICE", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device().type == "cpu"                  # the environment variable wins
    monkeypatch.delenv("LLMLAB_DEVICE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "_mps_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="MPS is not available"):
        pick_device("mps")


def test_seed_everything_repeats():
    seed_everything(7)
    a = torch.randn(5)
    seed_everything(7)
    assert torch.equal(a, torch.randn(5))
