"""Importance criteria: a score per prunable weight, higher = more important = kept longer.

A criterion maps ``(model, weight names, context)`` to ``{name: score tensor}`` of the weights'
shapes; ``pruning.selection`` turns scores into a mask at any granularity. ``aggregate`` says
how a criterion's weight scores combine into a neuron/filter/block score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class Criterion:
    name: str
    description: str
    formula: str  # LaTeX
    reference: str
    score: Callable[..., dict[str, torch.Tensor]]
    aggregate: str = "sum"  # "sum" of weight scores per group, or "l2" norm
    needs_data: bool = True
    iterative: bool = False  # scored again after each of several pruning rounds (SynFlow)


def magnitude_scores(model: nn.Module, names: list[str], context) -> dict[str, torch.Tensor]:
    """``|w|`` (Han et al. 2015; METHODS.md section 1)."""
    parameters = dict(model.named_parameters())
    return {name: parameters[name].detach().abs() for name in names}


def random_scores(model: nn.Module, names: list[str], context) -> dict[str, torch.Tensor]:
    """Uniform random scores from the experiment's seed: the baseline every comparison shows."""
    generator = torch.Generator().manual_seed(context.seed)
    parameters = dict(model.named_parameters())
    return {name: torch.rand(parameters[name].shape, generator=generator) for name in names}


CRITERIA: dict[str, Criterion] = {
    criterion.name: criterion
    for criterion in (
        Criterion(
            "magnitude",
            "Remove the weights with the smallest absolute value (per filter: the smallest L2 norm). "
            "The classic baseline: cheap, and hard to beat on trained networks.",
            r"s(w) = |w|",
            "Han, Pool, Tran & Dally, Learning both Weights and Connections for Efficient Neural Networks, NeurIPS 2015.",
            magnitude_scores,
            aggregate="l2",
            needs_data=False,
        ),
        Criterion(
            "random",
            "Remove weights uniformly at random (seeded). The floor every other method must beat.",
            r"s(w) \sim \mathcal{U}(0, 1)",
            "Blalock, Gonzalez Ortiz, Frankle & Guttag, What is the State of Neural Network Pruning?, MLSys 2020.",
            random_scores,
            needs_data=False,
        ),
    )
}
