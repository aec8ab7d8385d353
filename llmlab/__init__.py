"""llmlab: the LLM training pipeline, built for real and small enough to run anywhere.

One module per stage, in the order of the notebooks:

- ``world``      the synthetic world every stage learns from (notebook 00)
- ``data``, ``tokenizer``, ``packing``   the data pipeline (notebook 01)
- ``model``, ``train``, ``generate``, ``probes``   the GPT and its training (notebook 02)
- ``scaling``    scaling laws (notebook 03)
- ``chat``, ``sft``, ``evaluate``   templates, fine-tuning, evaluating replies (notebook 04)
- ``prefs``, ``reward``   the gold judge, preference pairs and the reward model (notebook 05)
- ``ppo``        RLHF with PPO (notebook 06)
- ``dpo``        direct preference optimisation (notebook 07)
- ``stages``     the artifact chain: each stage's outputs, cached per preset (declarations;
  the recipes live in the stage modules)
- ``config``     every size in one place: a config dataclass per stage and three presets
- ``device``     device, precision and seeding rules
- ``artifacts``  the atomic, checked artifact cache
- ``nb``         notebook helpers: setup, showing the package's real code, figures
- ``exercises``  checked exercises for the notebooks, and the student edition's writer
- ``__main__``   the command line (``python -m llmlab train``)
"""
__version__ = "0.1.0"

from .config import PRESETS, Preset, get_preset  # noqa: E402,F401
