import streamlit as st

import share

st.title("Pruning Explorer")
share.experiment_only()  # a link to this page carries the experiment
st.markdown(
    """
An interactive laboratory for neural-network pruning. Pick a dataset and a model in the sidebar;
the dense model is trained once and cached on disk. On **Prune**, choose a method and move the
sparsity slider: the model is pruned live and you see what it costs in accuracy, which layers lose
most, and which classes pay for it.

- **Masks**: which weights, channels or blocks are gone, layer by layer; for methods that prune while
  they train (DNS, gRDA, sDprun, SequentialAttention++, ...), how the mask evolves, splicing included.
- **Compare**: methods over a sparsity sweep, ShrinkBench-style.
- **Sensitivity**: each layer pruned alone at several sparsities: which layers can go how far,
  which classes lean on which layer, and per-layer sparsities to apply on **Prune**.
- **Recall**: which classes pay for pruning, and whether pruning intensifies the gaps the dense model has.
- **Loss valley**: the loss along the path from the dense to the pruned weights and on a 2-D slice,
  with the Hessian's sharpness.
- **Attributions**: what the dense and the pruned model look at (integrated gradients, saliency),
  channel attributions with the removed channels marked, and which classes relied on them.
- **Limit**: how sparse the network can get, predicted from weight magnitudes and the Hessian spectrum,
  beside the limit measured by pruning.

**How numbers are defined** (as ShrinkBench defines them):
- *sparsity*: fraction of the prunable weights (Linear and Conv weights) that are zero;
- *compression*: all parameters / nonzero parameters (biases and norm layers included);
- *theoretical speedup*: FLOPs of the dense model / FLOPs of its nonzero weights. A masked model
  holds zeros but runs at dense speed: this is the speedup sparse kernels could give, not a measurement.

The same engine runs headless: `python -m pruning list` and `python -m pruning prune --help`.
"""
)
