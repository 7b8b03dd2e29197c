"""Physical removal: a structured mask's channels taken out for real, outputs unchanged.

A masked model multiplies pruned weights by zero and runs the same dense kernels: it is neither
smaller nor faster. A *structured* mask (whole neurons/filters zeroed) can instead be applied for
real. Torch-Pruning's dependency graph (DepGraph, Fang et al., CVPR 2023) finds every tensor
coupled to a channel and removes them together, leaving a smaller dense model that computes
exactly what the masked model computes; ``pruning.physical.groups`` says which channels go and
how their constant outputs are carried.

The removal works on a CPU copy whatever the model's device (Torch-Pruning traces, folds and
checks there: a few forward passes of small batches); the smaller model is handed back on the
device of the model it came from, and ``PhysicalPruning.to_json`` says where it was removed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from pruning.errors import BadInputError
from pruning.masks import Mask
from pruning.metrics import model_stats
from pruning.models import output_layer_name
from pruning.physical.groups import LAYER_TYPES, plan_group
from pruning.vit import attention_layers


def structure_problem(mask: Mask) -> str | None:
    """Why ``mask`` cannot be applied physically, or None when it can: every masked neuron/filter
    must be kept or removed whole, since a dense kernel cannot skip single weights. Whole input
    columns may be zero too (an attention head's projection columns): the pruned weights must be
    exactly the rows and columns they cover."""
    partial = []
    for name, entry in mask.items():
        if entry.dim() < 2:
            continue
        rows = entry.reshape(entry.shape[0], entry.shape[1], -1)
        kept_rows, kept_columns = rows.any(2).any(1), rows.any(2).any(0)
        if not torch.equal(rows, (kept_rows[:, None] & kept_columns[None, :])[:, :, None].expand_as(rows)):
            partial.append(name)
    if not partial:
        return None
    return (
        f"This mask cannot be applied physically: it prunes single weights or blocks inside neurons/filters "
        f"({len(partial)} of {len(mask)} layers, e.g. {partial[0]}), and dense kernels still multiply those "
        "zeros, so the model is neither smaller nor faster. Only structured pruning (granularity structured: "
        "whole neurons/filters) or head pruning gives a physically smaller model."
    )


def masked_copy(model: nn.Module, state_dict: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A copy of ``model`` (left untouched) carrying ``state_dict`` (the pruned weights), in eval mode.
    (Safe while other sessions run the model: models.functional_forward never swaps its tensors.)"""
    copied = copy.deepcopy(model)
    if state_dict is not None:
        copied.load_state_dict(state_dict)
    return copied.eval()


@dataclass
class PhysicalLayer:
    name: str  # parameter name, e.g. "conv1.weight"
    out_channels: int  # before removal
    masked: int  # filters/neurons the mask zeroes
    removed: int  # filters/neurons physically removed
    params: int  # weight parameters left in the smaller model


REMOVAL_DEVICE = "cpu"  # where Torch-Pruning traces and the removal runs, whatever the model's device


@dataclass
class PhysicalPruning:
    """The smaller model (on the original model's device), what was removed, and why some masked
    channels could not be."""

    model: nn.Module
    layers: list[PhysicalLayer]
    kept_masked: dict[str, int]  # masked filters left in place: coupled / constant / last / aligned
    max_abs_difference: float  # |smaller - masked| on random inputs, eval mode
    params: int
    flops: int

    @property
    def masked_channels(self) -> int:
        return sum(layer.masked for layer in self.layers)

    @property
    def removed_channels(self) -> int:
        return sum(layer.removed for layer in self.layers)

    def to_json(self) -> dict:
        return {
            "params": self.params,
            "flops": self.flops,
            "masked_channels": self.masked_channels,
            "removed_channels": self.removed_channels,
            "unremoved_channels": sum(self.kept_masked.values()),
            "unremoved": dict(self.kept_masked),
            "max_abs_difference": self.max_abs_difference,
            "removed_on": REMOVAL_DEVICE,
            "layers": [vars(layer).copy() for layer in self.layers],
        }


def remove_pruned_channels(
    model: nn.Module, mask: Mask, input_shape: tuple[int, ...], state_dict: dict[str, torch.Tensor] | None = None,
    check_batch: int = 4, seed: int = 0, channel_multiple: int = 1,
) -> PhysicalPruning:
    """The masked model (``model`` with ``state_dict``, pruned weights zero; ``model`` itself is
    not touched) with its masked channels removed for real, outputs unchanged (``pruning.physical.groups``
    says which channels go). Raises BadInputError for a mask that prunes inside
    neurons/filters (unstructured, block). Runs on a CPU copy; the smaller model comes back on
    ``model``'s device."""
    mask = mask.to(REMOVAL_DEVICE)
    problem = structure_problem(mask)
    if problem:
        raise BadInputError(problem)
    device = next(model.parameters()).device
    result = _remove_on_cpu(masked_copy(model, state_dict).to(REMOVAL_DEVICE), mask, input_shape, check_batch, seed,
                            channel_multiple)
    result.model.to(device)
    return result


def _remove_on_cpu(masked: nn.Module, mask: Mask, input_shape: tuple[int, ...], check_batch: int, seed: int,
                   channel_multiple: int) -> PhysicalPruning:
    """:func:`remove_pruned_channels` of the masked model ``masked``, on the CPU."""
    import torch_pruning as tp  # here, not at import: only physical removal needs it

    small = copy.deepcopy(masked)
    for parameter in small.parameters():
        parameter.requires_grad_(True)  # DepGraph traces through autograd
    names = {module: name for name, module in small.named_modules()}
    probe = torch.randn(3, *input_shape, generator=torch.Generator().manual_seed(seed), device="cpu")
    inputs = _layer_inputs(small, probe)
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(small, example_inputs=torch.zeros(1, *input_shape, device="cpu"),
                                                      verbose=False)
    output_layer = dict(small.named_modules())[output_layer_name(small)]
    layers = {module: name for module, name in names.items() if isinstance(module, LAYER_TYPES)}
    attentions = attention_layers(small).values()
    units = {getattr(attention, part): attention.head_dim for attention in attentions for part in "qkv"}
    removed_rows = {module: torch.zeros(module.weight.shape[0], dtype=torch.bool, device="cpu") for module in layers}
    masked_rows = {module: _masked_rows(mask, f"{name}.weight", module) for module, name in layers.items()}
    reasons = {module: {} for module in masked_rows}  # module -> {row: reason it stays}
    plans = [
        plan_group(group, graph, masked_rows, inputs, reasons, channel_multiple, units)
        for group in graph.get_all_groups(ignored_layers=[output_layer])
    ]
    with torch.no_grad():
        for plan in plans:
            plan.fold()
    for plan in plans:
        if plan.remove:
            for module, rows in plan.producer_rows().items():
                removed_rows[module][rows] = True
            graph.get_pruning_group(plan.root, plan.handler, sorted(plan.remove)).prune()
    for attention in attentions:  # whole heads went: the reshape into heads follows
        attention.num_heads = attention.q.out_features // attention.head_dim
    small.eval()

    summary, kept = [], {"coupled": 0, "constant": 0, "last": 0, "aligned": 0}
    for module, rows in masked_rows.items():
        summary.append(PhysicalLayer(f"{names[module]}.weight", rows.numel(), int(rows.sum()),
                                    int(removed_rows[module].sum()), module.weight.numel()))
        for row in torch.nonzero(rows & ~removed_rows[module]).flatten().tolist():
            kept[reasons[module].get(row, "coupled")] += 1
    check = torch.randn(check_batch, *input_shape, generator=torch.Generator().manual_seed(seed + 1), device="cpu")
    with torch.inference_mode():
        difference = float((small(check) - masked(check)).abs().max())
    stats = model_stats(small, None, tuple(input_shape))
    return PhysicalPruning(small, summary, kept, difference, stats.params_total, stats.flops_dense)


def _masked_rows(mask: Mask, name: str, module: nn.Module) -> torch.Tensor:
    """Which output neurons/filters of ``module`` the mask zeroes whole."""
    if name not in mask:
        return torch.zeros(module.weight.shape[0], dtype=torch.bool, device=module.weight.device)
    return ~mask[name].reshape(mask[name].shape[0], -1).any(1)


def _layer_inputs(model: nn.Module, probe: torch.Tensor) -> dict[nn.Module, torch.Tensor]:
    """The input each Linear/Conv layer receives from ``probe`` (the masked model, eval mode)."""
    seen = {}
    handles = [module.register_forward_pre_hook(lambda module, args: seen.setdefault(module, args[0].detach().clone()))
               for module in model.modules() if isinstance(module, LAYER_TYPES)]
    try:
        with torch.no_grad():
            model.eval()(probe)
    finally:
        for handle in handles:
            handle.remove()
    return seen
