"""Recall page: which classes pay for pruning, and whether pruning widens the gaps between classes
that the dense model already has. A one-shot method's whole slider is computed once and scrubbed in
the browser; a Streamlit slider below gives any exact sparsity (with the flipped test images);
alpha over an iterative sweep with retraining runs behind a button and is kept for the session."""

import math
import threading
from collections import OrderedDict

import pandas as pd
import streamlit as st

import share
import ui
from pruning.analysis.recall import VERDICTS, flipped_predictions, intensification
from pruning.analysis.recall_runs import alpha_by_level, level_sparsities, recall_run
from pruning.methods.base import Method
from pruning.methods.undecayed import levels_for
from pruning.pipeline import prune_model
from pruning.plots.prune import class_recall_figure
from pruning.plots.recall import (
    alpha_sparsity_figure,
    confusion_change_figure,
    flipped_images_figure,
    recall_gap_figure,
    recall_scrub_figure,
)
from pruning.registry import get_method, method_names
from pruning.train import Evaluation

FLIP_LIMIT = 24
DEFAULT_SPARSITY = 0.9
VIEW = share.View("recall.", method="magnitude", sparsity=DEFAULT_SPARSITY, one_shot_only=True)  # what a link carries
KEPT_EVALUATIONS = 200  # each holds the test predictions: 8 bytes per test image
SWEEP_DEFAULT_METHODS = ("magnitude", "undecayed")
MAX_SPARSITIES = (0.5, 0.75, 0.9, 0.95, 0.98, 0.99)
VERDICT_BOX = {"intensified": st.warning, "de-intensified": st.success, "no clear change": st.info, "undefined": st.info}

experiment = ui.current_experiment()
st.title("Recall")
st.caption(f"{experiment.model} on {experiment.dataset} · imbalance {experiment.imbalance:g} · seed {experiment.seed}")
share.restore(VIEW)
st.markdown(
    "Which classes pay for pruning, and does pruning widen the gaps the dense model already has? For each "
    "class c, its **relative recall gap** is d = recall_c / accuracy − 1 (negative: the class is recognised less "
    "often than the model is right on average), measured for the dense model (d0) and the pruned one (dt). The "
    "**intensification ratio α** is the least-squares slope of dt on d0 through the origin: **α > 1** means "
    "classes below accuracy fell further below it and those above rose further above it (the gaps "
    "intensified), **α < 1** that they narrowed. The interval is a 95% bootstrap over classes (2,000 resamples). "
    "This is our reconstruction of the statistic of Good et al. (Recall Distortion in Neural Network Pruning and "
    "the Undecayed Pruning Algorithm, NeurIPS 2022), not their code."
)
st.latex(r"d^0_c = \frac{\mathrm{recall}^0_c}{\mathrm{acc}^0} - 1,\quad d^t_c = \frac{\mathrm{recall}^t_c}{\mathrm{acc}^t} - 1,"
         r"\quad \alpha_t = \frac{\sum_c d^0_c\, d^t_c}{\sum_c (d^0_c)^2}")
if experiment.imbalance == 1:
    st.info("The effect is easiest to provoke on long-tailed data: raise the sidebar's **class imbalance** (e.g. 10) "
            "so the rare classes start below accuracy, then prune hard.", icon=":material/lightbulb:")
state = ui.dense_state(experiment)
class_names = list(state.data.class_names)


def show_verdict(shift) -> None:
    words = VERDICTS[shift.verdict]
    if math.isnan(shift.alpha):
        VERDICT_BOX[shift.verdict](words)
        return
    interval = (f" (95% interval {shift.ci_low:.2f} to {shift.ci_high:.2f})" if math.isfinite(shift.ci_low) else "")
    VERDICT_BOX[shift.verdict](f"**α = {shift.alpha:.2f}**{interval}. {words}")


def largest_drops(dense_recall, pruned_recall, count: int = 3) -> str:
    drops = sorted((c for c in range(len(class_names)) if pruned_recall[c] < dense_recall[c]),
                   key=lambda c: pruned_recall[c] - dense_recall[c])[:count]
    if not drops:
        return "No class lost recall."
    return "Largest recall drops: " + ", ".join(
        f"{class_names[c]} ({100 * dense_recall[c]:.1f}% → {100 * pruned_recall[c]:.1f}%)" for c in drops) + "."


def method_controls() -> tuple[Method, dict | None]:
    """The one-shot method and its settings (None, with the message shown, when they are refused)."""
    choices = [name for name in method_names() if not get_method(name).trains]
    method = get_method(st.selectbox("Method (one-shot)", choices, index=choices.index("magnitude"), key="recall.method",
                                     help="Methods that prune while training are in the sweep below, not here."))
    ui.method_help(method)
    return method, ui.checked_settings(method, prefix="recall.")


