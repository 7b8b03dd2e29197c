"""Prune page: one-shot pruning that follows the sparsity slider live."""

import streamlit as st

import ui
from pruning.errors import BadInputError
from pruning.methods import get_method, method_names
from pruning.pipeline import prune_model
from pruning.plots import WARN_SPARSITY, class_recall_figure, layer_sparsity_figure, training_curve_figure

experiment = ui.current_experiment()
st.title("Prune")
st.caption(f"{experiment.model} on {experiment.dataset} · imbalance {experiment.imbalance:g} · seed {experiment.seed}")
state = ui.dense_state(experiment)

with st.expander("Dense model training curve"):
    st.plotly_chart(training_curve_figure(state.dense.history), key="training_curve")


@st.fragment
def live_pruning():
    controls, results = st.columns([1, 3], gap="large")
    with controls:
        method = get_method(st.selectbox("Method", method_names(), key="method"))
        ui.method_help(method)
        sparsity = st.slider(
            "Sparsity (fraction of prunable weights removed)", 0.0, 0.99, 0.8, 0.01, key="sparsity",
            help="Parameter ratio over Linear/Conv weights, not a channel ratio.",
        )
        try:
            settings = ui.method_settings(method)
            result = prune_model(state.dense.model, state.data, method.name, sparsity, settings, seed=experiment.seed)
        except BadInputError as error:
            st.error(str(error))
            return
    dense, pruned, stats = state.evaluation, result.pruned, result.stats
    with results:
        cards = st.columns(5)
        cards[0].metric("Dense accuracy", f"{100 * dense.accuracy:.2f}%")
        cards[1].metric("Pruned accuracy", f"{100 * pruned.accuracy:.2f}%", f"{100 * (pruned.accuracy - dense.accuracy):+.2f} pts")
        cards[2].metric("Sparsity achieved", f"{100 * stats.sparsity:.2f}%")
        cards[3].metric("Compression", f"{stats.compression:.2f}x", help="all parameters / nonzero parameters")
        cards[4].metric("Speedup (FLOPs)", f"{stats.speedup:.2f}x", help="dense FLOPs / FLOPs of nonzero weights; a masked model is not faster in practice")
        emptied = [layer.name for layer in stats.layers if layer.sparsity >= WARN_SPARSITY]
        if emptied:
            st.warning(f"Nearly emptied (at least {100 * WARN_SPARSITY:.0f}% pruned): {', '.join(emptied)}. "
                       "Global scope can collapse a layer; try layerwise scope.")
        st.plotly_chart(layer_sparsity_figure(stats, target=sparsity), key="layer_sparsity")
        st.plotly_chart(
            class_recall_figure(list(state.data.class_names), dense.per_class_recall, pruned.per_class_recall,
                                dense.accuracy, pruned.accuracy),
            key="class_recall",
        )


live_pruning()
