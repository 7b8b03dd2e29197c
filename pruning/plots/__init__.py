"""Plotly figures, one module per page of the app (``prune``, ``masks``, ``compare``, ``recall``,
``valley``, ``limit``, ``attributions``) plus ``palette``, the colours and constants they share.
Pages only lay the figures out; nothing here imports streamlit. Import the module you need, e.g.
``from pruning.plots import masks as mask_plots``."""
