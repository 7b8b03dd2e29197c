"""Attention-head pruning: the lowest-scoring heads of a transformer taken out whole (structured).

A head is scored by the L2 norm of its weights (its q, k and v rows and its columns of the output
projection), or by the first-order Taylor estimate of the loss change when it is removed (Michel,
Levy & Neubig, Are Sixteen Heads Really Better than One?, NeurIPS 2019: the gradient of the loss
with respect to a gate on the head's output, its absolute value averaged over a class-balanced
batch). The mask zeroes the pruned heads' q, k, v rows and projection columns, so the head adds
nothing, every page sees an ordinary mask, and ``pruning.physical`` removes the heads for real.
Optionally the same fraction of the MLP hidden neurons goes too (fc1 rows and fc2 columns).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from pruning.class_balanced import balanced_batch
from pruning.errors import BadInputError
from pruning.masks import Mask
from pruning.methods.base import Details, Method, PruneContext, PruneOutcome
from pruning.models import prunable_weight_names
from pruning.params import Param
from pruning.vit import EncoderBlock, head_rows

SCORES = ("norm", "taylor")
ALLOCATIONS = ("global", "per_block")


@dataclass(frozen=True)
class HeadDetails(Details):
    """Per block (module name), which heads stay and their scores; the counts over the network."""

    score: str
    kept_heads: dict[str, list[bool]]
    head_scores: dict[str, list[float]]
    heads_removed: int
    heads_total: int
    mlp_neurons_removed: int


def transformer_blocks(model: nn.Module) -> dict[str, EncoderBlock]:
    blocks = {name: module for name, module in model.named_modules() if isinstance(module, EncoderBlock)}
    if not blocks:
        raise BadInputError("heads prunes attention heads: choose a transformer model (vit-tiny)")
    return blocks


def norm_scores(blocks: dict[str, EncoderBlock]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per block, the L2 norm of each head's q, k, v rows and projection columns, and of each MLP
    hidden neuron's fc1 row and fc2 column."""
    heads, neurons = {}, {}
    for name, block in blocks.items():
        attention = block.attention
        squares = []
        for head in range(attention.num_heads):
            rows = head_rows(attention, head)
            total = sum(getattr(attention, part).weight[rows].pow(2).sum() for part in "qkv")
            squares.append(total + attention.proj.weight[:, rows].pow(2).sum())
        heads[name] = torch.stack(squares).detach().sqrt()
        neurons[name] = (block.fc1.weight.pow(2).sum(1) + block.fc2.weight.pow(2).sum(0)).detach().sqrt()
    return heads, neurons


def taylor_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  chunk: int = 256) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per block, ``mean_x |dL(x)/d xi|`` for a gate ``xi = 1`` on each head's output (before the
    projection) and on each MLP hidden neuron (before fc2), in eval mode, on a copy of the model."""
    copied = copy.deepcopy(model).eval()
    gates: dict[tuple[str, str], torch.Tensor] = {}
    totals: dict[tuple[str, str], torch.Tensor] = {}

    def gate(key, groups):
        def hook(_module, args):
            inputs = args[0]
            ones = torch.ones(inputs.shape[0], groups, dtype=inputs.dtype, device=inputs.device, requires_grad=True)
            gates[key] = ones
            shape = inputs.shape
            return ((inputs.reshape(shape[0], -1, groups, shape[-1] // groups) * ones[:, None, :, None]).reshape(shape),)

        return hook

    handles = []
    for name, block in transformer_blocks(copied).items():
        handles.append(block.attention.proj.register_forward_pre_hook(gate((name, "heads"), block.attention.num_heads)))
        handles.append(block.fc2.register_forward_pre_hook(gate((name, "mlp"), block.fc2.in_features)))
    try:
        with torch.enable_grad():
            for inputs, labels in zip(x.split(chunk), y.split(chunk)):
                loss = nn.functional.cross_entropy(copied(inputs), labels, reduction="sum")  # sum: per-sample gradients
                grads = torch.autograd.grad(loss, list(gates.values()))
                for key, grad in zip(gates, grads):
                    totals[key] = totals.get(key, 0) + grad.abs().sum(0)
    finally:
        for handle in handles:
            handle.remove()
    heads = {name: total / len(y) for (name, kind), total in totals.items() if kind == "heads"}
    neurons = {name: total / len(y) for (name, kind), total in totals.items() if kind == "mlp"}
    return heads, neurons


def choose(scores: dict[str, torch.Tensor], fraction: float, allocation: str,
           forced: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Which units (heads or neurons) of each block go: the lowest-scoring ``fraction`` of them,
    over the whole network (``global``) or in each block (``per_block``); ``forced`` ones (pruned
    before) go first, count towards it and always stay pruned; every block keeps at least one."""
    forced = {name: entry for name, entry in (forced or {}).items() if entry is not None}
    ranked = {name: score.masked_fill(forced[name], float("-inf")) if name in forced else score
              for name, score in scores.items()}
    pruned = {name: torch.zeros_like(score, dtype=torch.bool) for name, score in scores.items()}
    if allocation == "per_block":
        for name, score in ranked.items():
            count = min(round(fraction * score.numel()), score.numel() - 1)
            pruned[name][torch.argsort(score, stable=True)[:count]] = True
        return {name: entry | forced[name] if name in forced else entry for name, entry in pruned.items()}
    total = sum(score.numel() for score in ranked.values())
    count = min(round(fraction * total), total - len(ranked))
    order = sorted(((float(value), name, index) for name, score in ranked.items() for index, value in enumerate(score)),
                   key=lambda item: item[0])
    for _, name, index in order:
        if count == 0:
            break
        if int(pruned[name].sum()) < pruned[name].numel() - 1:
            pruned[name][index] = True
            count -= 1
    return {name: entry | forced[name] if name in forced else entry for name, entry in pruned.items()}


