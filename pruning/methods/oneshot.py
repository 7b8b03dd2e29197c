"""One-shot pruning from an importance criterion: score the weights once, drop the lowest."""

from __future__ import annotations

from typing import Callable

from pruning import criteria
from pruning.methods import Method, PruneContext, PruneOutcome
from pruning.models import prunable_weight_names
from pruning.params import Param
from pruning.selection import SCOPES, mask_from_scores

SCOPE = Param(
    "scope",
    "choice",
    "global",
    "global: one threshold over all layers (layers end up with different sparsities); "
    "layerwise: every layer pruned to the same sparsity.",
    choices=SCOPES,
)
INCLUDE_OUTPUT = Param(
    "prune_output_layer",
    "bool",
    True,
    "Prune the last Linear layer too (OpenLTH's lottery-ticket recipe leaves it dense).",
)


class CriterionMethod(Method):
    """Score every prunable weight with ``score`` and keep the highest-scoring ones."""

    params = (SCOPE, INCLUDE_OUTPUT)

    def __init__(self, name: str, score: Callable, description: str, formula: str, reference: str):
        self.name, self.score = name, score
        self.description, self.formula, self.reference = description, formula, reference

    def prune(self, model, sparsity, settings, context: PruneContext) -> PruneOutcome:
        names = prunable_weight_names(model, include_output=settings["prune_output_layer"])
        scores = self.score(model, names, context)
        return PruneOutcome(mask_from_scores(scores, sparsity, settings["scope"]))


ONE_SHOT_METHODS = (
    CriterionMethod(
        "magnitude",
        criteria.magnitude_scores,
        "Remove the weights with the smallest absolute value. The classic baseline: cheap, "
        "and hard to beat on trained networks.",
        r"s(w) = |w|",
        "Han, Pool, Tran & Dally, Learning both Weights and Connections for Efficient Neural Networks, NeurIPS 2015.",
    ),
    CriterionMethod(
        "random",
        criteria.random_scores,
        "Remove weights uniformly at random (seeded). The floor every other method must beat.",
        r"s(w) \sim \mathcal{U}(0, 1)",
        "Blalock, Gonzalez Ortiz, Frankle & Guttag, What is the State of Neural Network Pruning?, MLSys 2020.",
    ),
)
