"""Curvature by automatic differentiation: gradients and Hessian-vector products.

Everything works on *lists* of tensors (one per parameter), so the same functions serve the
pruning criteria (``H g`` for GraSP and gradient-norm preservation) and spectral tools
(Lanczos, power iteration) that need many products ``H v`` with one Hessian.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor


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
