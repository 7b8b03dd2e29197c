"""How many groups each layer loses: the layer-wise sparsity allocation of a one-shot cut.

``global`` (one score threshold over all layers) and ``layerwise`` (every layer at the requested
sparsity, rounded per layer as ``torch.nn.utils.prune`` does) need nothing but the scores and live
in ``pruning.selection``. The policies here first give every layer its own sparsity and then keep
the highest-scoring groups within each layer:

- ``erk``: Erdos-Renyi-Kernel, the density of a layer proportional to
  ``(n_in + n_out + kh + kw) / (n_in n_out kh kw)`` (Evci et al., Rigging the Lottery, ICML 2020:
  RigL's allocation); layers whose density would pass 1 stay dense and the rest share the budget.
- ``owl``: outlier-weighted layerwise sparsity (Yin et al., Outlier Weighed Layerwise Sparsity,
  ICML 2024): per layer the share D of Wanda scores ``|W_ij| ||X_j||`` above M times the layer's
  mean; densities are D rescaled to [0, 2 lambda] and shifted to the requested total. OWL's
  layers (transformer blocks) are equal in size, so the shift is its unweighted mean and every
  layer's sparsity stays within 2 lambda of S (the paper says about [S - lambda, S + lambda]);
  ours differ in size, so the shift is solved for the weighted total and each layer is held within
  2 lambda of S: unclamped, the largest layer would set the shift alone and push small layers with
  few outliers to 100%.
- ``sensitivity``: from a one-layer-at-a-time scan (``pruning.layer_scan``), each layer pruned as far
  as costs the same accuracy drop t, t chosen to reach the requested total (Distiller's
  sensitivity analysis, Zmora et al. 2019, with one threshold for all layers).

Each solves for one scalar (the ERK scale, the OWL shift, the accuracy budget t) by bisection so
that the group-weighted total is the requested sparsity, then rounds to whole groups by largest
remainder: the total is exact, and no layer passes its cap (``upper``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pruning.errors import BadInputError

POLICIES = ("global", "layerwise", "erk", "owl", "sensitivity")
NEEDS_PROFILE = ("owl", "sensitivity")  # measured on calibration data by the method


@dataclass(frozen=True)
class LayerProfile:
    """What a policy knows of each layer before the sparsity is chosen: ERK's shape ratio, OWL's
    rescaled outlier ratio, or the sensitivity scan's (sparsity, accuracy drop) envelope."""

    policy: str
    values: dict[str, object]
    spread: float = 0.0  # owl: lambda (a layer's sparsity stays within 2 lambda of the requested one)


def erk_profile(shapes: dict[str, torch.Size]) -> LayerProfile:
    """RigL's Erdos-Renyi-Kernel ratio ``sum(shape) / prod(shape)`` of every weight."""
    return LayerProfile("erk", {name: sum(shape) / math.prod(shape) for name, shape in shapes.items()})


def outlier_ratio(scores: torch.Tensor, threshold: float) -> float:
    """OWL's layerwise outlier distribution: the share of scores above ``threshold`` x their mean."""
    return float((scores > threshold * scores.mean()).double().mean())


def owl_profile(ratios: dict[str, float], spread: float) -> LayerProfile:
    """Outlier ratios rescaled to ``[0, 2 * spread]`` (OWL's lambda); equal ratios give equal densities."""
    low, high = min(ratios.values()), max(ratios.values())
    scale = 2 * spread / (high - low) if high > low else 0.0
    return LayerProfile("owl", {name: (ratio - low) * scale for name, ratio in ratios.items()}, spread)


def sensitivity_profile(curves: dict[str, list[tuple[float, float]]]) -> LayerProfile:
    """Per layer the non-decreasing envelope of its (sparsity, accuracy drop) points, from (0, 0)
    to (1, above every drop measured): a layer's sparsity at budget t is where its envelope reaches t."""
    top = max([drop for points in curves.values() for _, drop in points] + [0.0]) + 1.0
    values = {}
    for name, points in curves.items():
        envelope, worst = [(0.0, 0.0)], 0.0
        for sparsity, drop in sorted(points):
            if sparsity > envelope[-1][0]:
                worst = max(worst, drop)
                envelope.append((sparsity, worst))
        if envelope[-1][0] < 1.0:
            envelope.append((1.0, top))
        values[name] = envelope
    return LayerProfile("sensitivity", values)


def _envelope_sparsity(envelope: list[tuple[float, float]], budget: float) -> float:
    """The largest sparsity whose (interpolated) drop is at most ``budget``."""
    if budget < envelope[0][1]:
        return 0.0
    for (s0, d0), (s1, d1) in zip(envelope, envelope[1:]):
        if budget < d1:
            return s0 + (s1 - s0) * (budget - d0) / (d1 - d0) if d1 > d0 else s0
    return envelope[-1][0]


def _pruned_fractions(profile: LayerProfile, t: float, sparsity: float) -> dict[str, float]:
    """Each layer's pruned fraction at parameter t; non-decreasing in t for every policy."""
    if profile.policy == "erk":
        return {name: 1.0 - min(1.0, math.exp(-t) * ratio) for name, ratio in profile.values.items()}
    if profile.policy == "owl":
        low, high = max(0.0, sparsity - 2 * profile.spread), min(1.0, sparsity + 2 * profile.spread)
        return {name: min(high, max(low, 1.0 - bonus + t)) for name, bonus in profile.values.items()}
    if profile.policy == "sensitivity":
        return {name: _envelope_sparsity(envelope, t) for name, envelope in profile.values.items()}
    raise BadInputError(f"no layer profile for allocation {profile.policy!r}")


SEARCH_RANGE = {"erk": (-60.0, 60.0), "owl": (-3.0, 3.0), "sensitivity": (-1.0, 3.0)}


def layer_amounts(profile: LayerProfile, counts: dict[str, int], sparsity: float, upper: dict[str, int]) -> dict[str, int]:
    """Groups to prune per layer: ``round(sparsity * total)`` in all, at most ``upper[name]`` in a
    layer, shared as the profile says."""
    total = sum(counts.values())
    target, allowed = round(sparsity * total), sum(upper.values())
    if target > allowed:
        raise BadInputError(
            f"sparsity {sparsity} needs {target} of {total} groups pruned, but the per-layer cap allows at most "
            f"{allowed} ({allowed / total:.4f}); raise max_layer_sparsity or allow empty layers")

    def amounts(t: float) -> dict[str, float]:
        fractions = _pruned_fractions(profile, t, sparsity)
        return {name: min(fractions[name] * counts[name], upper[name]) for name in counts}

    low, high = SEARCH_RANGE[profile.policy]
    for _ in range(100):
        middle = (low + high) / 2
        if sum(amounts(middle).values()) < target:
            low = middle
        else:
            high = middle
    below, above = amounts(low), amounts(high)
    gap = sum(above.values()) - sum(below.values())
    share = (target - sum(below.values())) / gap if gap > 0 else 0.0
    return round_to_total({name: below[name] + share * (above[name] - below[name]) for name in counts}, target, upper)


def round_to_total(amounts: dict[str, float], target: int, upper: dict[str, int]) -> dict[str, int]:
    """Whole groups per layer summing to ``target``: floors, then one more to the largest remainders."""
    whole = {name: min(math.floor(amount + 1e-9), upper[name]) for name, amount in amounts.items()}
    while sum(whole.values()) < target:
        best = max((name for name in whole if whole[name] < upper[name]), key=lambda name: amounts[name] - whole[name])
        whole[best] += 1
    return whole
