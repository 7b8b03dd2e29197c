"""Class-balanced samples: the training batch data-driven criteria score weights on, and the test
images whose channel attributions are set against class recall.

Every class contributes the same number of samples, so a rare class weighs as much as a common
one in a gradient or an attribution average (the gradient-flow paper's criteria average ``g``
over a class-balanced batch: Lubana & Dick, A Gradient Flow Framework for Analyzing Network
Pruning, ICLR 2021).
"""

from __future__ import annotations

import torch

from pruning.errors import BadInputError


def balanced_indices(labels: torch.Tensor, num_classes: int, per_class: int, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` samples of every class (all of a smaller class), drawn with ``seed``,
    in data order. The draws come from a CPU generator, so every device picks the same samples."""
    if int(per_class) < 1:
        raise BadInputError(f"samples per class must be at least 1, got {per_class}")
    generator = torch.Generator().manual_seed(int(seed))
    picks = []
    for label in range(num_classes):
        members = torch.nonzero(labels == label).flatten()
        order = torch.randperm(len(members), generator=generator, device="cpu")[: int(per_class)]
        picks.append(members[order.to(members.device)])
    return torch.sort(torch.cat(picks)).values


def balanced_batch(data, samples_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``samples_per_class`` training samples of every class (all of a class's samples if it has
    fewer), drawn with ``seed``; returned in training-set order. The test split is never used."""
    if int(samples_per_class) < 1:
        raise BadInputError(f"samples_per_class must be at least 1, got {samples_per_class}")
    index = balanced_indices(data.y_train, data.num_classes, samples_per_class, seed)
    if index.numel() == 0:
        raise BadInputError("the training split has no samples to score the weights with")
    return data.x_train[index], data.y_train[index]
