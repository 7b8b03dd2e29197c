"""Pruning from an importance criterion: score the weights, drop the lowest-scoring groups.

One registry method per criterion; iterative criteria (SynFlow) are scored again after each of
several rounds whose sparsity grows exponentially, ``1 - (1 - s)^(k / rounds)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from pruning.allocation import NEEDS_PROFILE, LayerProfile, outlier_ratio, owl_profile, sensitivity_profile
from pruning.class_balanced import balanced_batch
from pruning.criteria import CRITERIA, Criterion, wanda_scores
from pruning.errors import BadInputError
from pruning.layer_scan import scan_layers
from pruning.masks import Mask
from pruning.methods.base import Details, Method, PruneContext, PruneOutcome
from pruning.models import prunable_weight_names
from pruning.params import Param
from pruning.row_patterns import NM_PATTERNS, nm_applies, parse_nm
from pruning.selection import GRANULARITIES, SCOPES, expand_groups, group_scores, layer_group_counts, mask_from_scores

SELECTION_PARAMS = (
    Param(
        "scope",
        "choice",
        "global",
        "How the sparsity is shared between layers. global: one threshold over all layers (layers end up "
        "with different sparsities); layerwise: every layer pruned to the same sparsity (uniform); erk: "
        "Erdos-Renyi-Kernel densities, larger layers sparser (RigL); owl: layers with more activation "
        "outliers keep more (OWL); sensitivity: each layer pruned as far as costs the same accuracy drop, "
        "from a one-layer-at-a-time scan on training samples (Distiller). All but layerwise hit the "
        "requested sparsity exactly in groups; layerwise rounds each layer.",
        choices=SCOPES,
        label="Allocation across layers",
    ),
    Param("allocation_samples_per_class", "int", 100, "Class-balanced training samples of each class the owl "
          "activations or the sensitivity scan are measured on (never the test split).", min=1, max=1000,
          label="Samples per class (allocation)", only_if=("scope", NEEDS_PROFILE)),
    Param("owl_threshold", "float", 5.0, "M: a Wanda score |W_ij| ||X_j|| above M times its layer's mean is an "
          "outlier (OWL's default 5).", min=1.0, max=100.0, label="M (outlier threshold)", only_if=("scope", "owl")),
    Param("owl_lambda", "float", 0.08, "λ: layer densities spread over [d - λ, d + λ] around the mean density d "
          "(OWL's default 0.08).", min=0.0, max=0.5, step=0.01, label="λ (sparsity spread)", only_if=("scope", "owl")),
    Param(
        "granularity",
        "choice",
        "unstructured",
        "unstructured: single weights; structured: whole neurons (Linear) and filters (Conv), the "
        "sparsity being the fraction of neurons/filters (a channel ratio, not a parameter ratio), the "
        "output layer left whole; block: BxB blocks of the 2-D kernel, the sparsity a block ratio; nm: N of "
        "every M consecutive weights of a row survive (2:4 by default), the pattern fixing the sparsity.",
        choices=GRANULARITIES,
        label="Granularity",
    ),
    Param("block_size", "int", 4, "Block side B for block granularity.", min=1, max=64, label="Block size",
          only_if=("granularity", "block")),
    Param("nm_pattern", "choice", "2:4", "N:M: the N best of every M consecutive weights of a row survive.",
          choices=NM_PATTERNS, label="N:M pattern", only_if=("granularity", "nm")),
    Param("prune_output_layer", "bool", True, "Prune the last Linear layer too (OpenLTH's lottery-ticket recipe leaves it dense).",
          label="Prune the output layer"),
    Param("max_layer_sparsity", "float", 1.0, "Cap on any one layer's sparsity (global scope can otherwise collapse a layer).", min=0.5, max=1.0,
          label="Per-layer sparsity cap"),
    Param("allow_empty_layers", "bool", False, "Let a layer lose every weight/block; by default each keeps its best one. "
          "Never for structured: a layer without neurons/filters cuts the network.", label="Allow empty layers"),
)
DATA_PARAMS = (
    Param("samples_per_class", "int", 10, "Class-balanced scoring batch: this many training samples of each class "
          "(all of a smaller class). The gradient-flow criteria default to 256, 2,560 samples on 10 classes (the "
          "reference's imp_samples); the quick batch is 10.", min=1, max=500, label="Samples per class (scoring batch)"),
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
    for param in SELECTION_PARAMS if param.name not in ("block_size", "nm_pattern", "prune_output_layer")
)
ALLOCATION_SCAN = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)


@dataclass(frozen=True)
class AllocationDetails(Details):
    """The allocation a one-shot cut used: per layer, the fraction of its groups pruned."""

    allocation: str
    layer_targets: dict[str, float]
    left_dense: tuple[str, ...] = ()  # N:M: layers whose rows do not divide into groups of M


def abs_group_sum(terms: torch.Tensor, granularity: str, block_size: int) -> torch.Tensor:
    """Weight scores whose per-group sum, as the selection adds them up, is ``|sum of the group's signed
    terms|``: each weight gets its group's ``|sum|`` divided by the group's size (a criterion with
    ``group_terms``, gradient-norm preservation, scores a filter by the size of its summed change)."""
    sums = group_scores(terms, granularity, block_size, "sum").abs()
    sizes = group_scores(torch.ones_like(terms, dtype=sums.dtype), granularity, block_size, "sum")
    return expand_groups(sums / sizes, terms.shape, granularity, block_size)


class CriterionMethod(Method):
    """Score every prunable weight with a criterion and keep the highest-scoring groups."""

    def __init__(self, criterion: Criterion):
        self.criterion = criterion
        self.name, self.description = criterion.name, criterion.description
        self.formula, self.reference = criterion.formula, criterion.reference
        data_params = tuple(replace(param, default=criterion.samples_per_class) for param in DATA_PARAMS)
        self.params = (STRUCTURED_PARAMS if criterion.structured_only else SELECTION_PARAMS) + (
            data_params if criterion.needs_data else ()) + (ITERATIVE_PARAMS if criterion.iterative else ()) + criterion.params

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
        granularity = settings["granularity"]
        if self.criterion.group_terms is None or granularity not in ("structured", "block"):
            return self.criterion.score(model, names, context, **extra)
        terms = self.criterion.group_terms(model, names, context, **extra)
        return {name: abs_group_sum(term, granularity, settings.get("block_size", 1)) for name, term in terms.items()}

    def layer_profile(self, model: nn.Module, scores: dict[str, torch.Tensor], settings: dict,
                      context: PruneContext) -> LayerProfile | None:
        """What the owl and sensitivity allocations measure before choosing per-layer sparsities, on a
        class-balanced training batch: OWL's outlier ratio of the Wanda scores ``|W_ij| ||X_j||`` per
        layer (OWL counts outliers per transformer block; here per Linear/Conv layer), or a
        one-layer-at-a-time scan with this criterion and granularity (accuracy drop per sparsity)."""
        if settings["scope"] not in NEEDS_PROFILE:
            return None
        calibration = replace(context, samples_per_class=settings["allocation_samples_per_class"])
        if settings["scope"] == "owl":
            wanda = wanda_scores(model, list(scores), calibration)
            return owl_profile({name: outlier_ratio(score, settings["owl_threshold"]) for name, score in wanda.items()},
                               settings["owl_lambda"])
        x, y = balanced_batch(context.data, calibration.samples_per_class, context.seed)

        def select_layer(name, score, sparsity):
            return self.select({name: score}, sparsity, {**settings, "scope": "layerwise"})[name]

        scan = scan_layers(model, scores, ALLOCATION_SCAN, x, y, context.data.num_classes, select_layer)
        return sensitivity_profile(scan.curves())

    def select(self, scores: dict[str, torch.Tensor], sparsity: float, settings: dict, previous: Mask | None = None,
               profile: LayerProfile | None = None) -> Mask:
        """The mask keeping the highest-scoring groups at ``sparsity`` (``previous`` stays pruned),
        shared between layers by ``settings["scope"]`` (``profile`` from ``layer_profile``)."""
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
            profile=profile,
            nm=settings.get("nm_pattern", "2:4"),
            per_row=settings.get("comparison") == "row",
        )

    def prune(self, model, sparsity, settings, context: PruneContext) -> PruneOutcome:
        if not self.nested:
            context.mask = None  # SynFlow's first round scores the unmasked model
        scores = self.scores(model, settings, context)
        profile = self.layer_profile(model, scores, settings, context)
        if self.nested:
            mask = self.select(scores, sparsity, settings, context.previous_mask, profile)
        else:  # the profile stays the dense model's: the allocation is chosen once, before the rounds
            rounds = settings["rounds"]
            for round_index in range(1, rounds + 1):
                scores = scores if round_index == 1 else self.scores(model, settings, context)
                context.mask = self.select(scores, 1 - (1 - sparsity) ** (round_index / rounds), settings,
                                           context.previous_mask, profile)
            mask = context.mask
        granularity = settings["granularity"]
        counts = layer_group_counts(mask, "unstructured" if granularity == "nm" else granularity, settings.get("block_size", 1))
        targets = {name: pruned / total for name, (pruned, total) in counts.items()}
        if granularity != "nm":
            return PruneOutcome(mask, details=AllocationDetails(settings["scope"], targets))
        pattern = settings["nm_pattern"]
        dense = tuple(name for name in mask if not nm_applies(mask[name].shape, parse_nm(pattern)[1]))
        return PruneOutcome(mask, details=AllocationDetails(f"N:M {pattern} (the sparsity setting does not apply)", targets, dense))


ONE_SHOT_METHODS = tuple(CriterionMethod(criterion) for criterion in CRITERIA.values())
