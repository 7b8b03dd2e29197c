"""One layer at a time: prune a single layer (the others dense) at several sparsities and measure.

The sensitivity analysis of Distiller (Zmora et al., Neural Network Distiller, 2019) and NNI:
how much accuracy each layer costs as it alone is pruned, with no retraining. Here every
(layer, sparsity) also gets its loss and per-class recall, so the scan shows which classes lean on
which layer. The masks come from the caller's criterion and granularity (``select_layer``); the
model is never changed (evaluation through ``functional_call`` with one layer's weight masked).
Points run one forward pass each: batching them through vmap was slower for convolutions
(measured for the sparsity sweep's valley, 250 against 150 ms on lenet5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from pruning.train import Progress, evaluate

SelectLayer = Callable[[str, torch.Tensor, float], torch.Tensor]  # (name, scores, sparsity) -> keep


@dataclass
class LayerScan:
    """``accuracy[l][s]`` etc. of the model with only ``layers[l]`` pruned at ``sparsities[s]``."""

    layers: list[str]
    sparsities: list[float]
    achieved: list[list[float]]  # the fraction of the layer's weights actually pruned
    accuracy: list[list[float]]
    loss: list[list[float]]
    recall: list[list[list[float]]]  # [layer][sparsity][class]
    dense_accuracy: float
    dense_loss: float
    dense_recall: list[float]
    params: dict[str, int]  # weights of each layer
    samples: int

    def accuracy_drop(self) -> list[list[float]]:
        return [[self.dense_accuracy - value for value in row] for row in self.accuracy]

    def curves(self) -> dict[str, list[tuple[float, float]]]:
        """Per layer, (sparsity, accuracy drop) points: what the sensitivity allocation reads."""
        return {layer: list(zip(self.sparsities, drops)) for layer, drops in zip(self.layers, self.accuracy_drop())}

    def recall_lost(self, index: int) -> list[list[float]]:
        """Per (layer, class) at ``sparsities[index]``: dense recall minus pruned recall."""
        return [[dense - pruned for dense, pruned in zip(self.dense_recall, rows[index])] for rows in self.recall]


def scan_layers(model: nn.Module, scores: dict[str, torch.Tensor], sparsities: list[float], x: torch.Tensor,
                y: torch.Tensor, num_classes: int, select_layer: SelectLayer, progress: Progress | None = None) -> LayerScan:
    """Prune each scored layer alone at each sparsity (``select_layer`` gives its keep mask) and
    evaluate on ``(x, y)``."""
    dense = evaluate(model, x, y, num_classes)
    parameters = dict(model.named_parameters())
    scan = LayerScan(list(scores), list(sparsities), [], [], [], [], dense.accuracy, dense.loss, dense.per_class_recall,
                     {name: parameters[name].numel() for name in scores}, len(y))
    total, done = len(scores) * len(sparsities), 0
    for name, score in scores.items():
        rows = {"achieved": [], "accuracy": [], "loss": [], "recall": []}
        for sparsity in sparsities:
            if progress:
                progress(done / total, f"{name} at {100 * sparsity:.0f}% ({done + 1}/{total})")
            keep = select_layer(name, score, sparsity)
            pruned = evaluate(model, x, y, num_classes, parameters={name: parameters[name].detach() * keep})
            rows["achieved"].append(1.0 - float(keep.float().mean()))
            rows["accuracy"].append(pruned.accuracy)
            rows["loss"].append(pruned.loss)
            rows["recall"].append(pruned.per_class_recall)
            done += 1
        for key, values in rows.items():
            getattr(scan, key).append(values)
    if progress:
        progress(1.0, "done")
    return scan
