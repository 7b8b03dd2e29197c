"""Channel attributions as pruning criteria: a neuron/filter scores how much of the model's
true-class logits it carries on a class-balanced training batch (``pruning.channel_attribution``,
through Captum: Kokhlikyan et al., Captum: A Unified and Generic Model Interpretability Library for
PyTorch, 2020), spread evenly over its weights. The criteria themselves are declared in
``pruning.criteria.CRITERIA``.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

import torch
from torch import nn

from pruning.channel_attribution import (
    DEFAULT_STEPS,
    channel_attributions,
    channel_importance,
    class_channel_attributions,
    input_baseline,
    spread_over_channel,
)
from pruning.class_balanced import balanced_batch
from pruning.errors import BadInputError

# The app re-prunes on every slider move: an unchanged model attributed on the same batch gives the same
# channel scores, and ablation costs seconds, so the last few are kept. An entry is used only for the very
# same model and data objects (weak references) whose tensors were not modified since (autograd's version
# counters, which every in-place update such as an optimizer step or load_state_dict bumps).
ATTRIBUTION_MEMO_SIZE = 8
_ATTRIBUTION_MEMO: OrderedDict = OrderedDict()
_ATTRIBUTION_MEMO_LOCK = threading.Lock()


def _tensor_versions(model: nn.Module) -> tuple:
    return tuple((name, tensor.data_ptr(), tensor._version)
                 for name, tensor in (*model.named_parameters(), *model.named_buffers()))


def attribution_scores(model: nn.Module, names: list[str], context, method: str,
                       n_steps: int = DEFAULT_STEPS) -> dict[str, torch.Tensor]:
    """Per-weight scores from the channel attribution ``method`` (see
    ``pruning.channel_attribution``): on :func:`balanced_batch`, each sample's true-label logit
    attributed to every output channel of the named Linear/Conv layers, ``|attribution|`` averaged
    over each class's samples, then over the classes. Each weight of channel c carries
    ``score_c / k`` (k weights per channel), so a neuron/filter's summed group score is its channel
    score. The model runs as an eval-mode copy and is left unchanged."""
    if getattr(context, "data", None) is None or not hasattr(context.data, "x_train"):
        raise BadInputError("this criterion attributes the model's outputs on training data, and none was given")
    layers = [name.removesuffix(".weight") for name in names]
    key = (id(model), id(context.data), method, int(n_steps), int(context.samples_per_class), int(context.seed), tuple(layers))
    fingerprint = _tensor_versions(model)
    with _ATTRIBUTION_MEMO_LOCK:
        entry = _ATTRIBUTION_MEMO.get(key)
    if entry is not None and entry[0]() is model and entry[1]() is context.data and entry[2] == fingerprint:
        importance = entry[3]
    else:
        x, y = balanced_batch(context.data, context.samples_per_class, context.seed)
        baseline = input_baseline(x, context.data.mean, context.data.std)
        per_sample = channel_attributions(model, layers, x, y, method, n_steps=n_steps, baseline=baseline)
        importance = channel_importance(
            class_channel_attributions(per_sample, y, context.data.num_classes))
        with _ATTRIBUTION_MEMO_LOCK:
            _ATTRIBUTION_MEMO[key] = (weakref.ref(model), weakref.ref(context.data), fingerprint, importance)
            while len(_ATTRIBUTION_MEMO) > ATTRIBUTION_MEMO_SIZE:
                _ATTRIBUTION_MEMO.popitem(last=False)
    parameters = dict(model.named_parameters())
    return {name: spread_over_channel(importance[layer], parameters[name].shape)
            for name, layer in zip(names, layers)}


def gradxact_scores(model: nn.Module, names: list[str], context) -> dict[str, torch.Tensor]:
    """Gradient x activation of each channel (captum ``LayerGradientXActivation``; Shrikumar et al. 2016)."""
    return attribution_scores(model, names, context, "gradxact")


def conductance_scores(model: nn.Module, names: list[str], context, n_steps: int = DEFAULT_STEPS):
    """Layer conductance of each channel (captum ``LayerConductance``, ``n_steps`` steps along the path;
    Dhamdhere, Sundararajan & Yan, ICLR 2019)."""
    return attribution_scores(model, names, context, "conductance", n_steps=n_steps)


def ablation_scores(model: nn.Module, names: list[str], context) -> dict[str, torch.Tensor]:
    """Ablation of each channel to its bias (captum ``LayerFeatureAblation``, occlusion after Zeiler & Fergus,
    ECCV 2014): the logit change from pruning it."""
    return attribution_scores(model, names, context, "ablation")
