"""Pruning Explorer engine: datasets, models, training, masks, pruning methods and metrics.

This package never imports streamlit; the app in ``app.py``/``views/`` and the CLI
(``python -m pruning``) are both thin layers over it.
"""
