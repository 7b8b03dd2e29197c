"""Masks page: which weights a method keeps, layer by layer, and how two methods' masks overlap."""

import streamlit as st
import torch

import share
import ui
from pruning.mask_diff import mask_overlap, mask_transitions
from pruning.methods.base import PruneContext
from pruning.models import prunable_weight_names
from pruning.plots.mask_scrub import mask_scrub_figure, run_scrub_figure
from pruning.plots.masks import (
    kernel_grid_eligible,
    kernel_grid_figure,
    mask_change_figure,
    mask_heatmap_figure,
    mask_turnover_figure,
    overlap_figure,
)
from pruning.plots.patterns import head_grid_figure, nm_zoom_figure
from pruning.plots.prune import layer_sparsity_figure
from pruning.registry import get_method, method_names
from pruning.selection import check_sparsity
from pruning.vit import attention_layers

DEFAULT_SPARSITY = 0.9  # the slider's start, and where the scrubber opens (one figure for every session)
VIEW = share.View("masks.", method="magnitude", sparsity=DEFAULT_SPARSITY)  # what a link to this page carries
experiment = ui.current_experiment()
st.title("Masks")
st.caption(f"{experiment.model} on {experiment.dataset} · imbalance {experiment.imbalance:g} · seed {experiment.seed}")
share.restore(VIEW)
st.markdown(
    "Each heatmap cell is one weight of a layer: **dark = kept**, **light = pruned**. Linear layers are "
    "drawn as output neurons × input features, conv layers as filters × (input channels · kernel height · "
    "kernel width); small conv layers also get a grid of their kernels. Layers wider or taller than 300 "
    "weights are block-averaged for display: a cell's shade is then the kept fraction of the weights it "
    "covers. With block granularity, orange lines mark the B × B blocks pruned together. The dense model "
    "is never modified: the masks are computed one-shot from it. For one-shot methods a scrubber above the "
    "exact view plays every layer's mask along the whole slider in the browser, with no server run per move."
)
state = ui.dense_state(experiment)


def chance_overlap(mask_a, mask_b, names) -> dict[str, float]:
    """Expected Jaccard of two independent random masks with these layers' kept fractions a, b:
    ab / (a + b - ab)."""
    expected = {}
    for name in names:
        a = float(mask_a[name].float().mean()) if name in mask_a else 1.0
        b = float(mask_b[name].float().mean()) if name in mask_b else 1.0
        union = a + b - a * b
        expected[name] = a * b / union if union else 1.0
    return expected


def layer_heatmaps(mask, names, parameters, granularity: str, block_size: int) -> None:
    for index, name in enumerate(names):
        if index % 2 == 0:
            columns = st.columns(2, gap="medium")
        keep = mask.get(name)
        pruned = keep is not None
        if keep is None:
            keep = torch.ones_like(parameters[name], dtype=torch.bool)
        layer = name.removesuffix(".weight")
        figure = mask_heatmap_figure(layer, keep, block_size=block_size if granularity == "block" else None, pruned=pruned)
        meta = figure.layout.meta
        notes = []
        if meta["downsample"] != [1, 1]:
            fr, fc = meta["downsample"]
            notes.append(f"Downsampled for display: each cell averages {fr} × {fc} weights and shows their kept fraction.")
        down, across = meta["boundary_stride"]
        if meta["block_size"] and (down, across) != (1, 1):
            every = {count: "at every block" if count == 1 else f"every {count} blocks" for count in (down, across)}
            notes.append(f"Block boundaries drawn {every[across]} across and {every[down]} down "
                         f"(blocks are {block_size} × {block_size} weights).")
        if meta["stretch"] != 1:
            notes.append(f"Cells are drawn {meta['stretch']:.2g}× {'taller' if meta['stretch'] > 1 else 'as tall'} "
                         "than wide so the layer is readable.")
        if not pruned:
            notes.append("Not pruned with these settings (output layer left whole).")
        with columns[index % 2]:
            if kernel_grid_eligible(keep):
                matrix_tab, kernels_tab = st.tabs(["Filters × inputs", "Kernel grid"])
                with kernels_tab:
                    st.plotly_chart(kernel_grid_figure(layer, keep), key=f"masks.kernels.{layer}")
                    st.caption("Each tile is one kernel, the weights of one filter on one input channel.")
            else:
                matrix_tab = st.container()
            with matrix_tab:
                st.plotly_chart(figure, key=f"masks.heatmap.{layer}")
                if notes:
                    st.caption(" ".join(notes))


