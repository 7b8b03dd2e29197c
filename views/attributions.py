"""Attributions page: what the dense and the pruned model look at (captum input attributions), how
much each channel carried, and whether the classes that leaned on the removed channels lost recall."""

import numpy as np
import streamlit as st
import torch

import share
import ui
from pruning.analysis.attribution import (
    INPUT_METHODS,
    class_reliance,
    hidden_layers,
    input_attributions,
    removed_channels,
    test_class_attributions,
)
from pruning.analysis.recall import flipped_predictions
from pruning.channel_attribution import (
    CHANNEL_METHODS,
    DEFAULT_STEPS,
    channel_attributions,
    evaluation_copy,
    input_baseline,
)
from pruning.plots.attributions import (
    channel_attribution_figure,
    class_channel_figure,
    class_reliance_figure,
    input_attribution_figure,
)
from pruning.plots.recall import display_pixels

MAX_IMAGES = 6
IMAGE_CHOICES = ("changed by pruning", "by class")
TARGET_CHOICES = ("true class", "each model's prediction")
CHANNEL_HELP = {
    "gradxact": "gradient × activation: one backward pass (instant)",
    "conductance": "layer conductance: integrated gradients through the channel (a few seconds on lenet5)",
    "ablation": "ablation: the logit change when the channel is replaced by its bias, what pruning leaves (seconds)",
}

VIEW = share.View("attr.", method="attr-gradxact", sparsity=0.7, max_sparsity=0.95)  # what a link to this page carries
experiment = ui.current_experiment()
st.title("Attributions")
st.caption(f"{experiment.model} on {experiment.dataset} · imbalance {experiment.imbalance:g} · seed {experiment.seed}")
share.restore(VIEW)
st.markdown(
    "Which neurons/filters a decision rests on, and what the pruned model looks at. A **channel attribution** says "
    "how much one output channel of a Linear/Conv layer (before its activation function) contributed to the logit of "
    "an image's class (captum: gradient × activation, conductance or ablation); the attribution criteria "
    "(`attr-gradxact`, `attr-conductance`, `attr-ablation`) prune the channels with the least. Per class, the "
    "attributions of that class's test images give a **class × channel** matrix of the dense model: the share of a "
    "class's attribution that sat on the channels pruning removed says how much that class **relied** on them, and "
    "the scatter checks whether those classes are the ones that lost recall. Below, **input attributions** "
    "(integrated gradients from a black image, and saliency) of chosen test images, dense and pruned side by side. "
    "The dense model is never modified: the pruned one is a copy."
)
state = ui.dense_state(experiment)
class_names = list(state.data.class_names)


@st.cache_data(max_entries=16, show_spinner="Attributing test images to every channel of the dense model...")
def class_matrix(experiment, method: str, n_steps: int, per_class: int, _state) -> dict[str, np.ndarray]:
    """The dense model's class x channel attributions (keyed by the experiment, which fixes the model)."""
    return test_class_attributions(_state.dense.model, _state.data, method, n_steps=n_steps, per_class=per_class,
                                   seed=experiment.seed)


def _images(data, indices: tuple[int, ...]):
    x = data.x_test[list(indices)]
    return x, input_baseline(x, data.mean, data.std)


def _maps(network, data, indices: tuple[int, ...], targets: tuple[int, ...]) -> dict[str, np.ndarray]:
    x, baseline = _images(data, indices)
    return {method: input_attributions(network, x, torch.tensor(targets, device=x.device), method, baseline=baseline).cpu().numpy()
            for method in INPUT_METHODS}


# Slider moves rerun the page: what does not change with them is kept (the dense model's views depend
# only on the images; the pruned model's on the pruning choices, named by ``run_key``).
@st.cache_data(max_entries=64, show_spinner=False)
def dense_input_maps(experiment, indices: tuple[int, ...], targets: tuple[int, ...], _state) -> dict[str, np.ndarray]:
    return _maps(_state.dense.model, _state.data, indices, targets)


@st.cache_data(max_entries=64, show_spinner=False)
def pruned_input_maps(experiment, run_key: tuple, indices: tuple[int, ...], targets: tuple[int, ...], _state,
                      _result) -> dict[str, np.ndarray]:
    model = _state.dense.model
    return _maps(evaluation_copy(model, _result.pruned_state_dict(model)), _state.data, indices, targets)