def scrubber(method: Method, settings: dict) -> None:
    """Every panel but the images along the whole slider, sent once and scrubbed in the browser."""
    ui.scrubber("recall", experiment, state, method, settings,
                lambda sweep: recall_scrub_figure(sweep, sweep.nearest(DEFAULT_SPARSITY)),
                "For an exact sparsity, with the test images whose prediction changed, use the slider below.")


@st.cache_resource
def _pruned_store() -> dict:
    return {"lock": threading.Lock(), "evaluations": OrderedDict()}


def pruned_evaluation(method: Method, settings: dict, sparsity: float) -> Evaluation:
    """The test evaluation of the dense model pruned one-shot at ``sparsity``, kept per server for
    the last ``KEPT_EVALUATIONS`` choices: pruning costs a pass over the test set, and a person
    moving the slider back and forth returns to values already seen (the result is the same)."""
    key = (experiment, method.name, tuple(sorted(settings.items())), sparsity)
    store = _pruned_store()
    with store["lock"]:
        if key in store["evaluations"]:
            store["evaluations"].move_to_end(key)
            return store["evaluations"][key]
    evaluation = prune_model(state.dense.model, state.data, method.name, sparsity, settings, seed=experiment.seed).pruned
    with store["lock"]:
        store["evaluations"][key] = evaluation
        while len(store["evaluations"]) > KEPT_EVALUATIONS:
            store["evaluations"].popitem(last=False)
    return evaluation


@st.fragment
def live_panel(method: Method, settings: dict) -> None:
    """One exact sparsity; only this panel reruns when its slider moves (the scrubber is not sent again)."""
    st.subheader("At an exact sparsity")
    controls, results = st.columns([1, 3], gap="large")
    with controls:
        sparsity = st.slider("Sparsity (fraction of prunable weights removed)", 0.0, 0.99, DEFAULT_SPARSITY, 0.01,
                             key="recall.sparsity", help="The trained dense model is pruned one-shot, nothing retrained.")
        share.follow(VIEW)
        try:
            pruned = pruned_evaluation(method, settings, sparsity)
        except ui.USER_ERRORS as error:
            st.error(str(error))
            return
    dense = state.evaluation
    shift = intensification(dense.per_class_recall, dense.accuracy, pruned.per_class_recall, pruned.accuracy)
    with results:
        cards = st.columns(4)
        cards[0].metric("Dense accuracy", f"{100 * dense.accuracy:.2f}%")
        cards[1].metric("Pruned accuracy", f"{100 * pruned.accuracy:.2f}%", f"{100 * (pruned.accuracy - dense.accuracy):+.2f} pts")
        cards[2].metric("Intensification α", "undefined" if math.isnan(shift.alpha) else f"{shift.alpha:.2f}",
                        help="slope of the pruned classes' relative recall gaps on the dense ones; 1 = gaps unchanged")
        cards[3].metric("95% interval", "—" if math.isnan(shift.ci_low) else f"{shift.ci_low:.2f} to {shift.ci_high:.2f}",
                        help="percentile bootstrap over classes, 2,000 resamples")
        show_verdict(shift)
        left, right = st.columns(2, gap="medium")
        left.plotly_chart(recall_gap_figure(class_names, shift.d0, shift.dt, shift.alpha), key="recall.gaps")
        right.plotly_chart(class_recall_figure(class_names, dense.per_class_recall, pruned.per_class_recall,
                                               dense.accuracy, pruned.accuracy), key="recall.bars")
        right.caption(largest_drops(dense.per_class_recall, pruned.per_class_recall))

    matrix, images = st.columns([2, 3], gap="large")
    matrix.plotly_chart(confusion_change_figure(class_names, dense.confusion, pruned.confusion), key="recall.confusion")
    flips = flipped_predictions(state.data.y_test, dense.predictions, pruned.predictions, len(class_names), limit=FLIP_LIMIT)
    changed = int((dense.predictions != pruned.predictions).sum())
    with images:
        if not flips:
            st.info("Pruning changed no test prediction at this sparsity.")
            return
        st.plotly_chart(flipped_images_figure(state.data.x_test, state.data.mean, state.data.std, flips, class_names),
                        key="recall.flips")
        labels = state.data.y_test
        lost = int(((dense.predictions == labels) & (pruned.predictions != labels)).sum())
        st.caption(f"Pruning changed {changed:,} of {len(state.data.y_test):,} test predictions ({lost:,} right before and "
                   f"wrong now); {'the first ' + str(len(flips)) + ' are' if changed > len(flips) else 'all are'} shown.")


def sweepable(name: str) -> bool:
    """One-shot criteria, and undecayed pruning, whose own iterative levels give α per level."""
    method = get_method(name)
    return method.target_sparsity and (not method.trains or "level_fraction" in {param.name for param in method.params})