def sweep_scrubber(method, settings: dict, shapes: dict) -> None:
    """Every layer's mask along the whole slider, in the browser: computed once (in the background,
    after the exact view is drawn), then the scrubber redraws with no server run."""
    ui.scrubber("masks", experiment, state, method, settings,
                lambda sweep: mask_scrub_figure(sweep, sweep.nearest(DEFAULT_SPARSITY), shapes),
                "Large layers are drawn as cells of several weights: a cell's shade is their kept fraction (16 shades). "
                "The slider below gives any exact sparsity, drawn weight by weight.")


def run_scrubber(snapshots, shapes: dict) -> None:
    """The run's snapshots in the browser, built once per run and kept for the session."""
    built = st.session_state.setdefault("masks.run_scrubbers", {})
    if id(snapshots) not in built:  # an entry holds its run: the id is not reused while it is kept
        if len(built) >= 4:
            built.clear()
        built[id(snapshots)] = (snapshots, run_scrub_figure(snapshots, len(snapshots) - 1, shapes))
    entry = built[id(snapshots)]
    st.plotly_chart(entry[1], key="masks.run_scrub")
    st.caption("Scrubs in the browser: each layer against the previous snapshot (downsampled cells show a change if "
               "any weight under them changed). The snapshot picker below draws one snapshot exactly.")


def mask_evolution(snapshots, names, shapes: dict) -> None:
    """Scrub through a run's snapshots: each layer coloured by what changed since the previous one."""
    st.subheader("Mask evolution during the run")
    st.caption(
        "Pick a snapshot of the run. Each layer is coloured by what happened since the previous snapshot: "
        "**dark = kept**, **light = pruned**, **red = newly pruned**, **green = spliced back** (pruned before, "
        "kept now). In downsampled layers a cell is green or red if any weight under it changed."
    )
    turnover = [{"step": shot.step, "sparsity": shot.mask.sparsity(),
                 **mask_transitions(snapshots[index - 1].mask if index else None, shot.mask)}
                for index, shot in enumerate(snapshots)]
    st.plotly_chart(mask_turnover_figure(turnover), key="masks.turnover")
    run_scrubber(snapshots, shapes)
    index = st.select_slider(
        "Snapshot", options=list(range(len(snapshots))), value=len(snapshots) - 1, key="masks.snapshot",
        format_func=lambda i: f"step {snapshots[i].step}" + (f" · {snapshots[i].phase}" if snapshots[i].phase else ""),
    )
    shot, counts = snapshots[index], turnover[index]
    cards = st.columns(4)
    cards[0].metric("Sparsity", f"{100 * counts['sparsity']:.2f}%")
    cards[1].metric("Test accuracy", f"{100 * shot.accuracy:.2f}%")
    cards[2].metric("Newly pruned", f"{counts['newly_pruned']:,}", help="kept at the previous snapshot, pruned now")
    cards[3].metric("Spliced back", f"{counts['spliced_back']:,}", help="pruned at the previous snapshot, kept now")
    previous = snapshots[index - 1] if index else shot
    for position, name in enumerate(name for name in names if name in shot.mask):
        if position % 2 == 0:
            columns = st.columns(2, gap="medium")
        with columns[position % 2]:
            figure = mask_change_figure(name.removesuffix(".weight"), previous.mask[name], shot.mask[name])
            st.plotly_chart(figure, key=f"masks.change.{name}")


def masks_view():
    model = state.dense.model
    names = prunable_weight_names(model)
    parameters = dict(model.named_parameters())
    shapes = {name: tuple(parameters[name].shape) for name in names}
    controls, results = st.columns([1, 3], gap="large")
    with controls:
        method = ui.method_picker("masks.")
        settings = ui.checked_settings(method, prefix="masks.")
    if settings is None:
        share.follow(VIEW)
        return
    scrubber = results.container()  # filled last: the sweep behind it may still be computing
    exact_view(method, settings, names, parameters, shapes)
    if not method.trains:
        with scrubber:
            sweep_scrubber(method, settings, shapes)


