"""llmlab: the LLM training pipeline, built for real and small enough to run anywhere.

One module per stage, in the order of the notebooks:

- ``world``      the synthetic world every stage learns from (notebook 00)
- ``stages``     the artifact chain: each stage's outputs, cached per preset
- ``config``     every size in one place: a config dataclass per stage and three presets
- ``device``     device, precision and seeding rules
- ``artifacts``  the atomic, checked artifact cache
- ``nb``         notebook helpers: setup, showing the package's real code, figures
"""
__version__ = "0.1.0"

from .config import PRESETS, Preset, get_preset  # noqa: E402,F401
