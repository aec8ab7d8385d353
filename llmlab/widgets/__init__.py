"""Interactive demos (ipywidgets, built-in widgets only so Colab's 7.7 works).

One module per demo: ``next_token`` (notebook 02), ``chinchilla`` (notebook 03),
``compare`` (notebook 04, base versus SFT).
"""
