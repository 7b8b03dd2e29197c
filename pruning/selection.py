"""From importance scores to a mask: keep the highest scores, prune exactly the lowest ones.

The number pruned follows ``torch.nn.utils.prune``: ``round(sparsity * count)``, so a global
magnitude mask equals ``prune.global_unstructured(..., L1Unstructured, amount=sparsity)``
up to ties (which we break by position, first weights first).
"""

from __future__ import annotations

import math

import torch

from pruning.allocation import NEEDS_PROFILE, POLICIES, LayerProfile, erk_profile, layer_amounts
from pruning.errors import BadInputError
from pruning.masks import Mask
from pruning.row_patterns import nm_applies, nm_keep, parse_nm, rowwise_keep

SCOPES = POLICIES  # how the sparsity is shared between layers: pruning.allocation
GRANULARITIES = ("unstructured", "structured", "block", "nm")


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
    sample = values[torch.randint(count, (SAMPLE_SIZE,), generator=generator, device="cpu").to(values.device)]
    quantile = k / count
    margin = 5.0 * math.sqrt(quantile * (1.0 - quantile) / SAMPLE_SIZE) + 2.0 / SAMPLE_SIZE
    bounds = torch.tensor([max(quantile - margin, 0.0), min(quantile + margin, 1.0)], device=values.device)
    low, high = torch.quantile(sample, bounds)
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


def _matrix(score: torch.Tensor) -> torch.Tensor:
    """The 2-D view used for blocks: Linear (out, in) -> (in, out); Conv (out, in, kh, kw) ->
    (in*kh*kw, out), as SequentialAttention++ reshapes kernels."""
    return score.flatten(1).T


