"""Sensitivity page: which layers can be pruned how far, and which classes each layer carries.

Every prunable layer is pruned alone (the others dense) at several sparsities with a one-shot
criterion, nothing retrained (``pruning.analysis.sensitivity``). The scan runs behind a button and
is kept for the session; its views (the layer x class heatmap of recall lost, the accuracy curves,
the table) follow the sparsity chooser without scanning again. Below them the ``sensitivity``
allocation suggests per-layer sparsities at an overall sparsity, beside ``layerwise`` and
``global``, with a link that opens the Prune page with it."""

import pandas as pd
import streamlit as st

import share
import ui
from pruning.analysis.sensitivity import DEFAULT_SPARSITIES, SPLITS, sensitivity_scan
from pruning.errors import BadInputError
from pruning.methods.base import Method
from pruning.methods.oneshot import ALLOCATION_SCAN, CriterionMethod
from pruning.pipeline import prune_model
from pruning.plots.sensitivity import (
    allocation_figure,
    allocation_rows,
    percent,
    recall_lost_figure,
    recall_lost_points,
    scan_rows,
    sensitivity_curves_figure,
)
from pruning.registry import get_method
from pruning.selection import check_sparsity

PREFIX = "sensitivity."
DEFAULT_SPARSITY = 0.9  # the overall sparsity of the suggested allocation, and the sparsity first shown
VIEW = share.View(PREFIX, method="magnitude", sparsity=DEFAULT_SPARSITY, one_shot_only=True)  # what a link carries
CANDIDATES = tuple(sorted({0.1, 0.2, 0.4, 0.6, 0.85, 0.99, *DEFAULT_SPARSITIES}))
COMPARED = ("sensitivity", "layerwise", "global")  # the suggestion first, then the two plain allocations
SHOWN = PREFIX + "shown"  # the sparsity chooser of the scan's views
KEPT_ALLOCATIONS = 50

experiment = ui.current_experiment()
st.title("Sensitivity")
st.caption(f"{experiment.model} on {experiment.dataset} · imbalance {experiment.imbalance:g} · seed {experiment.seed}")
share.restore(VIEW)
st.markdown(
    "Which layers can be pruned how far, and which classes lean on which layer? The scan prunes **one layer at a "
    "time** (the others stay dense) at each chosen sparsity with a one-shot criterion, retrains nothing, and "
    "measures accuracy, loss and every class's recall (the sensitivity analysis of Distiller and NNI, with the "
    "classes added). In the **heatmap** a red row is a layer many classes need, a red column a class that needs "
    "many layers, a lone red cell a layer that carries one class. The **suggested allocation** below gives each "
    "layer the sparsity that costs about the same accuracy as every other layer's, at the overall sparsity you "
    "choose, and opens it on the Prune page."
)
state = ui.dense_state(experiment)


def sparsity_label(value) -> str:
    return percent(value) if isinstance(value, float) else str(value)


def scan_sparsities(values) -> list[float]:
    """The chosen sparsities (typed ones as fractions, 0.93, or percents, 93%) as sorted distinct fractions."""
    if not values:
        raise BadInputError("choose at least one sparsity to scan")
    parsed = []
    for value in values:
        if isinstance(value, str):
            text = value.strip()
            try:
                value = float(text.removesuffix("%")) / (100 if text.endswith("%") else 1)
            except ValueError:
                raise BadInputError(f"{text!r} is not a sparsity: type a fraction in [0, 1) such as 0.93, or 93%") from None
        parsed.append(check_sparsity(value))
    return sorted(set(parsed))


def method_controls() -> tuple[Method, dict | None]:
    """A one-shot criterion and its declared settings but the allocation across layers (the scan prunes
    one layer at a time); None for the settings, with the message shown, when they are refused."""
    choices = [name for name in VIEW.method_param().choices if isinstance(get_method(name), CriterionMethod)]
    asked = st.session_state.get(PREFIX + "method")
    if asked is not None and asked not in choices:  # from a link: a one-shot method that is not a criterion
        st.warning(f"{asked} cannot be scanned: it is not a one-shot criterion (a score per weight). Using {VIEW.method}.")
        st.session_state[PREFIX + "method"] = VIEW.method
    method = get_method(st.selectbox(
        "Method (one-shot criteria)", choices, index=choices.index(VIEW.method), key=PREFIX + "method",
        help="The scan cuts one layer at a time by a criterion's score per weight: methods that prune while they "
        "train, or one-shot methods without such a score, are left out."))
    ui.method_help(method)
    try:
        settings = ui.method_settings(method, PREFIX, leave_out=("scope",))
    except ui.USER_ERRORS as error:
        st.error(str(error))
        return method, None
    st.caption("The allocation across layers (the Prune page's scope) does not apply here: the scan prunes one layer "
               "at a time. The suggested allocation below is the `sensitivity` one.")
    return method, settings


