"""Loss valley page: is the pruned model in the same valley as the dense one? The loss along the
straight line between them, over a plane around that line, and the sharpness of both minima.

One-shot methods are live: the line at every sparsity of the method's sweep scrubs in the browser,
and a coarse plane follows the slider on the server; the full-resolution plane and the Hessian
stay behind a button. Methods that train run once behind a button, then the valley behind another."""

import threading

import streamlit as st

import share
import ui
from pruning.analysis.valley import (
    COARSE_BATCH,
    COARSE_GRID,
    LossValley,
    coarse_plane,
    level_barrier_rows,
    loss_valley,
)
from pruning.plots.valley import (
    level_barrier_figure,
    scrubber_at,
    valley_line_figure,
    valley_plane_figure,
    valley_scrub_figure,
)

VIEW = share.View("valley.", method="magnitude", sparsity=0.9)  # what a link to this page carries
experiment = ui.current_experiment()
st.title("Loss valley")
st.caption(f"{experiment.model} on {experiment.dataset} · imbalance {experiment.imbalance:g} · seed {experiment.seed}")
share.restore(VIEW)
st.markdown(
    "Directional pruning (gRDA, sDprun) claims that the pruned model lies **in the same flat valley as the SGD "
    "minimum** it came from: on the straight line from the dense weights (a = 0) to the pruned ones (a = 1) the "
    "loss stays low and flat, with no barrier in between. One-shot magnitude pruning usually jumps out of the "
    "valley: the loss rises along the line and the pruned point sits on a wall. The page opens on magnitude: its "
    "line is computed once at every sparsity and scrubs in the browser, and a coarse plane follows the slider. "
    "Choose **grda** or **sdprun** (they train, once, then are cached) to check the claim."
)
state = ui.dense_state(experiment)


@st.cache_resource
def _valley_store() -> dict:
    """Computed valleys and coarse planes, shared by every session (the inputs fix the result)."""
    return {"lock": threading.Lock(), "results": {}, "coarse": {}}


def show(valley: LossValley) -> None:
    line, surface, curvature = valley.line, valley.plane, valley.sharpness
    ends = line.a.index(0.0), line.a.index(1.0)
    cards = st.columns(4)
    cards[0].metric("Train loss, dense → pruned", f"{line.train_loss[ends[0]]:.3f} → {line.train_loss[ends[1]]:.3f}")
    cards[1].metric("Test accuracy, dense → pruned",
                    f"{100 * line.test_accuracy[ends[0]]:.1f}% → {100 * line.test_accuracy[ends[1]]:.1f}%")
    cards[2].metric("Error barrier (test)", f"{100 * line.barrier('test'):.2f} pts",
                    help="highest test error on the line between a = 0 and a = 1 minus the mean of the two "
                    "ends (Frankle et al. 2020); about 0 means a linearly connected valley")
    cards[3].metric("Error barrier (train)", f"{100 * line.barrier('train'):.2f} pts")
    st.plotly_chart(valley_line_figure(line), key="valley.line")
    st.caption("Solid: loss; dotted: accuracy (right axis). Flat and low between the two marks: the pruned point is "
               "in the dense model's valley. A hump, or a pruned point high on a slope: it is not.")
    st.plotly_chart(valley_plane_figure(surface), key="valley.plane")
    st.caption("The plane through both models and a random direction; each filter of that direction has the norm of "
               "the matching dense filter (Li et al. 2018), biases and norm layers stay put. Colours are log10 of the "
               "train loss on the fixed batch.")
    if curvature:
        st.subheader("Sharpness of the two minima")
        st.caption("Of the Hessian of the train loss on the fixed batch with respect to the Linear/Conv weights: its "
                   "largest eigenvalue (Lanczos, 20 steps) and its trace (Hutchinson, 10 probes). A flat valley has "
                   "small values at both points.")
        columns = st.columns(4)
        for index, (key, label) in enumerate((("top_eigenvalue", "Top Hessian eigenvalue"), ("trace", "Hessian trace"))):
            dense_value, pruned_value = curvature["dense"][key], curvature["pruned"][key]
            columns[2 * index].metric(f"{label}, dense", f"{dense_value:.4g}")
            columns[2 * index + 1].metric(f"{label}, pruned", f"{pruned_value:.4g}", f"{pruned_value - dense_value:+.3g}",
                                          delta_color="inverse")


def levels_section(method, sparsity, settings: dict, batch_size: int) -> None:
    """Linear mode connectivity along iterative pruning: is each level in the previous one's valley?"""
    st.subheader("Barriers between levels of iterative pruning")
    st.caption("Iterative pruning (rewinding to initialisation, retraining each round) reaches the target in steps. "
               "A barrier near 0 between two levels means the sparser network stayed in the same linearly connected "
               "valley (Frankle et al. 2020). Each round retrains the model, so this runs behind its own button.")
    if method.trains or sparsity is None:
        st.info(f"{method.name} prunes while it trains: pick a one-shot criterion to see iterative levels.")
        return
    rounds = st.slider("Rounds", 2, 5, 3, key="valley.rounds")
    store = _valley_store()
    key = ("levels", experiment, method.name, sparsity, tuple(sorted(settings.items())), rounds, batch_size)
    if key not in store["results"]:
        if not st.button(f"Run {rounds} rounds of iterative pruning", key="valley.levels"):
            return
        try:
            with ui.progress_status("Iterative pruning", done="Iterative pruning done") as report:
                rows = level_barrier_rows(experiment, method.name, sparsity, settings, rounds, batch_size=batch_size,
                                          dense=state.dense.model, progress=report)
        except ui.USER_ERRORS as error:
            st.error(str(error))
            return
        with store["lock"]:
            store["results"][key] = rows
    st.plotly_chart(level_barrier_figure(store["results"][key]), key="valley.level_barriers")


