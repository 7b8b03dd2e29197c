"""Arithmetic on keep-masks that the Masks page shows: the 2-D view a layer's mask is drawn in,
what changed between two snapshots of a run (per weight and in counts), and how much two methods'
masks agree. No plotting
here (``pruning.plots.masks`` draws these)."""

from __future__ import annotations

import numpy as np
import torch

from pruning.masks import Mask

CHANGE_CODES = {"pruned": 0, "kept": 1, "newly pruned": 2, "spliced back": 3}


def mask_matrix(keep) -> np.ndarray:
    """A layer's keep-mask (True = kept) as the 2-D view the heatmaps show: Linear weights as
    (out, in), Conv weights as (filters, in*kh*kw). This is the transpose of the view blocks are
    cut from (``pruning.selection._matrix``), so BxB blocks stay BxB blocks from the top left."""
    array = keep.detach().cpu().numpy() if isinstance(keep, torch.Tensor) else np.asarray(keep)
    array = array.astype(bool)
    return array.reshape(array.shape[0], -1)


def change_codes(previous, current) -> np.ndarray:
    """Per weight of a layer (in the heatmap's 2-D view): 0 pruned in both snapshots, 1 kept in
    both, 2 pruned since the previous one, 3 spliced back (pruned then, kept now)."""
    before, after = mask_matrix(previous), mask_matrix(current)
    codes = after.astype(np.int8)
    codes[before & ~after] = CHANGE_CODES["newly pruned"]
    codes[~before & after] = CHANGE_CODES["spliced back"]
    return codes


def mask_overlap(mask_a: dict, mask_b: dict, names: list[str] | None = None) -> tuple[dict[str, float], float]:
    """Jaccard overlap |A ∩ B| / |A ∪ B| of the *kept* weights of two masks, per layer and over
    all layers together. A layer missing from one mask counts as fully kept there; two empty
    sets overlap fully (1)."""
    names = names or list(dict.fromkeys([*mask_a, *mask_b]))
    per_layer, inter_total, union_total = {}, 0, 0
    for name in names:
        a, b = mask_a.get(name), mask_b.get(name)
        a = torch.ones_like(b, dtype=torch.bool) if a is None else a.bool()
        b = torch.ones_like(a, dtype=torch.bool) if b is None else b.bool()
        inter, union = int(torch.count_nonzero(a & b)), int(torch.count_nonzero(a | b))
        per_layer[name] = inter / union if union else 1.0
        inter_total += inter
        union_total += union
    return per_layer, (inter_total / union_total if union_total else 1.0)


def mask_transitions(previous: Mask | None, current: Mask) -> dict[str, int]:
    """Weights kept and pruned in ``current``; of those, how many were pruned since
    ``previous`` (kept then, pruned now) and how many were spliced back (pruned then, kept now)."""
    kept = sum(int(torch.count_nonzero(entry)) for entry in current.values())
    counts = {"kept": kept, "pruned": current.num_weights - kept, "newly_pruned": 0, "spliced_back": 0}
    if previous is not None:
        for name, entry in current.items():
            counts["newly_pruned"] += int(torch.count_nonzero(previous[name] & ~entry))
            counts["spliced_back"] += int(torch.count_nonzero(~previous[name] & entry))
    return counts


def same_mask(first: Mask, second: Mask) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)


def code_counts(codes: np.ndarray) -> dict[str, int]:
    """How many weights fall under each change code (``CHANGE_CODES``), from ``change_codes``."""
    counts = np.bincount(codes.ravel(), minlength=len(CHANGE_CODES))
    return {name: int(counts[code]) for name, code in CHANGE_CODES.items()}


def matrix_shape(shape) -> tuple[int, int]:
    """The 2-D view's shape (``mask_matrix``) of a weight of this shape."""
    shape = tuple(shape)
    return shape[0], int(np.prod(shape[1:], dtype=np.int64))


def layer_matrix(mask: dict, name: str, shape) -> np.ndarray:
    """A layer's keep-mask in the 2-D view; a layer the mask leaves out is kept whole."""
    keep = mask.get(name)
    return np.ones(matrix_shape(shape), dtype=bool) if keep is None else mask_matrix(keep)
