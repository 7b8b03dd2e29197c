"""Prune page: one-shot pruning that follows the sparsity slider live; schedules that train run
behind a button, with progress, and are kept for the session. Measured latency, the physically
smaller model and the exports also run behind a button: they take seconds, the slider must not."""

import hashlib
import io
import json

import pandas as pd
import streamlit as st
import torch

import share
import ui
from pruning.errors import BadInputError
from pruning.export import LAYERS_FILE, ONNX_FILE, PROGRAM_FILE, export_bytes, layers_csv
from pruning.methods.oneshot import AllocationDetails
from pruning.methods.sparsegpt import SparseGPTDetails
from pruning.physical.costs import COSTS_NOTE, real_costs
from pruning.pipeline import PruneResult
from pruning.plots.details import allocation_figure, sparsegpt_figure
from pruning.plots.palette import WARN_SPARSITY
from pruning.plots.prune import (
    class_recall_figure,
    costs_figure,
    history_figure,
    layer_sparsity_figure,
    prune_scrub_figure,
    schedule_preview_figure,
    training_curve_figure,
)
from pruning.schedules import OneShot
from pruning.train import steps_per_epoch

DEFAULT_SPARSITY = 0.8  # the slider's start, and where the scrubber opens (one figure for every session)
VIEW = share.View(method="magnitude", sparsity=DEFAULT_SPARSITY, schedule=True)  # what a link to this page carries
experiment = ui.current_experiment()
st.title("Prune")
st.caption(f"{experiment.model} on {experiment.dataset} · imbalance {experiment.imbalance:g} · seed {experiment.seed}")
share.restore(VIEW)
state = ui.dense_state(experiment)

with st.expander("Dense model training curve"):
    st.plotly_chart(training_curve_figure(state.dense.history), key="training_curve")


def show_result(result: PruneResult, sparsity: float | None, accuracy_before_finetune: float | None = None,
                run: tuple = ("live",)) -> None:
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
    show_details(result.details)
    st.plotly_chart(
        class_recall_figure(list(state.data.class_names), dense.per_class_recall, pruned.per_class_recall,
                            dense.accuracy, pruned.accuracy),
        key="class_recall",
    )
    with st.expander("Real size and speed: physically smaller model, measured latency, downloads"):
        real_costs_panel(result, run)


def show_details(details) -> None:
    """The method's own numbers: a one-shot cut's per-layer allocation, SparseGPT's weight updates."""
    if isinstance(details, AllocationDetails):
        with st.expander(f"Allocation across layers: {details.allocation}"):
            st.plotly_chart(allocation_figure(details.layer_targets), key="allocation")
            if details.left_dense:
                st.info("Left dense (their rows do not divide into groups of M): " + ", ".join(details.left_dense))
    elif isinstance(details, SparseGPTDetails):
        with st.expander("SparseGPT's reconstruction: errors and weight updates", expanded=True):
            st.plotly_chart(sparsegpt_figure(details.reconstruction_error, details.masked_error, details.movement_edges,
                                             details.movement_counts), key="sparsegpt")
            st.caption(f"Calibration: {details.calibration_samples} class-balanced training samples, pattern "
                       f"{details.pattern}. Mean layer-output error {details.mean_reconstruction_error:.4f} with the "
                       f"update against {details.mean_masked_error:.4f} for the same mask without it."
                       + "".join(f" {name} left dense: {why}." for name, why in details.left_dense.items()))


COST_LABELS = {
    "model": "model", "params": "params", "compression": "compression (x)", "flops": "FLOPs (batch 1)",
    "theoretical_speedup": "theoretical speedup (x, FLOPs)", "latency_ms_batch1": "latency batch 1 (ms)",
    "latency_ms_batch64": "latency batch 64 (ms)", "measured_speedup_batch1": "measured speedup batch 1 (x)",
    "measured_speedup_batch64": "measured speedup batch 64 (x)",
}


def result_key(result: PruneResult, run: tuple) -> tuple:
    """What a measurement belongs to: the experiment, the method's choices and the mask itself."""
    digest = hashlib.sha1()
    for name in sorted(result.mask):
        digest.update(name.encode())
        digest.update(result.mask[name].cpu().numpy().tobytes())
    settings = tuple(sorted((key, str(value)) for key, value in result.settings.items()))
    return experiment, result.method, settings, result.target_sparsity, run, digest.hexdigest()


