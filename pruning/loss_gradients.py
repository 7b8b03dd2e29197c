"""Gradients of a mean cross-entropy, streamed over a batch in chunks: ``g = dL/dw`` and ``H g``.

Data-driven criteria (SNIP, GraSP, gradient-norm preservation...) and undecayed pruning both need
``g`` over many samples (2,560, or the whole training split); one forward pass over all of them
would hold every activation at once. Each chunk's loss is summed and divided by the whole batch's
size, so the accumulated gradient is exactly that of the mean loss, whatever the chunk size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from pruning.autodiff import eval_mode, gradient, hessian_vector_product
from pruning.class_balanced import balanced_batch
from pruning.errors import BadInputError
from pruning.models import functional_forward

SCORING_CHUNK = 256  # samples per forward pass when the scoring batch is large (memory bound)


def streamed_gradient(loss_sum: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], params: Sequence[torch.Tensor],
                      x: torch.Tensor, y: torch.Tensor, chunk: int | None = None) -> list[torch.Tensor]:
    """``d/dp`` of ``loss_sum(x, y) / len(y)`` (``loss_sum`` sums the per-sample losses), taken
    over chunks of ``chunk`` samples (default :data:`SCORING_CHUNK`) and added up: the mean loss's
    gradient with at most one chunk's activations in memory."""
    chunk = chunk or SCORING_CHUNK
    total = [torch.zeros_like(p) for p in params]
    for x_chunk, y_chunk in zip(x.split(chunk), y.split(chunk)):
        parts = gradient(loss_sum(x_chunk, y_chunk) / len(y), params)
        total = [running + part.detach() for running, part in zip(total, parts)]
    return total


@dataclass
class LossSignals:
    """Per prunable weight (keyed by name): the weights ``w`` as scored (masked if the context
    holds a mask), ``g = dL/dw`` and, when asked for, ``H g``."""

    weights: dict[str, torch.Tensor]
    gradient: dict[str, torch.Tensor]
    hessian_gradient: dict[str, torch.Tensor] | None = None


def loss_signals(model: nn.Module, names: list[str], context, hessian: bool = False,
                 temperature: float = 1.0) -> LossSignals:
    """``g = dL/dw``, L the mean cross-entropy of ``logits / temperature`` (GraSP's T; 1 otherwise)
    over :func:`balanced_batch`, and optionally ``H g`` (``H`` the Hessian of L in the prunable
    weights, by double backprop of ``g . stop_grad(g)``, as GraSP and the gradient-flow paper
    compute it; both take ``g`` and ``H`` of the same tempered loss). As the gradient-flow paper's
    code, ``g`` and ``H`` span every trainable parameter (biases, batch-norm and the layers left
    unpruned included: ``||g||^2`` is the whole network's gradient flow), and the scores read the
    named weights' entries of ``g`` and ``H g``.

    The model is run in eval mode (batch-norm statistics are used, not updated) through
    ``torch.func.functional_call`` with detached copies of its weights, so its parameters,
    ``.grad`` fields, buffers and train/eval mode are all left as they were. Large batches
    are processed in chunks; ``g`` is the full-batch mean and ``H g`` uses that ``g``."""
    if getattr(context, "data", None) is None or not hasattr(context.data, "x_train"):
        raise BadInputError("this criterion scores weights on training data, and none was given")
    if not temperature > 0:
        raise BadInputError(f"the softmax temperature must be positive, got {temperature}")
    x, y = balanced_batch(context.data, context.samples_per_class, context.seed)
    tensors = {name: parameter.detach() for name, parameter in model.named_parameters()}
    mask = getattr(context, "mask", None)
    masked = mask is not None
    others = [name for name, parameter in model.named_parameters()
              if name not in names and parameter.requires_grad and parameter.is_floating_point()]
    weights = [
        (tensors[name] * mask[name] if masked and name in mask else tensors[name].clone()).requires_grad_(True)
        for name in [*names, *others]
    ]
    tensors.update(zip([*names, *others], weights))

    def loss_sum(x_chunk, y_chunk):
        logits = functional_forward(model, tensors, (x_chunk,)) / temperature
        return nn.functional.cross_entropy(logits, y_chunk, reduction="sum")

    def chunk_share(x_chunk, y_chunk):  # a chunk's part of the mean loss: the parts' H g add up to H g
        return loss_sum(x_chunk, y_chunk) / len(y)

    with eval_mode(model):
        grads = streamed_gradient(loss_sum, weights, x, y)
        hessian_gradient = None
        if hessian:
            hessian_gradient = [torch.zeros_like(w) for w in weights]
            for x_chunk, y_chunk in zip(x.split(SCORING_CHUNK), y.split(SCORING_CHUNK)):
                part = hessian_vector_product(partial(chunk_share, x_chunk, y_chunk), weights, grads)
                hessian_gradient = [total + p for total, p in zip(hessian_gradient, part)]
    return LossSignals(
        weights={name: w.detach() for name, w in zip(names, weights)},
        gradient={name: g.detach() for name, g in zip(names, grads)},
        hessian_gradient=None if hessian_gradient is None else dict(zip(names, hessian_gradient)),
    )