def run_scan(choices: tuple) -> tuple:
    ran_on, name, settings, sparsities, split = choices
    what = f"{name}: each layer alone at {len(sparsities)} sparsities, on the {split} split"
    with ui.progress_status(f"Scanning {what}", done=f"Scanned {what}", failed="The scan stopped") as report:
        scan = sensitivity_scan(ran_on, name, dict(settings), list(sparsities), split, dense=state.dense.model,
                                progress=report)
    return scan, list(state.data.class_names)


def hardest_hit(scan, index: int, class_names: list[str]) -> str:
    """The layer costing most accuracy at the chosen sparsity, and the (layer, class) cell losing most recall."""
    layer = min(range(len(scan.layers)), key=lambda number: scan.accuracy[number][index])
    lost = recall_lost_points(scan, index)
    cell_layer, cell_class = max(((row, column) for row in range(len(lost)) for column in range(len(class_names))),
                                 key=lambda cell: lost[cell[0]][cell[1]])
    accuracy, worst = scan.accuracy[layer][index], lost[cell_layer][cell_class]
    cell = (f"The largest single loss: class **{class_names[cell_class]}** loses {worst:.1f} recall points when "
            f"{scan.layers[cell_layer]} is pruned." if worst > 0 else "No class loses recall with any one layer pruned.")
    return (f"At {percent(scan.sparsities[index])}, pruning **{scan.layers[layer]}** costs most: accuracy "
            f"{100 * accuracy:.2f}% ({100 * (accuracy - scan.dense_accuracy):+.2f} pts). {cell}")


