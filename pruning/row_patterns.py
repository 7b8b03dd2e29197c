"""Masks chosen within each output row: N:M semi-structured sparsity and Wanda's per-row comparison.

A row is one output neuron's (Linear) or filter's (Conv, flattened as ``in * kh * kw`` in the
weight's memory order) incoming weights: the dimension GPU 2:4 kernels compress (NVIDIA's
Ampere sparse tensor cores; ``torch.sparse.to_sparse_semi_structured``) and the one Wanda compares
scores along (Sun et al., A Simple and Effective Pruning Approach for Large Language Models, ICLR 2024).
"""

from __future__ import annotations

import torch

NM_PATTERNS = ("2:4", "1:4", "4:8")


def parse_nm(pattern: str) -> tuple[int, int]:
    n, m = (int(part) for part in pattern.split(":"))
    return n, m


def nm_applies(shape: torch.Size, m: int) -> bool:
    """A layer takes N:M groups when each row's length is a multiple of M."""
    return int(torch.Size(shape)[1:].numel()) % m == 0


def nm_keep(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """In every M consecutive weights of a row, the N highest scores survive (ties: the first)."""
    rows = score.detach().float().reshape(score.shape[0], -1, m)
    order = torch.sort(rows, dim=-1, descending=True, stable=True).indices[..., :n]
    keep = torch.zeros_like(rows, dtype=torch.bool).scatter_(-1, order, True)
    return keep.view(score.shape)


def rowwise_keep(score: torch.Tensor, amount: int) -> torch.Tensor:
    """Prune ``amount`` weights of a layer spread evenly over its rows, each row losing its lowest
    scores: ``amount // rows`` in every row, one more in the rows whose next-lowest score is lowest."""
    rows = score.detach().float().reshape(score.shape[0], -1)
    count, length = rows.shape
    base, extra = divmod(int(amount), count)
    order = torch.sort(rows, dim=1, stable=True).indices
    per_row = torch.full((count,), base, dtype=torch.long, device=rows.device)
    if extra:
        next_lowest = rows.gather(1, order[:, base: base + 1]).flatten()
        per_row[torch.sort(next_lowest, stable=True).indices[:extra]] += 1
    pruned = torch.arange(length, device=rows.device).expand(count, length) < per_row.unsqueeze(1)
    keep = torch.ones_like(rows, dtype=torch.bool).scatter_(1, order, ~pruned)
    return keep.view(score.shape)