@st.cache_data(max_entries=64, show_spinner=False)
def dense_channel_means(experiment, indices: tuple[int, ...], channel_method: str, n_steps: int,
                        _state) -> dict[str, np.ndarray]:
    """Mean |attribution| of each channel over the images, each to its true class's logit."""
    x, baseline = _images(_state.data, indices)
    per_image = channel_attributions(_state.dense.model, hidden_layers(_state.dense.model), x,
                                     _state.data.y_test[list(indices)], channel_method, n_steps=n_steps, baseline=baseline)
    return {name: values.abs().mean(0).cpu().numpy() for name, values in per_image.items()}


def chosen_images(mode: str, count: int, dense_predictions, pruned_predictions) -> list[int]:
    labels = state.data.y_test
    if mode == IMAGE_CHOICES[0]:
        flips = flipped_predictions(labels, dense_predictions, pruned_predictions, len(class_names), limit=count)
        return [flip.index for flip in flips]
    label = class_names.index(st.session_state.get("attr.class", class_names[0]))
    return torch.nonzero(labels == label).flatten()[:count].tolist()


def row_label(index: int, dense_predictions, pruned_predictions) -> str:
    true, dense, pruned = (int(t[index]) for t in (state.data.y_test, dense_predictions, pruned_predictions))
    return f"#{index} · true {class_names[true]}<br>dense {class_names[dense]} → pruned {class_names[pruned]}"


def class_panel(result, matrix: dict[str, np.ndarray], channel_method: str) -> None:
    st.subheader("Which classes relied on the removed channels")
    dense, pruned = state.evaluation, result.pruned
    reliance = class_reliance(matrix, result.mask, dense.per_class_recall, pruned.per_class_recall)
    if not sum(reliance.removed.values()):
        st.info("Pruning removed no neuron/filter whole at these settings (unstructured or block masks thin channels "
                "without removing them): choose **structured** granularity to see which classes relied on removed "
                "channels. The attribution criteria use it by default.")
        return
    cards = st.columns(3)
    cards[0].metric("Pearson r", "undefined" if np.isnan(reliance.pearson) else f"{reliance.pearson:.2f}",
                    help="linear correlation over classes of reliance on removed channels and recall lost")
    cards[1].metric("Spearman ρ", "undefined" if np.isnan(reliance.spearman) else f"{reliance.spearman:.2f}",
                    help="rank correlation: do the classes that relied most lose most?")
    cards[2].metric("Most reliant class", class_names[int(np.nanargmax(reliance.reliance))]
                    if np.isfinite(reliance.reliance).any() else "—")
    left, right = st.columns(2, gap="medium")
    left.plotly_chart(class_reliance_figure(class_names, reliance.reliance, reliance.recall_loss, reliance.pearson,
                                            reliance.spearman), key="attr.reliance")
    left.caption(
        f"Reliance of a class: per layer, the share of its mean |{channel_method}| attribution (over "
        f"{st.session_state.get('attr.per_class', 10)} test images of the class, dense model) that sat on the removed "
        "channels, averaged over the layers that lost channels. Recall lost: dense minus pruned recall on the whole test split. "
        "Undefined correlations: every class relied equally, or none lost recall."
    )
    with right:
        thinned = [name for name in reliance.layers if reliance.removed[name]]
        layer = st.selectbox("Layer", list(reliance.layers), index=list(reliance.layers).index(thinned[0]), key="attr.layer",
                             format_func=lambda name: f"{name} ({reliance.removed[name]} removed)")
        removed = removed_channels(result.mask, [layer])[layer]
        st.plotly_chart(class_channel_figure(layer, matrix[layer], removed, class_names), key="attr.class_channels")


