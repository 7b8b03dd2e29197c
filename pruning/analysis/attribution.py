"""Which classes relied on the channels pruning removed, and what the model looks at: attribution
analyses for the Attributions page.

Per class, a channel's importance is the mean absolute attribution of the class's test images to it
(``pruning.channel_attribution``, through Captum: Kokhlikyan et al., Captum: A Unified and Generic
Model Interpretability Library for PyTorch, 2020). A class's reliance on the removed channels is set
against the recall it lost: pruning's cost is not spread evenly over the classes (Hooker et al.,
What Do Compressed Deep Neural Networks Forget?, 2019; Good et al., Recall Distortion in Neural
Network Pruning and the Undecayed Pruning Algorithm, NeurIPS 2022); :func:`class_reliance` measures
whether the dense model's per-class attributions say in advance which classes pay. Input attribution
maps (integrated gradients, saliency) show what the dense and the pruned model look at.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pruning.channel_attribution import (
    DEFAULT_STEPS,
    captum_default_device,
    channel_attributions,
    class_channel_attributions,
    evaluation_copy,
    input_baseline,
)
from pruning.class_balanced import balanced_indices
from pruning.errors import BadInputError
from pruning.models import prunable_weight_names

INPUT_METHODS = ("integrated-gradients", "saliency")
INPUT_STEPS = 32  # integrated gradients of input pixels, for a handful of images


def hidden_layers(model: nn.Module) -> list[str]:
    """The Linear/Conv layers whose neurons/filters structured pruning may remove (all but the output layer)."""
    return [name.removesuffix(".weight") for name in prunable_weight_names(model, include_output=False)]


def test_class_attributions(model: nn.Module, data, method: str = "gradxact", n_steps: int = DEFAULT_STEPS,
                            per_class: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """The class x channel matrices of :func:`class_channel_attributions` for every hidden layer, on
    ``per_class`` test images of each class: the held-out images recall is measured on, so the
    reliance of a class on removed channels and its recall loss come from the same distribution."""
    index = balanced_indices(data.y_test, data.num_classes, per_class, seed)
    if index.numel() == 0:
        raise BadInputError("the test split has no images to attribute")
    index = index.to(data.x_test.device)
    x, y = data.x_test[index], data.y_test[index]
    per_sample = channel_attributions(model, hidden_layers(model), x, y, method, n_steps=n_steps,
                                      baseline=input_baseline(x, data.mean, data.std))
    return class_channel_attributions(per_sample, y, data.num_classes)


# --- which classes relied on the removed channels ---


def removed_channels(mask: dict[str, torch.Tensor], layer_names: list[str]) -> dict[str, np.ndarray]:
    """Per layer, a bool vector: True for output channels whose weights are all pruned. Layers the
    mask does not cover have none removed. A partly pruned channel counts as kept."""
    removed = {}
    for name in layer_names:
        entry = mask.get(f"{name}.weight")
        removed[name] = (~entry.flatten(1).any(1)).cpu().numpy() if entry is not None else None
    return removed


def pearson(x, y) -> float:
    """Pearson's r; NaN with fewer than 3 points or when either side is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    x, y = x - x.mean(), y - y.mean()
    return float(np.dot(x, y) / math.sqrt(np.dot(x, x) * np.dot(y, y)))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, tied values sharing their mean rank (as Spearman's rho needs)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def spearman(x, y) -> float:
    """Spearman's rho: Pearson's r of the ranks (ties averaged)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    return pearson(_ranks(x[keep]), _ranks(y[keep])) if keep.sum() >= 3 else math.nan


@dataclass(frozen=True)
class ClassReliance:
    """How much each class's attribution sat on the removed channels, against its recall loss."""

    layers: tuple[str, ...]
    share: np.ndarray  # (classes, layers): removed channels' share of the class's attribution in that layer
    reliance: np.ndarray  # (classes,): mean of ``share`` over the layers that lost channels (NaN if none did)
    recall_loss: np.ndarray  # (classes,): dense recall - pruned recall
    removed: dict[str, int]  # channels removed per layer
    pearson: float
    spearman: float


def class_reliance(class_matrix: dict[str, np.ndarray], mask: dict[str, torch.Tensor], dense_recall,
                   pruned_recall) -> ClassReliance:
    """For each class k and layer l, the share of k's attribution mass (``class_matrix``, from the
    dense model) that sat on the channels the mask removed, ``sum_{c removed} A[k, c] / sum_c A[k, c]``;
    a class's reliance is the mean over the layers that lost at least one channel (each weighs the
    same, whatever its attribution scale; a layer that lost none would add 0 to every class).
    Set against the recall each class lost (dense - pruned) with Pearson's
    and Spearman's correlation: do the classes that leaned on the removed channels pay for it?"""
    layers = tuple(name for name in class_matrix if f"{name}.weight" in mask)
    if not layers:
        raise BadInputError("the mask covers none of the attributed layers")
    removed = removed_channels(mask, list(layers))
    columns = []
    for name in layers:
        matrix = class_matrix[name]
        if removed[name].shape[0] != matrix.shape[1]:
            raise BadInputError(f"layer {name}: the mask has {removed[name].shape[0]} channels, "
                                f"the attributions {matrix.shape[1]}")
        total = matrix.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            columns.append(np.where(total > 0, matrix[:, removed[name]].sum(1) / total, np.nan))
    share = np.stack(columns, axis=1)
    thinned = share[:, [bool(removed[name].any()) for name in layers]]
    if np.isfinite(thinned).any():
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a class without attribution in every thinned layer: NaN
            reliance = np.nanmean(thinned, axis=1)
    else:
        reliance = np.full(share.shape[0], np.nan)
    loss = np.asarray(dense_recall, dtype=float) - np.asarray(pruned_recall, dtype=float)
    if loss.shape != reliance.shape:
        raise BadInputError(f"{len(loss)} class recalls for attributions of {len(reliance)} classes")
    return ClassReliance(layers, share, reliance, loss, {name: int(removed[name].sum()) for name in layers},
                         pearson(reliance, loss), spearman(reliance, loss))


# --- what the model looks at: input attribution maps ---


def input_attributions(model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str = "integrated-gradients",
                       baseline: torch.Tensor | None = None, n_steps: int = INPUT_STEPS) -> torch.Tensor:
    """A (N, H, W) map per image of how the logit ``target[i]`` depends on each pixel:
    integrated gradients (Sundararajan et al. 2017; signed, from ``baseline``, summed over colour
    channels; the map sums to about ``F(x) - F(baseline)``), or saliency (Simonyan et al. 2014;
    the largest ``|dF/dx|`` over colour channels). ``model`` is not touched (an eval copy runs);
    the maps are on the device of ``x``."""
    from captum.attr import IntegratedGradients, Saliency  # slow to load: on first use

    if method not in INPUT_METHODS:
        raise BadInputError(f"unknown input attribution {method!r}; choose one of: {', '.join(INPUT_METHODS)}")
    if x.dim() != 4:
        raise BadInputError(f"input maps need images (N, C, H, W); got shape {tuple(x.shape)}")
    network = evaluation_copy(model)
    target = torch.as_tensor(target, device=x.device).long()
    if method == "saliency":
        return Saliency(network).attribute(x.detach().clone().requires_grad_(True), target=target, abs=True).detach().amax(1)
    reference = torch.zeros_like(x) if baseline is None else baseline.to(device=x.device, dtype=x.dtype).expand_as(x)
    with captum_default_device():
        maps = IntegratedGradients(network).attribute(x, baselines=reference, target=target, n_steps=int(n_steps))
    return maps.detach().sum(1)