@st.fragment
def scan_views(scan, class_names: list[str], split: str) -> None:
    """The heatmap, the curves and the table at the chosen scanned sparsity: a fragment, so the
    chooser reruns only this."""
    options = list(scan.sparsities)
    if st.session_state.get(SHOWN) not in options:  # a new scan: open at 90% when it was scanned
        st.session_state[SHOWN] = DEFAULT_SPARSITY if DEFAULT_SPARSITY in options else options[len(options) // 2]
    chosen = st.select_slider("Sparsity shown (of the one layer pruned)", options, key=SHOWN, format_func=percent,
                              help="Any of the scanned sparsities; nothing is computed again.")
    index = options.index(chosen)
    heatmap, curves = st.columns([3, 2], gap="medium")
    heatmap.plotly_chart(recall_lost_figure(scan, index, class_names), key=PREFIX + "heatmap")
    curves.plotly_chart(sensitivity_curves_figure(scan, chosen), key=PREFIX + "curves")
    st.markdown(hardest_hit(scan, index, class_names))
    frame = pd.DataFrame(scan_rows(scan, index, class_names))
    config = {column: st.column_config.NumberColumn(format="%.2f%%") for column in frame if column.startswith("accuracy")}
    config |= {column: st.column_config.NumberColumn(format="%.3f") for column in frame if column.startswith("loss")}
    config |= {column: st.column_config.NumberColumn(format="%+.1f") for column in frame if column.startswith("its recall")}
    st.dataframe(frame, hide_index=True, column_config=config, key=PREFIX + "table")
    st.caption(f"Dense: accuracy {100 * scan.dense_accuracy:.2f}%, loss {scan.dense_loss:.3f}, on the {split} split "
               f"({scan.samples:,} images). Accuracy in %, loss the mean cross-entropy; the worst class is the one "
               "losing most recall when that layer alone is pruned at the sparsity shown.")


def allocations(method_name: str, settings: dict, sparsity: float) -> dict:
    """Per allocation in ``COMPARED``, its per-layer pruned fractions and test accuracy at ``sparsity``,
    from ``prune_model``; kept for the session (the sensitivity one measures its own scan: seconds)."""
    store = st.session_state.setdefault(PREFIX + "allocations", {})
    key = (experiment, method_name, tuple(sorted(settings.items())), sparsity)
    if key not in store:
        found = {}
        with st.spinner(f"Allocating {percent(sparsity)} with {', '.join(COMPARED)}..."):
            for allocation in COMPARED:
                result = prune_model(state.dense.model, state.data, method_name, sparsity,
                                     {**settings, "scope": allocation}, seed=experiment.seed)
                found[allocation] = (result.details.layer_targets, result.pruned.accuracy)
        store[key] = found
        while len(store) > KEPT_ALLOCATIONS:
            store.pop(next(iter(store)))
    return store[key]


def apply_choices(method: Method, settings: dict, sparsity: float) -> dict:
    """What the Prune page's link carries: the method, the sparsity, scope=sensitivity and every other
    setting that differs from its default (the URL's names: the settings' own)."""
    chosen = method.settings({**settings, "scope": "sensitivity"})
    changed = {param.name: chosen[param.name] for param in method.params
               if param.name != "scope" and param.applies(chosen) and share.text(chosen[param.name]) != share.text(param.default)}
    return {"method": method.name, "sparsity": sparsity, "scope": "sensitivity", **changed}


@st.fragment
def allocation_panel(method: Method, settings: dict) -> None:
    """The overall-sparsity slider and the per-layer sparsities each allocation chooses at it: a
    fragment, so the slider reruns only this."""
    st.subheader("Suggested allocation")
    st.markdown(
        f"At an overall sparsity, the **sensitivity** allocation prunes each layer as far as costs the same accuracy "
        f"drop as every other layer's, that drop chosen so the total is exactly the overall sparsity "
        f"(Distiller-style, one threshold for all layers). It measures its own scan, {len(ALLOCATION_SCAN)} sparsities "
        f"from {percent(ALLOCATION_SCAN[0])} to {percent(ALLOCATION_SCAN[-1])}, on class-balanced **training** samples "
        f"({settings.get('allocation_samples_per_class', 100)} per class), so the test split stays for measuring: its "
        "choice need not follow the scan above exactly. Beside it, **layerwise** prunes every layer equally and "
        "**global** cuts all layers at one score threshold; the accuracies are on the test split.")
    controls, results = st.columns([1, 3], gap="large")
    with controls:
        sparsity = st.slider("Overall sparsity", 0.0, VIEW.max_sparsity, DEFAULT_SPARSITY, 0.01, key=PREFIX + "sparsity",
                             help="The fraction of the prunable weights (or neurons/filters/blocks) removed in all.")
        share.follow(VIEW)
        share.page_link("views/prune.py", "Apply on the Prune page", apply_choices(method, settings, sparsity),
                        icon=":material/content_cut:",
                        help=f"Opens the Prune page with {method.name}, these settings, the sensitivity allocation and "
                        f"{percent(sparsity)} overall sparsity.")
    with results:
        try:
            found = allocations(method.name, settings, sparsity)
        except ui.USER_ERRORS as error:
            st.error(str(error))
            return
        dense = state.evaluation.accuracy
        cards = st.columns(len(found) + 1)
        cards[0].metric("Dense accuracy", f"{100 * dense:.2f}%")
        for card, (allocation, (_, accuracy)) in zip(cards[1:], found.items()):
            card.metric(f"{allocation}: accuracy", f"{100 * accuracy:.2f}%", f"{100 * (accuracy - dense):+.2f} pts")
        targets = {allocation: layers for allocation, (layers, _) in found.items()}
        st.plotly_chart(allocation_figure(targets, {name: accuracy for name, (_, accuracy) in found.items()}, sparsity),
                        key=PREFIX + "allocation")
        weights = dict(state.dense.model.named_parameters())
        rows = allocation_rows({name: weights[name].numel() for name in targets["sensitivity"]}, targets)
        st.dataframe(pd.DataFrame(rows), hide_index=True, key=PREFIX + "allocation_table",
                     column_config={f"{name} (% pruned)": st.column_config.NumberColumn(format="%.2f%%") for name in targets})

st.subheader("Scan")
left, right = st.columns(2, gap="large")
with left:
    chosen_method, chosen_settings = method_controls()
with right:
    picked = st.multiselect(
        "Sparsities to scan", CANDIDATES, default=list(DEFAULT_SPARSITIES), key=PREFIX + "sparsities",
        format_func=sparsity_label, accept_new_options=True,
        help="The fraction of the one layer pruned; type another, e.g. 0.93 or 93%.")
    split = st.radio("Measured on", SPLITS, key=PREFIX + "split", horizontal=True,
                     help="The pruned models are measured on this split (test by default).")
    choices = None
    try:
        sparsities = scan_sparsities(picked)
        if chosen_settings is not None:
            choices = (experiment, chosen_method.name, tuple(sorted(chosen_settings.items())), tuple(sparsities), split)
        images = len(state.data.y_test if split == "test" else state.data.y_train)
        st.caption(f"Each prunable layer at {len(sparsities)} sparsities, one pass over the {split} split ({images:,} "
                   "images) each, nothing retrained; kept for the session and cached on disk.")
    except ui.USER_ERRORS as error:
        st.error(str(error))
    clicked = st.button("Scan layers", type="primary", icon=":material/play_arrow:", key=PREFIX + "run",
                        disabled=choices is None)
shown = ui.kept_run(PREFIX + "scans", choices, lambda: run_scan(choices), clicked and choices is not None)
if shown is None:
    st.info("Choose a criterion and the sparsities, then press **Scan layers**. The scan is kept for this session.")
    share.follow(VIEW)
else:
    (scan, class_names), (ran_on, name, settings, sparsities, split) = shown
    if (ran_on, name, settings, sparsities, split) != choices:
        st.warning(f"Shown: the scan of {name} on {ran_on.model} / {ran_on.dataset} (seed {ran_on.seed}) at "
                   f"{', '.join(map(percent, sparsities))} on the {split} split, not the choices above: press "
                   "**Scan layers** to scan those.")
    scan_views(scan, class_names, split)
    if ran_on == experiment:
        allocation_panel(get_method(name), dict(settings))
    else:
        st.info("The suggested allocation is for the experiment chosen in the sidebar: scan it first.")
        share.follow(VIEW)
