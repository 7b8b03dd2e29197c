"""From importance scores to a mask: keep the highest scores, prune exactly the lowest ones.

The number pruned follows ``torch.nn.utils.prune``: ``round(sparsity * count)``, so a global
magnitude mask equals ``prune.global_unstructured(..., L1Unstructured, amount=sparsity)``
up to ties (which we break by position, first weights first).
"""

from __future__ import annotations

import math

import torch

from pruning.errors import BadInputError
from pruning.masks import Mask

SCOPES = ("global", "layerwise")


def check_sparsity(sparsity: float) -> float:
    """Sparsity is a fraction in [0, 1): pruning every weight leaves no network to evaluate."""
    try:
        sparsity = float(sparsity)
    except (TypeError, ValueError):
        raise BadInputError(f"sparsity must be a number in [0, 1), got {sparsity!r}") from None
    if not math.isfinite(sparsity) or not 0.0 <= sparsity < 1.0:
        raise BadInputError(f"sparsity must be in [0, 1), got {sparsity}")
    return sparsity


SAMPLE_SIZE = 1 << 16


def kth_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest entry (1-based) of a flat tensor, exactly.

    For large tensors a seeded random sample brackets the answer, so the exact selection
    (``kthvalue``) runs only on the few values inside the bracket: several times faster than
    ``kthvalue`` over millions of weights. If the bracket misses, fall back to the full search."""
    count = values.numel()
    if count <= 16 * SAMPLE_SIZE:
        return torch.kthvalue(values, k).values
    generator = torch.Generator().manual_seed(count)
    sample = values[torch.randint(count, (SAMPLE_SIZE,), generator=generator)]
    quantile = k / count
    margin = 5.0 * math.sqrt(quantile * (1.0 - quantile) / SAMPLE_SIZE) + 2.0 / SAMPLE_SIZE
    low, high = torch.quantile(sample, torch.tensor([max(quantile - margin, 0.0), min(quantile + margin, 1.0)]))
    below = int(torch.count_nonzero(values < low))
    inside = values[(values >= low) & (values <= high)]
    if below < k <= below + inside.numel():
        return torch.kthvalue(inside, k - below).values
    return torch.kthvalue(values, k).values


def _prune_lowest(flat_scores: torch.Tensor, amount: int) -> torch.Tensor:
    """Boolean keep-vector that prunes exactly ``amount`` entries, the lowest scores,
    ties at the threshold broken by position (the first tied entries are pruned)."""
    if amount <= 0:
        return torch.ones_like(flat_scores, dtype=torch.bool)
    threshold = kth_smallest(flat_scores, amount)
    keep = flat_scores > threshold
    surplus = flat_scores.numel() - int(torch.count_nonzero(keep)) - amount  # tied entries pruned beyond ``amount``
    if surplus > 0:
        tied = torch.nonzero(flat_scores == threshold).flatten()
        keep[tied[tied.numel() - surplus :]] = True
    return keep


def mask_from_scores(scores: dict[str, torch.Tensor], sparsity: float, scope: str = "global") -> Mask:
    """Prune the lowest-scoring weights: over all layers at once (``global``, one threshold)
    or to the same sparsity in every layer (``layerwise``)."""
    sparsity = check_sparsity(sparsity)
    if scope == "layerwise":
        return Mask(
            {
                name: _prune_lowest(score.detach().flatten().float(), round(sparsity * score.numel())).view_as(score)
                for name, score in scores.items()
            }
        )
    if scope != "global":
        raise BadInputError(f"unknown scope {scope!r}; choose one of: {', '.join(SCOPES)}")
    flat = torch.cat([score.detach().flatten().float() for score in scores.values()])
    keep = _prune_lowest(flat, round(sparsity * flat.numel()))
    mask, start = Mask(), 0
    for name, score in scores.items():
        mask[name] = keep[start : start + score.numel()].view_as(score)
        start += score.numel()
    return mask