def run_sweep_with_progress(methods, max_sparsity, level_fraction, iterative) -> dict[str, list[dict]]:
    curves = {}
    with ui.progress_status(f"Pruning with {', '.join(methods)} up to {100 * max_sparsity:g}% sparsity",
                            done=f"Done: α for {', '.join(methods)}") as report:
        for position, name in enumerate(methods):
            def report_overall(fraction: float, message: str, position=position, name=name) -> None:
                report((position + min(max(fraction, 0.0), 1.0)) / len(methods), f"{name}: {message}")

            run = recall_run(experiment, name, max_sparsity, level_fraction, iterative=iterative, progress=report_overall)
            curves[name] = alpha_by_level([run])
    return curves


def show_sweep(curves: dict[str, list[dict]], key) -> None:
    ran_on, methods, max_sparsity, level_fraction, iterative = key
    if ran_on != experiment:
        st.warning(f"These results are for {ran_on.model} on {ran_on.dataset} (imbalance {ran_on.imbalance:g}, seed "
                   f"{ran_on.seed}), not the experiment now chosen in the sidebar: run the sweep again.")
    st.caption(f"{', '.join(methods)} · {'iterative with rewinding' if iterative else 'one-shot'} up to "
               f"{100 * max_sparsity:g}% sparsity, level fraction {level_fraction:g} · seed {ran_on.seed}.")
    st.plotly_chart(alpha_sparsity_figure(curves), key="recall.alpha_sweep")
    frame = pd.DataFrame([{"method": method, **row} for method, rows in curves.items() for row in rows])
    st.dataframe(frame[["method", "level", "sparsity", "accuracy", "alpha", "ci_low", "ci_high"]], hide_index=True,
                 column_config={name: st.column_config.NumberColumn(format="%.3f")
                                for name in ("sparsity", "accuracy", "alpha", "ci_low", "ci_high")})


@st.fragment
def sweep_panel():
    st.subheader("α against sparsity")
    st.markdown(
        "**Iterative with rewinding** (the paper's setting): one run per method to the highest sparsity passes "
        "through every lower one. Each level removes the same fraction of the remaining weights (at most the level "
        "fraction), rewinds the survivors to their initial weights and retrains the experiment's epochs; α is "
        "measured after each level. Undecayed pruning runs its own levels, every other method the iterative schedule "
        "with the same number of levels, so all see the same sparsities and the same retraining. Each method uses "
        "its default settings (global, unstructured). **One-shot** prunes the trained dense model at the same "
        "sparsities without retraining: instant, for methods that do not train."
    )
    left, right = st.columns(2, gap="large")
    with left:
        choices = [name for name in method_names() if sweepable(name)]
        methods = st.multiselect("Methods", choices, default=[name for name in SWEEP_DEFAULT_METHODS if name in choices],
                                 key="recall.sweep_methods",
                                 format_func=ui.method_label)
        mode = st.radio("Pruning", ("iterative with rewinding", "one-shot"), key="recall.sweep_mode", horizontal=True)
    with right:
        max_sparsity = st.select_slider("Highest sparsity", MAX_SPARSITIES, value=0.95, key="recall.sweep_max")
        level_fraction = st.slider("Level fraction (at most this fraction of the remaining weights per level)", 0.2, 0.9,
                                   0.5, 0.05, key="recall.sweep_level_fraction",
                                   help="Undecayed pruning's level_fraction: 0.2 is the paper's 20% per level; larger "
                                   "is faster, with fewer, coarser levels.")
    iterative = mode == "iterative with rewinding"
    if not iterative:
        skipped = [name for name in methods if get_method(name).trains]
        if skipped:
            st.caption(f"Left out of a one-shot sweep (they train): {', '.join(skipped)}.")
        methods = [name for name in methods if not get_method(name).trains]
    sparsities = level_sparsities(max_sparsity, level_fraction)
    levels = levels_for(max_sparsity, level_fraction)
    cost = (f"; {levels} levels × {experiment.train.epochs} epochs of training per method "
            f"({levels * experiment.train.epochs * len(methods)} epochs in all; runs of methods that train are cached on disk)"
            if iterative else "; nothing is trained")
    st.caption("Sparsities measured: " + ", ".join(f"{100 * s:.1f}%" for s in sparsities) + cost + ".")
    key = (experiment, tuple(methods), max_sparsity, level_fraction, iterative)
    clicked = st.button("Run sweep", type="primary", icon=":material/play_arrow:", key="recall.sweep_run", disabled=not methods)
    shown = ui.kept_run("recall.sweeps", key, lambda: run_sweep_with_progress(list(methods), max_sparsity, level_fraction,
                                                                              iterative), clicked)
    if shown is not None:
        show_sweep(*shown)
    else:
        st.info("Choose the methods and press **Run sweep**. The results are kept for this session.")


st.subheader("Along the slider")
controls, scrubbed = st.columns([1, 3], gap="large")
with controls:
    chosen, chosen_settings = method_controls()
if chosen_settings is not None:
    live_panel(chosen, chosen_settings)
else:
    share.follow(VIEW)
sweep_panel()
if chosen_settings is not None:
    with scrubbed:  # filled last: a sweep computed for the first time takes a while, the panels below need not wait
        scrubber(chosen, chosen_settings)
