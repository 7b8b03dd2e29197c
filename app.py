"""Pruning Explorer: `streamlit run app.py`.

The router: the shared experiment sidebar, then the chosen page."""

import streamlit as st

import ui

st.set_page_config(page_title="Pruning Explorer", page_icon=":material/content_cut:", layout="wide")

pages = [
    st.Page("pages/prune.py", title="Prune", icon=":material/content_cut:", default=True),
    st.Page("pages/masks.py", title="Masks", icon=":material/grid_on:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("pages/recall.py", title="Recall", icon=":material/balance:"),
    st.Page("pages/attributions.py", title="Attributions", icon=":material/visibility:"),
    st.Page("pages/valley.py", title="Loss valley", icon=":material/landscape:"),
    st.Page("pages/limit.py", title="Limit", icon=":material/speed:"),
    st.Page("pages/about.py", title="About", icon=":material/info:"),
]
navigation = st.navigation(pages)
ui.experiment_sidebar()
navigation.run()
