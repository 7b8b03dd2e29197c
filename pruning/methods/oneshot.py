"""Pruning from an importance criterion: score the weights, drop the lowest-scoring groups.

One registry method per criterion; iterative criteria (SynFlow) are scored again after each of
several rounds whose sparsity grows exponentially, ``1 - (1 - s)^(k / rounds)``.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from pruning.criteria import CRITERIA, Criterion
from pruning.errors import BadInputError
from pruning.masks import Mask
from pruning.methods.base import Method, PruneContext, PruneOutcome
from pruning.models import prunable_weight_names
from pruning.params import Param
from pruning.selection import GRANULARITIES, SCOPES, mask_from_scores

SELECTION_PARAMS = (
    Param(
        "scope",
        "choice",
        "global",
        "global: one threshold over all layers (layers end up with different sparsities); "
        "layerwise: every layer pruned to the same sparsity.",
        choices=SCOPES,
        label="Scope",
    ),
    Param(
        "granularity",
        "choice",
        "unstructured",
        "unstructured: single weights; structured: whole neurons (Linear) and filters (Conv), the "
        "sparsity being the fraction of neurons/filters (a channel ratio, not a parameter ratio), the "
        "output layer left whole; block: BxB blocks of the 2-D kernel, the sparsity a block ratio.",
        choices=GRANULARITIES,
        label="Granularity",
    ),
    Param("block_size", "int", 4, "Block side B for block granularity.", min=1, max=64, label="Block size",
          only_if=("granularity", "block")),
    Param("prune_output_layer", "bool", True, "Prune the last Linear layer too (OpenLTH's lottery-ticket recipe leaves it dense).",
          label="Prune the output layer"),
    Param("max_layer_sparsity", "float", 1.0, "Cap on any one layer's sparsity (global scope can otherwise collapse a layer).", min=0.5, max=1.0,
          label="Per-layer sparsity cap"),
    Param("allow_empty_layers", "bool", False, "Let a layer lose every weight/block; by default each keeps its best one. "
          "Never for structured: a layer without neurons/filters cuts the network.", label="Allow empty layers"),
)
DATA_PARAMS = (
    Param("samples_per_class", "int", 10, "Class-balanced scoring batch: this many training samples of each class.", min=1, max=500,
          label="Samples per class (scoring batch)"),
)
ITERATIVE_PARAMS = (Param("rounds", "int", 100, "Scoring rounds; sparsity grows exponentially over them.", min=1, max=1000,
                          label="Scoring rounds"),)
# Criteria that score whole channels (captum attributions): structured only, so no blocks, and the output layer stays whole.
STRUCTURED_PARAMS = tuple(
    replace(param, default="structured", choices=("structured",),
            help="structured: whole neurons (Linear) and filters (Conv), the sparsity being the fraction of "
            "neurons/filters removed (a channel ratio); the output layer stays whole. This criterion scores "
            "channels, so it has no unstructured or block reading.")
    if param.name == "granularity" else param
    for param in SELECTION_PARAMS if param.name not in ("block_size", "prune_output_layer")
)


class CriterionMethod(Method):
    """Score every prunable weight with a criterion and keep the highest-scoring groups."""

    def __init__(self, criterion: Criterion):
        self.criterion = criterion
        self.name, self.description = criterion.name, criterion.description
        self.formula, self.reference = criterion.formula, criterion.reference
        self.params = (STRUCTURED_PARAMS if criterion.structured_only else SELECTION_PARAMS) + (
            DATA_PARAMS if criterion.needs_data else ()) + (ITERATIVE_PARAMS if criterion.iterative else ()) + criterion.params

    def settings(self, overrides=None):
        granularity = (overrides or {}).get("granularity", "structured")
        if self.criterion.structured_only and str(granularity) != "structured":
            raise BadInputError(f"{self.name} scores whole neurons/filters by their attribution: only structured "
                                f"granularity applies, not {granularity!r}")
        return super().settings(overrides)

    @property
    def nested(self) -> bool:
        """True when the scores do not depend on the sparsity (every criterion but the iterative
        ones): score once, then select at any sparsity; the masks of a global or layerwise cut
        are nested (a sparser mask prunes everything a denser one does)."""
        return not self.criterion.iterative

    def scores(self, model: nn.Module, settings: dict, context: PruneContext) -> dict[str, torch.Tensor]:
        """The criterion's score of every weight of the layers these settings prune."""
        structured = settings["granularity"] == "structured"
        names = prunable_weight_names(model, include_output=settings.get("prune_output_layer", False) and not structured)
        context.samples_per_class = settings.get("samples_per_class", context.samples_per_class)
        extra = {param.name: settings[param.name] for param in self.criterion.params}
        return self.criterion.score(model, names, context, **extra)

    def select(self, scores: dict[str, torch.Tensor], sparsity: float, settings: dict, previous: Mask | None = None) -> Mask:
        """The mask keeping the highest-scoring groups at ``sparsity`` (``previous`` stays pruned)."""
        return mask_from_scores(
            scores,
            sparsity,
            scope=settings["scope"],
            granularity=settings["granularity"],
            block_size=settings.get("block_size", 1),
            aggregate=self.criterion.aggregate,
            max_layer_sparsity=settings["max_layer_sparsity"],
            allow_empty_layers=settings["allow_empty_layers"],
            previous=previous,
        )

    def prune(self, model, sparsity, settings, context: PruneContext) -> PruneOutcome:
        if self.nested:
            return PruneOutcome(self.select(self.scores(model, settings, context), sparsity, settings, context.previous_mask))
        rounds = settings["rounds"]
        context.mask = None
        for round_index in range(1, rounds + 1):
            context.mask = self.select(self.scores(model, settings, context), 1 - (1 - sparsity) ** (round_index / rounds),
                                       settings, context.previous_mask)
        return PruneOutcome(context.mask)


ONE_SHOT_METHODS = tuple(CriterionMethod(criterion) for criterion in CRITERIA.values())