def valley_results(result, method_choices: tuple, grid: int, batch_size: int, restrict: bool,
                   with_sharpness: bool, live: bool = False) -> None:
    """The valley for these choices: from the store, or computed behind the button. ``live``: a
    coarse plane is shown until the button is pressed."""
    store = _valley_store()
    key = (experiment, *method_choices, grid, batch_size, restrict, with_sharpness)
    if key not in store["results"]:
        if live:
            coarse_section(result, method_choices, restrict)
        label = "Compute the full-resolution plane" + (" and sharpness" if with_sharpness else "")
        if not st.button(label if live else "Compute the loss valley", type="primary", key="valley.compute"):
            st.info(f"Press the button: {grid}² + 2 × {grid} evaluations on {batch_size} samples"
                    + (", then the Hessian at both points." if with_sharpness else "."))
            return
        try:
            with ui.progress_status("Computing the loss valley", done="Loss valley computed") as report:
                valley = loss_valley(state.dense.model, result, state.data, experiment.seed, grid=grid, batch_size=batch_size,
                                     restrict=restrict, with_sharpness=with_sharpness, progress=report)
        except ui.USER_ERRORS as error:
            st.error(str(error))
            return
        with store["lock"]:
            store["results"][key] = valley
    show(store["results"][key])


def coarse_section(result, method_choices: tuple, restrict: bool) -> None:
    """The plane at the slider's exact sparsity on a coarse grid and a small batch: about a second
    on lenet5, kept for every session once computed."""
    store = _valley_store()
    key = (experiment, *method_choices, restrict)
    if key not in store["coarse"]:
        with store["lock"]:  # sessions asking for the same plane at once wait for one computation of it
            building = store.setdefault("building", {}).setdefault(key, threading.Lock())
        try:
            with st.spinner(f"Coarse plane: {COARSE_GRID}² points on {COARSE_BATCH} train samples..."), building:
                if key not in store["coarse"]:
                    surface = coarse_plane(state.dense.model, result, state.data, experiment.seed, restrict=restrict)
                    with store["lock"]:
                        store["coarse"][key] = surface
                        store["building"].pop(key, None)
        except ui.USER_ERRORS as error:
            st.error(str(error))
            return
    surface = store["coarse"][key]
    st.plotly_chart(valley_plane_figure(surface, title=f"Train loss over the plane, coarse: {len(surface.a)} × "
                                        f"{len(surface.b)} points on {COARSE_BATCH} train samples"),
                    key="valley.coarse_plane")
    st.caption("Live at the slider's sparsity: the plane through both models and a random direction (filter-normalised, "
               "Li et al. 2018) on a coarse grid and a small fixed batch (drawn from the line's train batch). The button "
               "computes it at the resolution and batch chosen on the left, with the Hessian sharpness.")


def line_scrubber(method, sparsity: float, settings: dict) -> None:
    """The line at every sparsity of the method's sweep, scrubbed in the browser, opened at the
    grid point nearest the slider."""
    ui.scrubber("valley", experiment, state, method, settings, lambda sweep: valley_scrub_figure(sweep, 0).to_dict(),
                "The line at each: fixed batches of train and test samples; loss on a log axis (solid), accuracy dotted "
                "(right axis); flat and low between the two marks: the pruned point is in the dense model's valley.",
                place=lambda base, sweep: scrubber_at(base, sweep.nearest(sparsity)))


@st.fragment
def valley_view():
    controls, results = st.columns([1, 3], gap="large")
    with controls:
        method, sparsity = ui.method_and_sparsity("valley.", "Sparsity (fraction of prunable weights removed)", VIEW.sparsity)
        grid = st.slider("Grid points per axis", 5, 41, 21, 2, key="valley.grid",
                         help="of the computation behind the button: a in [-0.5, 1.5] and the random direction in "
                         "[-1, 1]; the plane costs grid² evaluations")
        batch_size = st.select_slider("Evaluation batch (samples)", (64, 128, 256, 512, 1024), 256, key="valley.batch",
                                      help="of the computation behind the button: one fixed batch of the train split and "
                                      "one of the test split, the same at every point")
        restrict = st.toggle("Random direction among surviving weights only", key="valley.restrict",
                             help="zero on the weights the mask prunes: the plane stays inside the pruned subspace")
        with_sharpness = st.toggle("Sharpness (Hessian eigenvalue and trace)", value=True, key="valley.sharpness")
        settings = ui.checked_settings(method, prefix="valley.")
        share.follow(VIEW)
        if settings is None:
            return
        result = ui.pruned_result(experiment, state, method, sparsity, settings, key="valley.run")
        if result is None:
            return
    with results:
        live = not method.trains
        if live:
            scrubber = st.container()  # filled last: the sweep may still be computing, the exact plane comes first
            st.subheader(f"At exactly {100 * sparsity:g}% (the slider on the left)")
        valley_results(result, method_choices=(method.name, sparsity, tuple(sorted(settings.items()))), grid=grid,
                       batch_size=batch_size, restrict=restrict, with_sharpness=with_sharpness, live=live)
        if live:
            with scrubber:
                line_scrubber(method, sparsity, settings)
    levels_section(method, sparsity, settings, batch_size)


valley_view()
