"""Importance scores per prunable weight: higher = more important = kept longer.

Each criterion maps ``(model, weight names, context)`` to ``{name: score tensor}`` of the
weights' shapes; ``pruning.selection`` turns scores into a mask.
"""

from __future__ import annotations

import torch
from torch import nn


def magnitude_scores(model: nn.Module, names: list[str], context) -> dict[str, torch.Tensor]:
    """``|w|`` (Han et al. 2015; METHODS.md section 1)."""
    parameters = dict(model.named_parameters())
    return {name: parameters[name].detach().abs() for name in names}


def random_scores(model: nn.Module, names: list[str], context) -> dict[str, torch.Tensor]:
    """Uniform random scores from the experiment's seed: the baseline every comparison shows."""
    generator = torch.Generator().manual_seed(context.seed)
    parameters = dict(model.named_parameters())
    return {name: torch.rand(parameters[name].shape, generator=generator) for name in names}