@st.fragment
def exact_view(method, settings: dict, names: list[str], parameters: dict, shapes: dict) -> None:
    """The Streamlit slider and the masks at exactly its value: a fragment, so a move reruns only
    this (the scrubber above is not sent again)."""
    controls, results = st.columns([1, 3], gap="large")
    with controls:
        sparsity = None
        if method.target_sparsity:
            sparsity = st.slider("Sparsity (fraction of prunable weights removed)", 0.0, 0.99, DEFAULT_SPARSITY, 0.01,
                                 key="masks.sparsity",
                                 help="Parameter ratio over Linear/Conv weights; for structured/block granularity a group ratio.")
        share.follow(VIEW)
        result = ui.pruned_result(experiment, state, method, sparsity, settings, key="masks.run")
        if result is None:
            return
    with results:
        cards = st.columns(3)
        cards[0].metric("Sparsity achieved", f"{100 * result.stats.sparsity:.2f}%")
        cards[1].metric("Pruned accuracy", f"{100 * result.pruned.accuracy:.2f}%",
                        f"{100 * (result.pruned.accuracy - state.evaluation.accuracy):+.2f} pts")
        cards[2].metric("Compression", f"{result.stats.compression:.2f}x",
                        help=f"all parameters / nonzero parameters: {result.stats.params_nonzero:,} of "
                        f"{result.stats.params_total:,} kept, biases included")
        st.plotly_chart(layer_sparsity_figure(result.stats, target=sparsity), key="masks.layer_sparsity")

    st.subheader("Mask of every prunable layer")
    if not method.trains:
        st.markdown(f"**At exactly {100 * sparsity:g}%** (the slider on the left)")
    granularity = settings.get("granularity", "block" if "block_size" in settings else "unstructured")
    layer_heatmaps(result.mask, names, parameters, granularity, settings.get("block_size", 1))
    if granularity == "nm" or method.name in ("wanda", "sparsegpt"):
        nm_zoom(result, names, parameters, settings.get("nm_pattern", "2:4"))
    if attention_layers(state.dense.model):
        st.subheader("Attention heads")
        st.plotly_chart(head_grid_figure(state.dense.model, result.mask), key="masks.heads")
        st.caption("One cell per head of each block: the kept fraction of its q, k and v rows and its output-projection "
                   "columns. 0% is a head removed whole (the heads method); other masks thin heads unevenly.")
    if len(result.snapshots) > 1:
        mask_evolution(result.snapshots, names, shapes)
    overlap_section(method, settings, sparsity, result, names)


def nm_zoom(result, names, parameters, pattern: str) -> None:
    """One layer's first groups of M weight by weight, and how many weights each group keeps: N:M
    keeps exactly N everywhere, an unstructured mask of the same sparsity spreads around it."""
    m = int(pattern.split(":")[1])
    st.subheader(f"Groups of {m}, up close")
    layers = [name for name in names if name in result.mask]
    name = st.selectbox("Layer", layers, key="masks.nm_layer", format_func=lambda layer: layer.removesuffix(".weight"))
    st.plotly_chart(nm_zoom_figure(name.removesuffix(".weight"), result.mask[name], result.pruned_tensors[name], m),
                    key="masks.nm_zoom")
    st.caption(f"Dark = kept, light = pruned; orange lines separate groups of {m} consecutive weights of a row "
               "(a neuron's or filter's inputs, conv kernels flattened as in x kh x kw). The hover gives each weight's value.")


def overlap_section(method, settings: dict, sparsity: float | None, result, names) -> None:
    """The Jaccard overlap of this mask with a one-shot method's mask at the same sparsity (only
    the mask: nothing is evaluated, the slider stays quick)."""
    model = state.dense.model
    st.subheader("Overlap with a second method")
    shared_sparsity = result.stats.sparsity if sparsity is None else sparsity
    st.caption(
        "Jaccard overlap of the kept weights, |A ∩ B| / |A ∪ B|: 1 means both methods keep exactly the same "
        "weights, values near the grey marks are what two unrelated masks of the same per-layer sparsities give. "
        f"The second method prunes to the same sparsity ({100 * shared_sparsity:.0f}%) with the same selection settings."
    )
    other_controls, other_results = st.columns([1, 3], gap="large")
    with other_controls:
        choices = [name for name in method_names() if not get_method(name).trains]
        other = get_method(st.selectbox("Second method (one-shot)", choices, index=choices.index("random"), key="masks.other"))
        ui.method_help(other)
        declared = {param.name for param in other.params}
        try:
            other_settings = other.settings({key: value for key, value in settings.items() if key in declared})
            other_mask = other.prune(model, check_sparsity(shared_sparsity), other_settings,
                                     PruneContext(data=state.data, seed=experiment.seed)).mask
        except ui.USER_ERRORS as error:
            st.error(str(error))
            return
        per_layer, overall = mask_overlap(result.mask, other_mask, names)
        st.metric("Overall Jaccard overlap", f"{overall:.3f}", help="over all prunable weights together")
    with other_results:
        chance = chance_overlap(result.mask, other_mask, names)
        st.plotly_chart(overlap_figure(per_layer, overall, method.name, other.name, chance), key="masks.overlap")


masks_view()
