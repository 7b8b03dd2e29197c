"""Real 2:4 speed: the Linear layers of an N:M mask run through PyTorch's semi-structured sparse
kernels (``torch.sparse.to_sparse_semi_structured``: cuSPARSELt / CUTLASS on NVIDIA sparse tensor
cores), timed against the same dense layer on the same GPU.

Only where it can be measured: a CUDA GPU of compute capability 8.0 or newer, fp16, and layers whose
mask keeps at most 2 of every 4 consecutive weights of a row and whose shape the kernels accept.
Elsewhere the reason is returned instead of a number: no speed is ever estimated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pruning.masks import Mask
from pruning.models import prunable_layers

TOKENS = 4096  # input rows per timed call: large enough for the GPU to be busy on small layers
REPEATS = 50


@dataclass
class SemiStructuredLayer:
    layer: str
    shape: tuple[int, int]
    dense_ms: float
    sparse_ms: float
    max_abs_difference: float

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.sparse_ms


def is_two_four(keep: torch.Tensor) -> bool:
    """At most 2 kept weights in every 4 consecutive ones of a row (1:4 qualifies too)."""
    rows = keep.flatten(1)
    return rows.shape[1] % 4 == 0 and bool((rows.reshape(rows.shape[0], -1, 4).sum(-1) <= 2).all())


def unavailable_reason() -> str | None:
    """Why semi-structured kernels cannot run here, or None when they can."""
    if not torch.cuda.is_available():
        return ("no CUDA GPU on this machine: 2:4 sparse kernels (torch.sparse.to_sparse_semi_structured) need an "
                "NVIDIA GPU with sparse tensor cores (compute capability 8.0+), so no 2:4 speed is measured or shown")
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        return (f"the GPU ({torch.cuda.get_device_name()}, compute capability {major}.{minor}) has no sparse tensor "
                "cores (8.0+ needed): no 2:4 speed is measured")
    return None


def _time_ms(call, repeats: int = REPEATS) -> float:
    for _ in range(5):
        call()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeats):
        call()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def time_semi_structured(model: nn.Module, mask: Mask, tokens: int = TOKENS) -> tuple[list[SemiStructuredLayer], str]:
    """Per eligible Linear layer, fp16 dense against 2:4 sparse time on the GPU, and a note saying
    what was timed or why nothing was."""
    reason = unavailable_reason()
    if reason:
        return [], reason
    from torch.sparse import to_sparse_semi_structured

    rows, skipped = [], []
    for name, layer in prunable_layers(model).items():
        keep = mask.get(f"{name}.weight")
        if not isinstance(layer, nn.Linear) or keep is None or not is_two_four(keep):
            continue
        weight = (layer.weight.detach() * keep.to(layer.weight.device)).half().cuda()
        x = torch.randn(tokens, weight.shape[1], dtype=torch.half, device="cuda")
        try:
            sparse = to_sparse_semi_structured(weight)
            difference = float((F.linear(x, sparse) - F.linear(x, weight)).abs().max())
        except (RuntimeError, ValueError) as error:  # shapes the kernels refuse
            skipped.append(f"{name} ({str(error).splitlines()[0]})")
            continue
        rows.append(SemiStructuredLayer(name, tuple(weight.shape), _time_ms(lambda: F.linear(x, weight)),
                                        _time_ms(lambda: F.linear(x, sparse)), difference))
    note = f"fp16, {tokens} input rows per call, mean of {REPEATS} calls after warm-up, {torch.cuda.get_device_name()}."
    if not rows:
        note = "no Linear layer of this mask has a 2:4 pattern the kernels accept. " + note
    if skipped:
        note += " Not timed: " + "; ".join(skipped) + "."
    return rows, note