def real_costs_panel(result: PruneResult, run: tuple) -> None:
    """Measured latency of the dense, masked and physically smaller models, and the files to take
    away. Runs on a button press (timing takes seconds) and is kept for the session (the latest one)."""
    store = st.session_state.setdefault("real_costs", {})
    key = result_key(result, run)
    if key not in store:
        intro = st.empty()
        with intro.container():
            st.caption("Times one forward pass of the dense, masked and physically pruned models on the CPU at batch "
                       "1 and 64, and builds the downloads (ONNX and torch.export files of the smaller model). "
                       "Takes seconds.")
            pressed = st.button("Measure latency and build exports", key="measure_costs")
        if not pressed:
            return
        intro.empty()
        model = state.dense.model
        try:
            with ui.progress_status("Physical removal, latency and exports", done="Measured and exported") as report:
                costs = real_costs(model, result.mask, state.data.input_shape, result.pruned_state_dict(model),
                                   progress=report)
                report(1.0, "exporting the physical model")
                files = export_bytes(costs)
        except BadInputError as error:
            st.error(str(error))
            return
        store.clear()  # one measurement kept: its models and files are large
        store[key] = (costs, files)
    costs, files = store[key]
    table = pd.DataFrame(costs.rows()).rename(columns=COST_LABELS)
    st.dataframe(table, hide_index=True, key="costs_table")
    st.plotly_chart(costs_figure(costs), key="costs_figure")
    if costs.physical is None:
        st.info(costs.physical_note)
    else:
        st.caption(costs.physical_note)
    if costs.semi_structured:
        st.dataframe(pd.DataFrame([{"layer": row.layer, "shape": str(row.shape), "dense fp16 (ms)": row.dense_ms,
                                    "2:4 sparse (ms)": row.sparse_ms, "measured speedup (x)": row.speedup}
                                   for row in costs.semi_structured]), hide_index=True, key="semi_structured")
    if costs.semi_structured_note:
        st.caption(f"2:4 kernels on a GPU: {costs.semi_structured_note}")
    st.caption(f"{COSTS_NOTE} Latency: median of timed forward passes on {costs.device_name}, "
               "after warm-up, the models taking turns; a shared machine makes it noisy.")
    summary = {"experiment": experiment.to_dict(), "method": result.method, "settings": result.settings,
               "target_sparsity": result.target_sparsity, **result.stats.to_dict(), **costs.to_json()}
    buffer = io.BytesIO()
    torch.save(result.pruned_state_dict(state.dense.model), buffer)
    downloads = [("result.json", json.dumps(summary, indent=2, default=str), "application/json"),
                 (LAYERS_FILE, layers_csv(result.stats, costs.physical), "text/csv"),
                 ("model.pt", buffer.getvalue(), "application/octet-stream")]
    downloads += [(name, files[name], "application/octet-stream")
                  for name in (ONNX_FILE, PROGRAM_FILE) if isinstance(files.get(name), bytes)]
    for name, problem in files.items():
        if isinstance(problem, str):
            st.warning(f"{name} could not be written: {problem}")
    columns = st.columns(len(downloads))
    for column, (name, data, mime) in zip(columns, downloads):
        column.download_button(name, data, file_name=name, mime=mime, key=f"download_{name}", on_click="ignore")
    st.caption("model.pt: the masked state_dict (load it into the registry model). "
               + ("physical.onnx / physical.pt2: the smaller model, loadable without this project's code "
                  "(onnxruntime; torch.export.load). " if files else "No smaller model to export: see above. ")
               + "See the README, \"Exports\".")


def scrub_section(method, settings: dict) -> None:
    """The whole slider in the browser: computed once (in the background, the exact result below
    already drawn), then the scrubber redraws without a server run."""
    ui.scrubber("prune", experiment, state, method, settings,
                lambda sweep: prune_scrub_figure(sweep, sweep.nearest(DEFAULT_SPARSITY)),
                "The slider below gives any exact sparsity.")


SLIDER_LABEL = "Sparsity (fraction of prunable weights, or of neurons/filters/blocks, removed)"
SLIDER_HELP = "A parameter ratio for unstructured pruning; a channel or block ratio for structured/block."


def sparsity_slider(method) -> float | None:
    """The last of the page's choices: the URL follows them from here (in the fragment, when it is in one)."""
    if not method.target_sparsity:
        st.caption(f"{method.name}'s sparsity emerges from its settings; there is no target to set.")
        share.follow(VIEW)
        return None
    sparsity = st.slider(SLIDER_LABEL, 0.0, 0.99, DEFAULT_SPARSITY, 0.01, key="sparsity", help=SLIDER_HELP)
    share.follow(VIEW)
    return sparsity


@st.fragment
def exact_panel(method, settings: dict) -> None:
    """The Streamlit slider and the result at exactly its value: a fragment, so a move reruns only
    this (the scrubber above is not sent again)."""
    controls, results = st.columns([1, 3], gap="large")
    with controls:
        sparsity = sparsity_slider(method)
    with results:
        try:
            result = ui.shared_prune(experiment, state, method, sparsity, settings)
        except BadInputError as error:
            st.error(str(error))
            return
        st.subheader(f"At exactly {100 * sparsity:g}% (the slider on the left)")
        show_result(result, sparsity)


def pruning_panel():
    controls, results = st.columns([1, 3], gap="large")
    with controls:
        method = ui.method_picker("")
        try:
            settings = ui.method_settings(method)
            if method.trains:
                st.caption(f"{method.name} prunes while it trains, on its own schedule.")
                schedule = OneShot()
            else:
                schedule = ui.schedule_controls()
        except BadInputError as error:
            st.error(str(error))
            share.follow(VIEW)
            return
    if schedule.is_live and not method.trains:
        scrubber = results.container()
        exact_panel(method, settings)
        with scrubber:
            scrub_section(method, settings)
        return
    with controls:
        sparsity = sparsity_slider(method)
    with results:
        if not method.trains:
            per_epoch = steps_per_epoch(state.data, experiment.train.batch_size)
            st.plotly_chart(schedule_preview_figure(schedule.curve(sparsity, experiment.train.epochs, per_epoch)),
                            key="schedule_preview")
        result = ui.pruning_run(experiment, method, sparsity, settings, schedule, key="run_schedule")
        if result is not None:
            show_result(result, sparsity, result.accuracy_before_finetune, run=(schedule,))
            if result.details is not None:
                with st.expander("Run details"):
                    st.json(result.details.to_json())


pruning_panel()
