"""SparseGPT: one-shot pruning with weight reconstruction, layer by layer in forward order.

Each layer's inputs are recorded on a class-balanced calibration batch run through the model whose
earlier layers are already pruned and updated (the paper's sequential setting: the authors' code
does this per transformer block, here per layer), its Hessian H = 2 X X^T built, and the layer
pruned and its survivors updated by ``pruning.sparsegpt_solver``. Every layer loses the same
fraction (uniform, as the paper). The model given is never changed: the work runs on a copy, and
the outcome carries the updated weights (``PruneOutcome.state_dict``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from pruning.class_balanced import balanced_batch
from pruning.masks import Mask
from pruning.methods.base import Details, Method, PruneContext, PruneOutcome
from pruning.models import prunable_layers, prunable_weight_names
from pruning.params import Param
from pruning.row_patterns import NM_PATTERNS, nm_applies, parse_nm
from pruning.sparsegpt_solver import HessianSum, output_error, sparsegpt_prune, unsupported

CHUNK = 256  # calibration samples per forward pass
MOVEMENT_EDGES = tuple(step / 2 for step in range(-12, 3))  # log10 |W_hat - W| / |W|: 1e-6 .. 10, half decades


@dataclass(frozen=True)
class SparseGPTDetails(Details):
    """Per layer (weight name): the layer-output error ``||W X - W_hat X||^2 / ||W X||^2`` on the
    calibration batch with the update (``reconstruction_error``) and with the same mask but no
    update (``masked_error``: what the reconstruction recovered), and how far the surviving
    weights moved, |W_hat - W| / |W|: the median and counts per half decade of log10 over
    ``movement_edges`` (values beyond the ends counted in the end bins). X is the layer's input
    in the sequential setting (earlier layers pruned); bias aside."""

    pattern: str
    calibration_samples: int
    mean_reconstruction_error: float
    mean_masked_error: float
    reconstruction_error: dict[str, float]
    masked_error: dict[str, float]
    movement_median: dict[str, float]
    movement_edges: tuple[float, ...]
    movement_counts: dict[str, list[int]]
    dead_inputs: dict[str, int]  # inputs never non-zero on the calibration batch (zeroed, as the reference)
    left_dense: dict[str, str]  # layer -> why it was not pruned


class _Reached(Exception):
    """Stops a calibration forward pass once the layer being pruned has seen its input."""


def forward_order(model: nn.Module, layers: dict[str, nn.Module], sample: torch.Tensor) -> list[str]:
    """The layers' names in the order a forward pass calls them (their definition order can differ);
    layers the pass never calls as modules come last."""
    called: list[str] = []
    handles = [layer.register_forward_pre_hook(lambda _m, _a, name=name: called.append(name) if name not in called else None)
               for name, layer in layers.items()]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
    return called + [name for name in layers if name not in called]


def layer_hessian(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """H of ``layer`` on the calibration batch ``x`` run through ``model`` as it is now (each pass
    stops at the layer), or None if the forward pass never calls it as a module."""
    hessian = HessianSum(layer)

    def record(_module, args):
        hessian.add(args[0])
        raise _Reached

    handle = layer.register_forward_pre_hook(record)
    try:
        with torch.no_grad():
            for part in x.split(CHUNK):
                try:
                    model(part)
                except _Reached:
                    pass
    finally:
        handle.remove()
    return hessian.hessian() if hessian.samples else None


def movement(dense: torch.Tensor, updated: torch.Tensor, keep: torch.Tensor) -> tuple[float, list[int]]:
    """Median and half-decade histogram of |W_hat - W| / |W| over the surviving non-zero weights."""
    survivors = keep & (dense != 0)
    if not bool(survivors.any()):
        return 0.0, [0] * (len(MOVEMENT_EDGES) - 1)
    relative = ((updated - dense).abs() / dense.abs())[survivors]
    logs = relative.clamp_min(1e-30).log10().clamp(MOVEMENT_EDGES[0], MOVEMENT_EDGES[-1])
    counts = torch.histc(logs, bins=len(MOVEMENT_EDGES) - 1, min=MOVEMENT_EDGES[0], max=MOVEMENT_EDGES[-1])
    return float(relative.median()), [int(count) for count in counts]


class SparseGPT(Method):
    name = "sparsegpt"
    description = (
        "One-shot pruning with weight reconstruction (SparseGPT, after Optimal Brain Surgeon). Layer by layer in "
        "forward order, each layer's inputs X are taken on a class-balanced calibration batch from the model whose "
        "earlier layers are already pruned and updated; H = 2XXᵀ plus damping. Columns are processed left to right in "
        "blocks: in each block the weights with the lowest w² / [H⁻¹]ⱼⱼ are pruned (the block's share of the layer's "
        "sparsity, or the N best of every M in a row for N:M), and each pruned weight's error is spread over the "
        "later columns of its row so the layer's output on X changes least. Every layer gets the same sparsity "
        "(uniform, as the paper; N:M: the pattern's own, the sparsity setting does not apply; layers whose rows do "
        "not divide into groups of M stay dense). No retraining; the survivors' updated values are the result."
    )
    formula = (r"\min_{\hat W}\ \lVert WX - \hat W X\rVert_2^2,\ H = 2XX^\top + \lambda I;\quad "
               r"\delta = -\frac{w_q}{[H^{-1}]_{qq}}\,H^{-1}_{:,q};\quad "
               r"s_{ij} = \frac{w_{ij}^2}{[H_F^{-1}]_{jj}} = \frac{w_{ij}^2}{U_{jj}^2},\ H^{-1} = U^\top U")
    reference = ("Frantar & Alistarh, SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot, ICML 2023; "
                 "Hassibi & Stork, Second Order Derivatives for Network Pruning: Optimal Brain Surgeon, NeurIPS 1992.")
    params = (
        Param("granularity", "choice", "unstructured", "unstructured: each column block loses its share of the layer's "
              "sparsity, over all its rows at once (the paper's adaptive mask); nm: the N best of every M consecutive "
              "weights of a row survive (conv kernels flattened as in x kh x kw).", choices=("unstructured", "nm"),
              label="Granularity"),
        Param("nm_pattern", "choice", "2:4", "N:M: the N best of every M consecutive weights of a row survive.",
              choices=NM_PATTERNS, label="N:M pattern", only_if=("granularity", "nm")),
        Param("prune_output_layer", "bool", True, "Prune the last Linear layer too (the paper leaves the output "
              "head dense).", label="Prune the output layer"),
        Param("samples_per_class", "int", 50, "Class-balanced calibration batch: this many training samples of each "
              "class (all of a smaller class).", min=1, max=1000, label="Samples per class (calibration batch)"),
        Param("percdamp", "float", 0.01, "λ added to H's diagonal, as a fraction of its mean diagonal (the paper's 1%).",
              min=0.0, max=1.0, step=0.001, label="λ (damping, fraction of mean diagonal)"),
        Param("blocksize", "int", 128, "Columns chosen and updated together before the lazy update of the later "
              "columns (the paper's 128; N:M rounds it down to a multiple of M).", min=1, max=4096,
              label="Columns per lazy-update block"),
    )

    def prune(self, model: nn.Module, sparsity: float, settings: dict, context: PruneContext) -> PruneOutcome:
        work = copy.deepcopy(model).eval()
        names = set(prunable_weight_names(model, include_output=settings["prune_output_layer"]))
        layers = {f"{name}.weight": layer for name, layer in prunable_layers(work).items() if f"{name}.weight" in names}
        x, _ = balanced_batch(context.data, settings["samples_per_class"], context.seed)
        nm = parse_nm(settings["nm_pattern"]) if settings["granularity"] == "nm" else None
        keep: dict[str, torch.Tensor] = {}
        errors, masked, medians, counts, dead, left = {}, {}, {}, {}, {}, {}
        for name in forward_order(work, layers, x[:1]):
            layer = layers[name]
            keep[name] = torch.ones_like(layer.weight, dtype=torch.bool)
            reason = unsupported(layer)
            if reason is None and nm is not None and not nm_applies(layer.weight.shape, nm[1]):
                reason = f"rows of {layer.weight[0].numel()} weights do not divide into groups of {nm[1]}"
            hessian = layer_hessian(work, layer, x) if reason is None else None
            if reason is None and hessian is None:
                reason = "the forward pass does not call it as a module (its input cannot be recorded)"
            if reason is not None:
                left[name] = reason
                continue
            dense = layer.weight.detach().flatten(1).to(torch.float64)
            updated, kept, dead[name] = sparsegpt_prune(dense, hessian, sparsity, nm, settings["blocksize"],
                                                        settings["percdamp"])
            with torch.no_grad():
                layer.weight.copy_(updated.view_as(layer.weight).to(layer.weight.dtype))
            keep[name] = kept.view_as(layer.weight)
            errors[name] = output_error(updated - dense, dense, hessian)
            masked[name] = output_error(dense * kept - dense, dense, hessian)
            medians[name], counts[name] = movement(dense, updated, kept)
        state = {key: tensor.detach().clone() for key, tensor in work.state_dict().items()}
        details = SparseGPTDetails(
            pattern=settings["nm_pattern"] if nm else "unstructured", calibration_samples=len(x),
            mean_reconstruction_error=_mean(errors), mean_masked_error=_mean(masked), reconstruction_error=errors,
            masked_error=masked, movement_median=medians, movement_edges=MOVEMENT_EDGES, movement_counts=counts,
            dead_inputs=dead, left_dense=left)
        return PruneOutcome(Mask({name: keep[name] for name in layers}), state_dict=state, details=details)


def _mean(values: dict[str, float]) -> float:
    return math.fsum(values.values()) / len(values) if values else 0.0
