"""Prune page: one-shot pruning that follows the sparsity slider live; schedules that train run
behind a button, with progress, and are kept for the session."""

import streamlit as st

import ui
from pruning.errors import BadInputError
from pruning.pipeline import PruneResult, prune_model
from pruning.plots import (
    WARN_SPARSITY,
    class_recall_figure,
    history_figure,
    layer_sparsity_figure,
    schedule_preview_figure,
    training_curve_figure,
)
from pruning.schedules import Schedule, sparsity_curve

experiment = ui.current_experiment()
st.title("Prune")
st.caption(f"{experiment.model} on {experiment.dataset} · imbalance {experiment.imbalance:g} · seed {experiment.seed}")
state = ui.dense_state(experiment)

with st.expander("Dense model training curve"):
    st.plotly_chart(training_curve_figure(state.dense.history), key="training_curve")


def show_result(result: PruneResult, sparsity: float | None, accuracy_before_finetune: float | None = None) -> None:
    dense, pruned, stats = state.evaluation, result.pruned, result.stats
    cards = st.columns(5)
    cards[0].metric("Dense accuracy", f"{100 * dense.accuracy:.2f}%")
    cards[1].metric("Pruned accuracy", f"{100 * pruned.accuracy:.2f}%", f"{100 * (pruned.accuracy - dense.accuracy):+.2f} pts")
    cards[2].metric("Sparsity achieved", f"{100 * stats.sparsity:.2f}%", help="fraction of prunable weights that are zero")
    cards[3].metric("Compression", f"{stats.compression:.2f}x", help="all parameters / nonzero parameters")
    cards[4].metric("Speedup (FLOPs)", f"{stats.speedup:.2f}x",
                    help="theoretical: dense FLOPs / FLOPs of nonzero weights; a masked model is not faster in practice")
    if accuracy_before_finetune is not None:
        st.caption(f"Accuracy before fine-tuning {100 * accuracy_before_finetune:.2f}%, after {100 * pruned.accuracy:.2f}%.")
    emptied = [layer.name for layer in stats.layers if layer.sparsity >= WARN_SPARSITY]
    if emptied:
        st.warning(f"Nearly emptied (at least {100 * WARN_SPARSITY:.0f}% pruned): {', '.join(emptied)}. "
                   "Global scope can collapse a layer: try layerwise scope or a per-layer cap.")
    if result.history:
        st.plotly_chart(history_figure(result.history), key="run_history")
    st.plotly_chart(layer_sparsity_figure(stats, target=sparsity), key="layer_sparsity")
    st.plotly_chart(
        class_recall_figure(list(state.data.class_names), dense.per_class_recall, pruned.per_class_recall,
                            dense.accuracy, pruned.accuracy),
        key="class_recall",
    )


@st.fragment
def pruning_panel():
    controls, results = st.columns([1, 3], gap="large")
    with controls:
        method = ui.method_picker(key="method")
        sparsity = None
        if method.target_sparsity:
            sparsity = st.slider(
                "Sparsity (fraction of prunable weights, or of neurons/filters/blocks, removed)", 0.0, 0.99, 0.8, 0.01,
                key="sparsity", help="A parameter ratio for unstructured pruning; a channel or block ratio for structured/block.",
            )
        else:
            st.caption(f"{method.name}'s sparsity emerges from its settings below; there is no target to set.")
        try:
            settings = ui.method_settings(method)
            if method.trains:
                st.caption(f"{method.name} prunes while it trains, on its own schedule.")
                schedule = Schedule()
            else:
                schedule = ui.schedule_controls(experiment)
        except BadInputError as error:
            st.error(str(error))
            return
    with results:
        if schedule.is_live and not method.trains:
            try:
                result = prune_model(state.dense.model, state.data, method.name, sparsity, settings, seed=experiment.seed)
            except BadInputError as error:
                st.error(str(error))
                return
            show_result(result, sparsity)
            return
        if not method.trains:
            steps_per_epoch = -(-len(state.data.y_train) // experiment.train.batch_size)
            st.plotly_chart(schedule_preview_figure(sparsity_curve(schedule, sparsity, experiment.train.epochs, steps_per_epoch)),
                            key="schedule_preview")
        outcome = ui.pruning_run(experiment, method, sparsity, settings, schedule, key="run_schedule")
        if outcome is not None:
            finetuned = schedule.finetune_epochs or "accuracy_before_finetune" in outcome.result.extras
            show_result(outcome.result, sparsity, outcome.accuracy_before_finetune if finetuned else None)
            if outcome.result.extras:
                with st.expander("Run details"):
                    st.json(outcome.result.extras)


pruning_panel()