class HeadPruning(Method):
    name = "heads"
    description = ("Attention-head pruning (structured, transformers): remove the lowest-scoring heads whole; the "
                   "sparsity is the fraction of heads removed, every block keeping at least one.")
    formula = (r"s_h = \big\| [W^q_h;\, W^k_h;\, W^v_h;\, (W^o_{:,h})^\top] \big\|_2"
               r"\quad\text{or}\quad s_h = \mathbb{E}_x \Big| \frac{\partial \mathcal{L}(x)}{\partial \xi_h} \Big|_{\xi = 1}")
    reference = ("Michel, Levy & Neubig, Are Sixteen Heads Really Better than One?, NeurIPS 2019; Voita et al., "
                 "Analyzing Multi-Head Self-Attention, ACL 2019")
    params = (
        Param("score", "choice", "norm", "norm: the L2 norm of the head's q, k, v rows and projection columns; taylor: "
              "the loss gradient with respect to a gate on the head's output, its absolute value averaged over a "
              "class-balanced training batch (Michel et al.).", choices=SCORES, label="Head score"),
        Param("samples_per_class", "int", 10, "Class-balanced scoring batch: this many training samples of each class.",
              min=1, max=500, label="Samples per class (scoring batch)", only_if=("score", "taylor")),
        Param("allocation", "choice", "global", "global: the lowest-scoring heads of the whole network go (a block may "
              "lose more than another); per_block: the same fraction of every block's heads.", choices=ALLOCATIONS,
              label="Allocation across blocks"),
        Param("mlp", "bool", False, "Also remove the same fraction of the MLP hidden neurons (fc1 rows and fc2 "
              "columns), scored the same way.", label="Prune MLP neurons too"),
    )

    def prune(self, model: nn.Module, sparsity: float, settings: dict, context: PruneContext) -> PruneOutcome:
        blocks = transformer_blocks(model)
        if settings["score"] == "taylor":
            x, y = balanced_batch(context.data, settings["samples_per_class"], context.seed)
            head_scores, neuron_scores = taylor_scores(model, x, y)
        else:
            head_scores, neuron_scores = norm_scores(blocks)
        previous = context.previous_mask or Mask()
        forced_heads = {name: _pruned_heads(previous, name, block) for name, block in blocks.items()}
        forced_neurons = {name: _pruned_neurons(previous, name) for name in blocks}
        pruned_heads = choose(head_scores, sparsity, settings["allocation"], forced_heads)
        pruned_neurons = choose(neuron_scores, sparsity if settings["mlp"] else 0.0, settings["allocation"], forced_neurons)
        mask = Mask.ones_like(model, prunable_weight_names(model, include_output=False))
        for name, block in blocks.items():
            attention = block.attention
            for head in torch.nonzero(pruned_heads[name]).flatten().tolist():
                rows = head_rows(attention, head)
                for part in "qkv":
                    mask[f"{name}.attention.{part}.weight"][rows] = False
                mask[f"{name}.attention.proj.weight"][:, rows] = False
            mask[f"{name}.fc1.weight"][pruned_neurons[name]] = False
            mask[f"{name}.fc2.weight"][:, pruned_neurons[name]] = False
        details = HeadDetails(
            score=settings["score"],
            kept_heads={name: (~pruned).tolist() for name, pruned in pruned_heads.items()},
            head_scores={name: score.tolist() for name, score in head_scores.items()},
            heads_removed=sum(int(pruned.sum()) for pruned in pruned_heads.values()),
            heads_total=sum(pruned.numel() for pruned in pruned_heads.values()),
            mlp_neurons_removed=sum(int(pruned.sum()) for pruned in pruned_neurons.values()),
        )
        return PruneOutcome(mask, details=details)


def _pruned_heads(mask: Mask, name: str, block: EncoderBlock) -> torch.Tensor | None:
    """Heads whose v rows ``mask`` zeroes whole (pruned before: an iterative schedule keeps them pruned)."""
    entry = mask.get(f"{name}.attention.v.weight")
    return None if entry is None else ~entry.reshape(block.attention.num_heads, -1).any(1)


def _pruned_neurons(mask: Mask, name: str) -> torch.Tensor | None:
    """MLP hidden neurons whose fc1 row ``mask`` zeroes whole."""
    entry = mask.get(f"{name}.fc1.weight")
    return None if entry is None else ~entry.any(1)
