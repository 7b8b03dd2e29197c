"""Pruning Explorer: `streamlit run app.py`.

The router: the shared experiment sidebar, then the chosen page."""

from pathlib import Path

import pandas  # noqa: F401  before any session runs: plotly uses pandas if it is in sys.modules, and a
import streamlit as st  # half-imported pandas (another session importing it) breaks its figures

import compile_guard
import rerun_order
import ui

compile_guard.install()  # before any page script is compiled: parsing is not thread-safe on CPython 3.11.0-3.11.7
rerun_order.install()  # a run's last deltas reach the page even when a rerun request arrives as it ends

# A bundled image: a ":material/...:" page icon is fetched from a font host, which fails offline (the
# st.Page icons below are drawn with the font Streamlit bundles, so they need no network).
FAVICON = Path(__file__).resolve().parent / "assets" / "favicon.png"

st.set_page_config(page_title="Pruning Explorer", page_icon=str(FAVICON), layout="wide")

pages = [
    st.Page("views/prune.py", title="Prune", icon=":material/content_cut:", default=True),
    st.Page("views/masks.py", title="Masks", icon=":material/grid_on:"),
    st.Page("views/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("views/sensitivity.py", title="Sensitivity", icon=":material/tune:"),
    st.Page("views/recall.py", title="Recall", icon=":material/balance:"),
    st.Page("views/attributions.py", title="Attributions", icon=":material/visibility:"),
    st.Page("views/valley.py", title="Loss valley", icon=":material/landscape:"),
    st.Page("views/limit.py", title="Limit", icon=":material/speed:"),
    st.Page("views/about.py", title="About", icon=":material/info:"),
]
navigation = st.navigation(pages)
ui.experiment_sidebar()
navigation.run()