def images_panel(result, run_key: tuple, channel_method: str, n_steps: int) -> None:
    st.subheader("What the models look at")
    dense_predictions, pruned_predictions = state.evaluation.predictions, result.pruned.predictions
    controls, shown = st.columns([1, 3], gap="large")
    with controls:
        mode = st.radio("Images", IMAGE_CHOICES, key="attr.images", horizontal=True)
        if mode == IMAGE_CHOICES[1]:
            st.selectbox("Class", class_names, key="attr.class")
        count = st.slider("How many", 1, MAX_IMAGES, 4, key="attr.count")
        target_mode = st.radio("Attribute to the logit of", TARGET_CHOICES, key="attr.target", horizontal=True)
    indices = tuple(chosen_images(mode, count, dense_predictions, pruned_predictions))
    if not indices:
        shown.info("Pruning changed no test prediction at these settings: choose images **by class**.")
        return
    labels = tuple(state.data.y_test[list(indices)].tolist())
    targets = {"dense": labels, "pruned": labels} if target_mode == TARGET_CHOICES[0] else \
        {"dense": tuple(dense_predictions[list(indices)].tolist()), "pruned": tuple(pruned_predictions[list(indices)].tolist())}
    dense_maps = dense_input_maps(experiment, indices, targets["dense"], state)
    pruned_maps = pruned_input_maps(experiment, run_key, indices, targets["pruned"], state, result)
    maps = {method: {"dense": dense_maps[method], "pruned": pruned_maps[method]} for method in INPUT_METHODS}
    pixels = display_pixels(state.data.x_test[list(indices)], state.data.mean, state.data.std)
    with shown:
        st.plotly_chart(input_attribution_figure(pixels, maps, [row_label(i, dense_predictions, pruned_predictions)
                                                                for i in indices]), key="attr.inputs")
        st.caption("Integrated gradients (32 steps from a black image; red pixels raise the target logit, blue lower "
                   "it) and saliency (|gradient|), each of the dense and the pruned model, on one colour scale per row, "
                   "so a map that fades or moves shows what pruning changed.")
    means = dense_channel_means(experiment, indices, channel_method, int(n_steps), state)
    removed = removed_channels(result.mask, list(means))
    bars = {name: (values, removed[name] if removed[name] is not None else np.zeros(len(values), dtype=bool))
            for name, values in means.items()}
    st.plotly_chart(channel_attribution_figure(bars, channel_method), key="attr.channels")
    st.caption("Each bar is one output channel of the dense model, its mean |attribution| to the true class's logit "
               "over the images above; red channels were removed by pruning. Red bars far left mean pruning removed "
               "channels these images rested on.")


@st.fragment
def attribution_view():
    controls, results = st.columns([1, 3], gap="large")
    with controls:
        method, sparsity = ui.method_and_sparsity(
            "attr.", "Sparsity (fraction removed)", VIEW.sparsity, maximum=VIEW.max_sparsity, step=0.05, default=VIEW.method,
            help="For structured granularity the fraction of neurons/filters removed (a channel ratio).",
        )
        settings = ui.checked_settings(method, prefix="attr.")
        share.follow(VIEW)
        if settings is None:
            return
        with st.expander("Channel attribution", expanded=True):
            channel_method = st.selectbox("Attribution", CHANNEL_METHODS, key="attr.kind",
                                          format_func=lambda name: CHANNEL_HELP[name])
            n_steps = DEFAULT_STEPS
            if channel_method == "conductance":
                n_steps = st.slider("Integration steps", 2, 64, DEFAULT_STEPS, key="attr.steps")
            per_class = st.slider("Test images per class", 2, 50, 10, key="attr.per_class",
                                  help="for the class × channel matrix of the dense model")
        result = ui.pruned_result(experiment, state, method, sparsity, settings, key="attr.run")
        if result is None:
            return
    layers = hidden_layers(state.dense.model)
    removed = removed_channels(result.mask, layers)
    total = sum(len(entry) for entry in removed.values() if entry is not None)
    gone = sum(int(entry.sum()) for entry in removed.values() if entry is not None)
    with results:
        cards = st.columns(4)
        cards[0].metric("Dense accuracy", f"{100 * state.evaluation.accuracy:.2f}%")
        cards[1].metric("Pruned accuracy", f"{100 * result.pruned.accuracy:.2f}%",
                        f"{100 * (result.pruned.accuracy - state.evaluation.accuracy):+.2f} pts")
        cards[2].metric("Channels removed", f"{gone} of {total}", help="neurons/filters of the hidden layers whose "
                        "weights are all pruned")
        cards[3].metric("Sparsity achieved", f"{100 * result.stats.sparsity:.2f}%", help="fraction of prunable weights")
        try:
            matrix = class_matrix(experiment, channel_method, int(n_steps), int(per_class), state)
            class_panel(result, matrix, channel_method)
        except ui.USER_ERRORS as error:
            st.error(str(error))
            return
    try:
        images_panel(result, (method.name, sparsity, tuple(sorted(settings.items()))), channel_method, int(n_steps))
    except ui.USER_ERRORS as error:
        st.error(str(error))


attribution_view()
