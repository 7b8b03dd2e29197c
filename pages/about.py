import streamlit as st

st.title("Pruning Explorer")
st.markdown(
    """
An interactive laboratory for neural-network pruning. Pick a dataset and a model in the sidebar;
the dense model is trained once and cached on disk. On **Prune**, choose a method and move the
sparsity slider: the model is pruned live and you see what it costs in accuracy, which layers lose
most, and which classes pay for it.

**How numbers are defined** (as ShrinkBench defines them):
- *sparsity*: fraction of the prunable weights (Linear and Conv weights) that are zero;
- *compression*: all parameters / nonzero parameters (biases and norm layers included);
- *theoretical speedup*: FLOPs of the dense model / FLOPs of its nonzero weights. A masked model
  holds zeros but runs at dense speed: this is the speedup sparse kernels could give, not a measurement.

The same engine runs headless: `python -m pruning list` and `python -m pruning prune --help`.
"""
)
