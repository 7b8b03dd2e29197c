"""Automatic differentiation of a model's loss: gradients, Hessian-vector products, the loss closure.

The functions work on *lists* of tensors (one per parameter), so the same code serves the pruning
criteria (``g`` for SNIP, Taylor and SynFlow, ``H g`` for GraSP and gradient-norm preservation)
and the spectral tools of ``pruning.analysis.hessian``, which only ever ask for products ``H v``:
the Hessian of a real network (10^5+ weights) is never formed. Products are exact double
backprop (Pearlmutter, Fast Exact Multiplication by the Hessian, Neural Computation 1994), not
finite differences.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from pruning.models import functional_forward


def gradient(loss: Tensor, params: Sequence[Tensor], create_graph: bool = False) -> list[Tensor]:
    """``dloss/dp`` for every tensor of ``params`` (zeros where ``loss`` does not depend on it).

    Uses ``torch.autograd.grad``, so nothing is accumulated into ``.grad``. With
    ``create_graph=True`` the result can be differentiated again (double backprop)."""
    grads = torch.autograd.grad(loss, list(params), create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def hvp_operator(loss_fn: Callable[[], Tensor], params: Sequence[Tensor]) -> Callable[[Sequence[Tensor]], list[Tensor]]:
    """One forward pass and one differentiable backward pass, then ``v -> H v`` as often as needed.

    ``loss_fn()`` computes the loss from ``params`` (leaf tensors with ``requires_grad``); ``H`` is
    its Hessian with respect to ``params``. Each product is ``d/dp (g . stop_grad(v))`` with
    ``g = dL/dp`` built with ``create_graph=True``; the graph is kept between products."""
    params = list(params)
    grads = gradient(loss_fn(), params, create_graph=True)
    live = [i for i, g in enumerate(grads) if g.requires_grad]  # the others have zero Hessian rows

    def product(vector: Sequence[Tensor]) -> list[Tensor]:
        vector = list(vector)
        if len(vector) != len(params):
            raise ValueError(f"vector has {len(vector)} tensors, params {len(params)}")
        if not live:
            return [torch.zeros_like(p) for p in params]
        dot = sum((grads[i] * vector[i].detach()).sum() for i in live)
        result = torch.autograd.grad(dot, params, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if h is None else h.detach() for h, p in zip(result, params)]

    return product


def hessian_vector_product(
    loss_fn: Callable[[], Tensor], params: Sequence[Tensor], vector: Sequence[Tensor]
) -> list[Tensor]:
    """``H v`` by double backprop, ``H`` the Hessian of ``loss_fn()`` with respect to ``params``.

    ``torch.autograd.grad`` of ``g . stop_grad(v)``, where ``g = dL/dp`` was taken with
    ``create_graph=True``; exact (no finite differences), one Hessian row-block per tensor of
    ``params``, shapes as ``params``. ``loss_fn`` takes no arguments and uses ``params``."""
    return hvp_operator(loss_fn, params)(vector)


def functional_cross_entropy(
    model: nn.Module, tensors: dict[str, Tensor], x: Tensor, y: Tensor, reduction: str = "mean"
) -> Tensor:
    """``cross_entropy(model(x), y)`` with the model's parameters and buffers replaced by
    ``tensors`` (``torch.func.functional_call``): the loss as a function of tensors the caller
    owns, so it can be differentiated in them while the model's own parameters stay untouched."""
    return nn.functional.cross_entropy(functional_forward(model, tensors, (x,)), y, reduction=reduction)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``model`` in eval mode, then restore its mode (even on an error).

    A loss is differentiated as a fixed function of the weights: dropout off, batch norm on its
    running statistics (which are read, never updated)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
