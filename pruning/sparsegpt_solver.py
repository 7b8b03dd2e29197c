"""SparseGPT's layer problem: the Hessian of a layer's reconstruction loss from its inputs, and the
blocked Optimal Brain Surgeon solve that prunes the layer's 2-D weight and updates the survivors.

Frantar & Alistarh, SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot, ICML
2023 (Algorithm 1 and the authors' ``fasterprune``). A layer's weight is read as a matrix W of
shape (out, in * kh * kw); X holds its input columns (Linear: the input rows; Conv: the unfolded
input patches), and the loss ||W X - W_hat X||^2 has Hessian H = 2 X X^T, averaged over the
calibration samples as the reference does (a sample's tokens or output positions all count). The
solve runs in float64: the models here are small, and OBS updates divide by small pivots.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pruning.errors import BadInputError
from pruning.row_patterns import nm_keep

UNFOLD_ELEMENTS = 1 << 24  # at most this many unfolded input values at once (128 MB in float64)


def unsupported(layer: nn.Module) -> str | None:
    """Why SparseGPT leaves this layer dense, or None when it can prune it."""
    if isinstance(layer, nn.Linear):
        return None
    if not isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        return f"a {type(layer).__name__} layer: only Linear and Conv1d/Conv2d are read as a 2-D weight"
    if layer.groups != 1:
        return (f"a grouped convolution (groups={layer.groups}): each group has its own inputs, so one Hessian over "
                "the flattened kernel does not describe it")
    if isinstance(layer.padding, str) and layer.padding != "valid":
        return f"padding={layer.padding!r}: the unfolded inputs need explicit padding"
    if layer.padding_mode != "zeros":
        return f"padding_mode={layer.padding_mode!r}: the unfolded inputs assume zero padding"
    return None


def _conv_geometry(layer: nn.Module) -> dict:
    """Conv1d as a Conv2d of height 1, so both unfold the same way."""
    pad = (0,) * len(layer.kernel_size) if layer.padding == "valid" else tuple(layer.padding)
    if isinstance(layer, nn.Conv1d):
        return {"kernel_size": (1, *layer.kernel_size), "dilation": (1, *layer.dilation), "padding": (0, *pad),
                "stride": (1, *layer.stride)}
    return {"kernel_size": layer.kernel_size, "dilation": layer.dilation, "padding": pad, "stride": layer.stride}


def input_columns(layer: nn.Module, inputs: torch.Tensor):
    """The layer's inputs as rows x with ``W @ x`` its output (bias aside), in pieces: Linear,
    every leading position; Conv, every output position's unfolded patch (channel, then kernel row,
    then column: the order of ``weight.flatten(1)``)."""
    if isinstance(layer, nn.Linear):
        yield inputs.reshape(-1, inputs.shape[-1])
        return
    inputs = inputs.unsqueeze(2) if isinstance(layer, nn.Conv1d) else inputs
    geometry = _conv_geometry(layer)
    columns = layer.weight[0].numel()
    per_sample = max(1, UNFOLD_ELEMENTS // max(1, columns * _positions(inputs.shape[2:], geometry)))
    for part in inputs.split(per_sample):
        patches = F.unfold(part, **geometry)  # (samples, columns, positions)
        yield patches.transpose(1, 2).reshape(-1, columns)


def _positions(size, geometry) -> int:
    count = 1
    for length, kernel, dilation, pad, stride in zip(size, geometry["kernel_size"], geometry["dilation"],
                                                     geometry["padding"], geometry["stride"]):
        count *= max(1, (length + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1)
    return count


class HessianSum:
    """``H = (2 / samples) sum x x^T`` over every input row of the calibration samples (the
    reference's running average, with a sample counted once however many rows it gives)."""

    def __init__(self, layer: nn.Module):
        self.layer = layer
        columns = layer.weight[0].numel()
        self.total = torch.zeros(columns, columns, dtype=torch.float64, device=layer.weight.device)
        self.samples = 0

    def add(self, inputs: torch.Tensor) -> None:
        for rows in input_columns(self.layer, inputs.detach()):
            rows = rows.to(torch.float64)
            self.total += rows.T @ rows
        self.samples += inputs.shape[0]

    def hessian(self) -> torch.Tensor:
        return self.total * (2.0 / max(1, self.samples))


def inverse_cholesky(hessian: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The damped Hessian's inverse as its upper Cholesky factor U (H^-1 = U^T U), and the mask
    of dead inputs. Dead inputs (H_jj = 0: never non-zero on the calibration batch) get H_jj = 1,
    as the reference does; the damping adds ``percdamp`` times the mean diagonal."""
    h = hessian.to(torch.float64).clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    h.diagonal().add_(percdamp * h.diagonal().mean())
    try:
        lower = torch.linalg.cholesky(h)
        upper = torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)
    except torch.linalg.LinAlgError:
        raise BadInputError(f"the layer's input Hessian is not positive definite with damping {percdamp}: raise the "
                            "damping or the calibration samples") from None
    return upper, dead


def _block_budgets(rows: int, columns: int, blocksize: int, sparsity: float) -> list[int]:
    """Weights pruned per column block: the block's share of the layer's round(s * size), so the
    layer as a whole loses exactly that many (the reference's per-block threshold prunes one more)."""
    edges = [*range(0, columns, blocksize), columns]
    return [round(sparsity * rows * end) - round(sparsity * rows * start) for start, end in zip(edges, edges[1:])]


def _lowest(scores: torch.Tensor, amount: int) -> torch.Tensor:
    """Boolean matrix marking the ``amount`` lowest scores (ties: the first in memory order)."""
    pruned = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    pruned[torch.sort(scores.flatten(), stable=True).indices[:amount]] = True
    return pruned.view(scores.shape)


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, nm: tuple[int, int] | None = None,
                    blocksize: int = 128, percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Prune the 2-D ``weight`` (out, columns) against the layer Hessian: returns the updated
    weight (float64, pruned entries exactly 0), the keep mask and the number of dead inputs.

    Columns are processed left to right in blocks of ``blocksize``. At a block's start the mask
    of its columns is chosen by the OBS saliency w^2 / U_jj^2 (U_jj^2 is [H_F^-1]_jj over the
    columns F not yet fixed): the block's share of the layer's pruned count, over all its rows
    and columns. With ``nm`` = (N, M) the N best of every M columns of a row survive instead,
    chosen when the group's first column is reached. Each column's pruning error (w - q) / U_jj
    is spread over the block's later columns at once, and over the later blocks in one product
    after the block (the lazy batch update)."""
    w = weight.detach().to(torch.float64).clone()
    rows, columns = w.shape
    upper, dead = inverse_cholesky(hessian, percdamp)
    w[:, dead] = 0.0  # no calibration input reaches them: as the reference, they are zeroed (and score 0)
    keep = torch.ones_like(w, dtype=torch.bool)
    if nm is not None and columns % nm[1]:
        raise BadInputError(f"N:M groups of {nm[1]} do not divide a row of {columns} weights")
    if nm is not None:
        blocksize = max(nm[1], blocksize - blocksize % nm[1])  # an N:M group never straddles two blocks
    budgets = _block_budgets(rows, columns, blocksize, sparsity)
    for index, start in enumerate(range(0, columns, blocksize)):
        end = min(start + blocksize, columns)
        block, u = w[:, start:end].clone(), upper[start:end, start:end]
        pivots = u.diagonal()
        errors = torch.zeros_like(block)
        pruned = torch.zeros_like(block, dtype=torch.bool)
        if nm is None:
            pruned = _lowest(block.pow(2) / pivots.pow(2), budgets[index])
        for j in range(end - start):
            if nm is not None and j % nm[1] == 0:
                group = slice(j, j + nm[1])
                pruned[:, group] = ~nm_keep(block[:, group].pow(2) / pivots[group].pow(2), *nm)
            column = block[:, j]
            kept = torch.where(pruned[:, j], torch.zeros_like(column), column)
            error = (column - kept) / pivots[j]
            block[:, j:] -= error.unsqueeze(1) * u[j, j:].unsqueeze(0)
            block[:, j] = kept  # exactly 0 where pruned (the update leaves rounding there)
            errors[:, j] = error
        w[:, start:end] = block
        w[:, end:] -= errors @ upper[start:end, end:]
        keep[:, start:end] = ~pruned
    return w, keep, int(dead.sum())


def output_error(delta: torch.Tensor, weight: torch.Tensor, hessian: torch.Tensor) -> float:
    """``||delta X||^2 / ||W X||^2`` from H (proportional to X X^T); 0 for a layer whose output is 0."""
    delta, weight, hessian = delta.to(torch.float64), weight.to(torch.float64), hessian.to(torch.float64)
    reference = float(((weight @ hessian) * weight).sum())
    return float(((delta @ hessian) * delta).sum()) / reference if reference > 0 else 0.0