def group_scores(score: torch.Tensor, granularity: str, block_size: int, aggregate: str) -> torch.Tensor:
    """One score per prunable group: a weight, an output neuron/filter, or a BxB block
    (border blocks may be smaller). ``aggregate`` combines a group's weight scores: ``sum``
    (as the gradient-flow paper does) or ``l2`` (a norm, for magnitude)."""
    score = score.detach().float()
    if granularity == "unstructured":
        return score.flatten()
    if aggregate == "l2":
        score = score.square()
    if granularity == "structured":
        grouped = score.flatten(1).sum(1)
    else:
        matrix = _matrix(score)
        rows, cols = matrix.shape
        padded = torch.nn.functional.pad(matrix, (0, -cols % block_size, 0, -rows % block_size))
        grouped = padded.view(padded.shape[0] // block_size, block_size, -1, block_size).sum((1, 3)).flatten()
    return grouped.sqrt() if aggregate == "l2" else grouped


def expand_groups(keep: torch.Tensor, shape: torch.Size, granularity: str, block_size: int) -> torch.Tensor:
    """A group keep-vector back to a weight-shaped boolean mask."""
    if granularity == "unstructured":
        return keep.view(shape)
    if granularity == "structured":
        return keep.view(-1, *([1] * (len(shape) - 1))).expand(shape).clone()
    rows, cols = _matrix(torch.empty(shape, device="meta")).shape  # the shape only: no memory
    blocks = keep.view(-(-rows // block_size), -(-cols // block_size))
    matrix = blocks.repeat_interleave(block_size, 0).repeat_interleave(block_size, 1)[:rows, :cols]
    return matrix.T.reshape(shape).contiguous()


def check_block_size(scores: dict[str, torch.Tensor], block_size: int) -> None:
    """A block must be smaller than every layer it cuts: a block covering a whole layer would make
    block pruning remove layers, not blocks."""
    if block_size < 1:
        raise BadInputError(f"block size must be at least 1, got {block_size}")
    for name, score in scores.items():
        rows, cols = _matrix(score).shape
        if block_size >= rows and block_size >= cols and rows * cols > 1:
            raise BadInputError(
                f"block size {block_size} is larger than layer {name} ({rows}x{cols} as a matrix): the whole layer "
                f"would be one block; choose a block size below {max(rows, cols)}"
            )


def mask_from_scores(
    scores: dict[str, torch.Tensor],
    sparsity: float,
    scope: str = "global",
    granularity: str = "unstructured",
    block_size: int = 4,
    aggregate: str = "sum",
    max_layer_sparsity: float = 1.0,
    allow_empty_layers: bool = False,
    previous: Mask | None = None,
    profile: LayerProfile | None = None,
    nm: str = "2:4",
    per_row: bool = False,
) -> Mask:
    """Prune the lowest-scoring groups (weights, neurons/filters or blocks), over all layers at
    once (``global``, one threshold), to the same sparsity in every layer (``layerwise``), or to
    per-layer sparsities from an allocation policy (``erk``, ``owl``, ``sensitivity``: see
    ``pruning.allocation``; owl and sensitivity need the ``profile`` the method measured).
    ``nm`` granularity keeps the N best of every M consecutive weights of a row in every layer
    whose rows divide into groups of M (the others stay dense): its sparsity is N:M's own, and
    ``sparsity`` and ``scope`` do not apply. ``per_row`` (unstructured) spreads each layer's pruned
    count evenly over its output rows, each row losing its lowest scores (Wanda's comparison).

    For ``structured`` and ``block`` the sparsity is the fraction of *groups* removed (a channel
    or block ratio, not a parameter ratio). No layer loses more than ``max_layer_sparsity`` of
    its groups, and each keeps at least one group unless ``allow_empty_layers``: the protected
    groups are the layer's highest-scoring ones (structured pruning never empties a layer: a layer
    without neurons/filters cuts the network). Groups already pruned in ``previous`` stay
    pruned (iterative schedules only ever remove more)."""
    sparsity = check_sparsity(sparsity)
    if scope not in SCOPES:
        raise BadInputError(f"unknown scope {scope!r}; choose one of: {', '.join(SCOPES)}")
    if granularity not in GRANULARITIES:
        raise BadInputError(f"unknown granularity {granularity!r}; choose one of: {', '.join(GRANULARITIES)}")
    if not scores:
        raise BadInputError("no prunable weights to select from (structured pruning leaves the output layer whole)")
    if granularity == "block":
        check_block_size(scores, block_size)
    not_finite = [name for name, score in scores.items() if not bool(torch.isfinite(score).all())]
    if not_finite:
        raise BadInputError(f"the scores of {', '.join(not_finite)} are NaN or infinite (weights or gradients that are "
                            "not finite): they cannot rank the weights")
    if granularity == "nm":
        return _nm_mask(scores, nm, previous)
    groups = {name: group_scores(score, granularity, block_size, aggregate) for name, score in scores.items()}
    for name, entry in (previous or {}).items():
        if name in groups:
            still_kept = group_scores(entry.float(), granularity, block_size, "sum") > 0
            groups[name] = torch.where(still_kept, groups[name], -math.inf)
    protected = {
        name: max(math.ceil((1.0 - max_layer_sparsity) * grouped.numel() - 1e-9), 0 if allow_empty_layers else 1)
        for name, grouped in groups.items()
    }
    if scope in ("erk", *NEEDS_PROFILE):
        keep = _allocate(groups, sparsity, scope, protected, profile, {name: score.shape for name, score in scores.items()})
    else:
        keep = _select(groups, sparsity, scope, {name: 0 for name in groups})
    if scope in ("global", "layerwise") and any(int(torch.count_nonzero(keep[name])) < protected[name] for name in groups):
        # Only now protect each layer's best groups: when no layer breaks its cap, protecting
        # them changes nothing (a layer keeps its highest scores), and skipping it is faster.
        for name, grouped in groups.items():
            if protected[name]:
                grouped = grouped.clone()
                grouped[torch.topk(grouped, protected[name]).indices] = math.inf
                groups[name] = grouped
        keep = _select(groups, sparsity, scope, protected)
    emptied = [name for name in groups if granularity == "structured" and not bool(keep[name].any())]
    if emptied:
        raise BadInputError(
            f"structured sparsity {sparsity} would remove every neuron/filter of {', '.join(emptied)}: the network's "
            "output would no longer depend on its input; lower the sparsity or leave allow_empty_layers off"
        )
    if per_row and granularity == "unstructured":
        keep = {name: rowwise_keep(groups[name].view(scores[name].shape), int((~keep[name]).sum())).flatten()
                for name in groups}
    return Mask({name: expand_groups(keep[name], scores[name].shape, granularity, block_size) for name in scores})


def _nm_mask(scores: dict[str, torch.Tensor], pattern: str, previous: Mask | None) -> Mask:
    """N:M in every layer whose rows divide into groups of M; weights ``previous`` pruned stay pruned."""
    n, m = parse_nm(pattern)
    masks = {}
    for name, score in scores.items():
        if not nm_applies(score.shape, m):
            masks[name] = torch.ones_like(score, dtype=torch.bool)
            continue
        if previous is not None and name in previous:
            score = torch.where(previous[name].bool(), score.float(), -math.inf)
        masks[name] = nm_keep(score, n, m)
    return Mask(masks)


def _allocate(groups: dict[str, torch.Tensor], sparsity: float, scope: str, protected: dict[str, int],
              profile: LayerProfile | None, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Keep-vectors per layer with the policy's per-layer amounts; groups already pruned (-inf,
    from an earlier schedule step) stay pruned even where the policy would now keep more."""
    if scope == "erk" and profile is None:
        profile = erk_profile(shapes)
    if profile is None or profile.policy != scope or set(profile.values) != set(groups):
        raise BadInputError(f"the {scope} allocation needs its per-layer profile of these layers, measured on "
                            "calibration data by the method (pruning.methods.oneshot)")
    upper = {name: grouped.numel() - protected[name] for name, grouped in groups.items()}
    amounts = layer_amounts(profile, {name: grouped.numel() for name, grouped in groups.items()}, sparsity, upper)
    return {name: _prune_lowest(grouped, max(amounts[name], int(torch.isneginf(grouped).sum())))
            for name, grouped in groups.items()}


def layer_group_counts(mask: Mask, granularity: str, block_size: int = 4) -> dict[str, tuple[int, int]]:
    """(pruned, total) groups of each layer of ``mask``: what an allocation gave each layer."""
    counts = {}
    for name, keep in mask.items():
        kept = group_scores(keep.float(), granularity, block_size, "sum") > 0
        counts[name] = (int(kept.numel() - kept.sum()), kept.numel())
    return counts


def _select(groups: dict[str, torch.Tensor], sparsity: float, scope: str, protected: dict[str, int]) -> dict[str, torch.Tensor]:
    """Keep-vectors per layer pruning the lowest group scores, never touching ``protected[name]`` groups."""
    if scope == "layerwise":
        return {
            name: _prune_lowest(grouped, min(round(sparsity * grouped.numel()), grouped.numel() - protected[name]))
            for name, grouped in groups.items()
        }
    flat = torch.cat(list(groups.values()))
    amount, allowed = round(sparsity * flat.numel()), flat.numel() - sum(protected.values())
    if amount >= flat.numel():
        raise BadInputError(f"sparsity {sparsity} rounds to pruning all {flat.numel()} groups; nothing would be left")
    if amount > allowed:
        raise BadInputError(
            f"sparsity {sparsity} needs {amount} of {flat.numel()} groups pruned, but the per-layer cap "
            f"allows at most {allowed} ({allowed / flat.numel():.4f}); raise max_layer_sparsity or allow empty layers"
        )
    kept_flat, keep, start = _prune_lowest(flat, amount), {}, 0
    for name, grouped in groups.items():
        keep[name] = kept_flat[start : start + grouped.numel()]
        start += grouped.numel()
    return keep


GRANULARITY_INFO = {
    "unstructured": (
        "Single weights are removed wherever they score lowest: the finest choice, the highest accuracy "
        "at a given sparsity, and no speedup without sparse kernels.",
        r"m_{ij} = [\,s_{ij} > \tau\,]",
        "Han et al., Learning both Weights and Connections for Efficient Neural Networks, NeurIPS 2015.",
    ),
    "structured": (
        "Whole output neurons (Linear) or filters (Conv) are removed, scored by the sum of their weights' "
        "scores (the L2 norm for magnitude), as the gradient-flow paper prunes. The sparsity is the fraction "
        "of neurons/filters removed, a channel ratio: removing a fraction p of a conv layer's channels "
        "removes about 1-(1-p)^2 of its parameters once the next layer shrinks too. The output layer stays whole.",
        r"S_f = \textstyle\sum_{i \in f} s_i,\qquad m_f = [\,S_f > \tau\,]",
        "Li et al., Pruning Filters for Efficient ConvNets, ICLR 2017; Lubana & Dick, ICLR 2021.",
    ),
    "block": (
        "The kernel is viewed as a 2-D matrix (Linear: in x out; Conv: in*kh*kw x out) cut into BxB blocks, "
        "each kept or removed whole, scored by the block's summed score (its norm for magnitude). The "
        "sparsity is the fraction of blocks removed.",
        r"S_b = \textstyle\sum_{i \in b} s_i,\qquad m_b = [\,S_b > \tau\,]",
        "Yasuda et al., SequentialAttention++ for Block Sparsification, 2024 (block layout); Gray et al., "
        "GPU Kernels for Block-Sparse Weights, 2017.",
    ),
    "nm": (
        "Semi-structured N:M: in every group of M consecutive weights of a row (a neuron's or filter's inputs, "
        "conv kernels flattened as in x kh x kw), the N highest-scoring survive: 2:4 is the pattern GPU sparse "
        "tensor cores run faster. The sparsity is the pattern's own (1 - N/M in the layers it applies to): the "
        "sparsity slider and the allocation do not apply; layers whose rows do not divide into groups of M stay "
        "dense and are listed.",
        r"m_{r,g} = \mathrm{top}_N\{\, s_{r,j} : j \in g \,\},\quad |g| = M",
        "Mishra et al., Accelerating Sparse Deep Neural Networks, 2021 (NVIDIA 2:4); Zhou et al., Learning N:M "
        "Fine-grained Structured Sparse Neural Networks From Scratch, ICLR 2021.",
    ),
}
