"""Size and compute metrics as ShrinkBench defines them (Blalock et al. 2020).

- sparsity: fraction of the *prunable* weights that are pruned;
- compression ratio: all parameters / nonzero parameters (biases and norm layers included);
- FLOPs: counted like ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add of
  Linear and Conv layers, batch 1); pruned FLOPs count only the nonzero weights;
- theoretical speedup: dense FLOPs / pruned FLOPs. A *masked* model is not faster in practice.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import asdict, dataclass

import torch
from torch import nn

from pruning.masks import Mask
from pruning.models import model_device, prunable_layers

_FLOPS_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def flops_per_weight(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """For each Linear/Conv layer, the FLOPs one of its weights costs per input sample:
    2 x the number of output positions it is applied at (1 for Linear). Depends only on the
    architecture, so it is remembered per model object and input shape (one forward pass)."""
    remembered = _FLOPS_CACHE.setdefault(model, {})
    if tuple(input_shape) not in remembered:
        remembered[tuple(input_shape)] = _count_flops_per_weight(model, tuple(input_shape))
    return remembered[tuple(input_shape)]


def _count_flops_per_weight(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    positions: dict[str, int] = {}

    def record(name):
        def hook(module, inputs, output):
            if isinstance(module, nn.Linear):
                positions[name] = output[..., 0].numel()
            else:  # ConvNd: one multiply-add per weight per output position, per group
                positions[name] = output[0, 0].numel()

        return hook

    model = copy.deepcopy(model)  # hooks go on a private copy: other threads may be running the model
    for name, module in prunable_layers(model).items():
        module.register_forward_hook(record(name))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape, device=model_device(model)))
    return {name: 2 * count for name, count in positions.items()}


@dataclass
class LayerStats:
    name: str  # parameter name, e.g. "conv1.weight"
    params: int
    nonzero: int
    sparsity: float
    flops_dense: int
    flops_pruned: int


@dataclass
class ModelStats:
    sparsity: float  # over prunable weights
    compression: float
    params_total: int
    params_nonzero: int
    flops_dense: int
    flops_pruned: int
    speedup: float
    layers: list[LayerStats]

    def to_dict(self) -> dict:
        return asdict(self)


def model_stats(
    model: nn.Module,
    mask: Mask | None,
    input_shape: tuple[int, ...],
    parameters: dict[str, torch.Tensor] | None = None,
) -> ModelStats:
    """Sparsity, compression and FLOPs of ``model`` with ``mask`` applied (the model is not changed).
    ``parameters`` replaces the model's own tensors by name (e.g. weights after training-time
    pruning). Without a mask, sparsity is the fraction of exactly-zero prunable weights."""
    mask = mask or Mask()
    per_weight_flops = flops_per_weight(model, input_shape)
    parameters = {name: (parameters or {}).get(name, tensor) for name, tensor in model.named_parameters()}
    params_total = params_nonzero = 0
    for name, tensor in parameters.items():
        effective = tensor.detach() * mask[name] if name in mask else tensor.detach()
        params_total += tensor.numel()
        params_nonzero += int(torch.count_nonzero(effective))
    layers = []
    for layer, flops in per_weight_flops.items():
        name = f"{layer}.weight"
        weight = parameters[name].detach()
        effective = weight * mask[name] if name in mask else weight
        nonzero = int(torch.count_nonzero(effective))
        layers.append(
            LayerStats(
                name=name,
                params=weight.numel(),
                nonzero=nonzero,
                sparsity=1.0 - nonzero / weight.numel(),
                flops_dense=flops * weight.numel(),
                flops_pruned=flops * nonzero,
            )
        )
    flops_dense = sum(layer.flops_dense for layer in layers)
    flops_pruned = sum(layer.flops_pruned for layer in layers)
    if mask:
        sparsity = mask.sparsity()
    else:
        sparsity = 1.0 - sum(layer.nonzero for layer in layers) / sum(layer.params for layer in layers)
    return ModelStats(
        sparsity=sparsity,
        compression=params_total / max(params_nonzero, 1),
        params_total=params_total,
        params_nonzero=params_nonzero,
        flops_dense=flops_dense,
        flops_pruned=flops_pruned,
        speedup=flops_dense / max(flops_pruned, 1),
        layers=layers,
    )
