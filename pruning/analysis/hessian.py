"""The Hessian spectrum of a model's loss, from Hessian-vector products alone.

The tools below see the Hessian of a model's loss as a matrix on one flat vector
(``LossHessian``, built on the exact double-backprop products of ``pruning.autodiff``) and only
ever ask for products ``H v``: the Hessian of a real network (10^5+ weights) is never formed.

Spectral tools: the top eigenvalues (Lanczos), the trace (Hutchinson, Rademacher probes), the
spectral density (stochastic Lanczos quadrature, SLQ) and the per-weight Hessian row norms, whose
zeros mark exactly flat coordinates that a short Lanczos run cannot resolve. The trace estimator
is Hutchinson's (Communications in Statistics - Simulation and Computation, 1990); SLQ follows
Ubaru, Chen & Saad, Fast Estimation of tr(f(A)) via Stochastic Lanczos Quadrature, SIAM J. Matrix
Anal. Appl. 2017, as Ghorbani, Krishnan & Xiao apply it to networks (An Investigation into Neural
Net Optimization via Hessian Eigenvalue Density, ICML 2019).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pruning.autodiff import eval_mode, functional_cross_entropy, hvp_operator
from pruning.models import prunable_weight_names

# --- The Hessian of a model's loss as an operator on flat vectors ---------------------------------


@dataclass
class LossHessian:
    """``v -> H v`` on flat vectors, ``H`` the Hessian of the mean cross-entropy of a model on one
    batch with respect to the weights ``names`` (all flattened and concatenated, in that order).
    ``device`` is where the weights live: the vectors it takes and returns live there too."""

    names: list[str]
    shapes: list[torch.Size]
    product: Callable[[Sequence[Tensor]], list[Tensor]]
    dtype: torch.dtype
    device: torch.device = torch.device("cpu")

    @property
    def size(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes)

    def split(self, flat: Tensor) -> list[Tensor]:
        return [part.view(shape) for part, shape in zip(flat.split([math.prod(s) for s in self.shapes]), self.shapes)]

    def __call__(self, flat: Tensor) -> Tensor:
        return torch.cat([part.reshape(-1) for part in self.product(self.split(flat))])


def _detached_weights(model: nn.Module, parameters: dict[str, Tensor] | None, names: list[str] | None
                      ) -> tuple[list[str], list[Tensor], dict[str, Tensor]]:
    """The named weights as fresh leaves to differentiate in, and every other tensor the forward pass reads."""
    names = list(names) if names is not None else prunable_weight_names(model)
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    tensors.update(parameters or {})
    missing = [name for name in names if name not in tensors]
    if missing:
        raise KeyError(f"no parameter named {missing[0]!r} in the model")
    weights = [tensors[name].detach().clone().requires_grad_(True) for name in names]
    others = {name: tensor.detach() for name, tensor in tensors.items() if name not in names}
    return names, weights, others


def _operator(names: list[str], weights: list[Tensor], product, fallback: torch.device) -> LossHessian:
    return LossHessian(names, [w.shape for w in weights], product, weights[0].dtype if weights else torch.float32,
                       weights[0].device if weights else fallback)


def loss_hessian(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    parameters: dict[str, Tensor] | None = None,
    names: list[str] | None = None,
) -> LossHessian:
    """The Hessian operator of ``cross_entropy(model(x), y)`` at ``parameters`` (default: the
    model's own parameters and buffers; e.g. ``mask.masked_parameters(model)``).

    The loss runs through ``torch.func.functional_call`` on detached copies of the weights, in eval
    mode (dropout off, batch norm on running statistics: a fixed function whose Hessian is
    meaningful), and the model's mode is restored: the model itself is never modified. The whole
    batch's graph is kept between products: for many samples use ``streamed_loss_hessian``."""
    names, weights, others = _detached_weights(model, parameters, names)

    def loss() -> Tensor:
        return functional_cross_entropy(model, {**others, **dict(zip(names, weights))}, x, y)

    with eval_mode(model):
        product = hvp_operator(loss, weights)  # the forward pass happens here, once
    return _operator(names, weights, product, x.device)


def streamed_loss_hessian(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    chunk_size: int = 128,
    parameters: dict[str, Tensor] | None = None,
    names: list[str] | None = None,
) -> LossHessian:
    """The Hessian of the mean cross-entropy over all of (x, y), as ``loss_hessian``, but each
    product walks the samples in chunks of ``chunk_size`` (forward and double backward per chunk):
    memory holds one chunk's graph, whatever the number of samples, at one pass over them per
    product. The mean loss is sum_c (n_c / n) * (mean loss of chunk c), so H v is the chunks'
    products weighted by their sizes: the same as the one-batch product up to float rounding
    (a last partial chunk weighs what it holds)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    names, weights, others = _detached_weights(model, parameters, names)
    total = len(y)

    def product(vector: Sequence[Tensor]) -> list[Tensor]:
        result = [torch.zeros_like(weight) for weight in weights]
        with eval_mode(model):
            for inputs, labels in zip(x.split(chunk_size), y.split(chunk_size)):
                def loss(inputs=inputs, labels=labels) -> Tensor:
                    return functional_cross_entropy(model, {**others, **dict(zip(names, weights))}, inputs, labels)

                for accumulated, part in zip(result, hvp_operator(loss, weights)(vector)):
                    accumulated.add_(part, alpha=len(labels) / total)
        return result

    return _operator(names, weights, product, x.device)


# --- Spectral tools on any symmetric operator ---------------------------------------------------
# Random probes are drawn on the CPU (the same numbers on every device) and moved to the device of
# the operator: its ``device`` attribute (``LossHessian``'s), or the one given, or the CPU.


def operator_device(operator: Callable[[Tensor], Tensor], device: str | torch.device | None = None) -> torch.device:
    """Where ``operator`` takes its vectors: ``device`` if given, else its own ``device``, else the CPU."""
    return torch.device(device if device is not None else getattr(operator, "device", "cpu"))


def rademacher(size: int, generator: torch.Generator, dtype: torch.dtype = torch.float64,
               device: str | torch.device = "cpu") -> Tensor:
    """Independent +-1 entries: the probes of Hutchinson's estimator and SLQ's start vectors
    (lowest variance among probes with E[v v^T] = I). Drawn by the CPU ``generator``, then moved to ``device``."""
    return (torch.randint(0, 2, (size,), generator=generator, device="cpu") * 2 - 1).to(device=device, dtype=dtype)


@dataclass
class Tridiagonal:
    """The Lanczos matrix T = Q^T H Q of one start vector: diagonal ``alphas``, off-diagonal ``betas``."""

    alphas: Tensor
    betas: Tensor

    def matrix(self) -> Tensor:
        return torch.diag(self.alphas) + torch.diag(self.betas, 1) + torch.diag(self.betas, -1)

    def quadrature(self) -> tuple[Tensor, Tensor]:
        """Gauss quadrature nodes (Ritz values) and weights (squared first components of T's
        eigenvectors): sum_j w_j f(theta_j) = q^T f(H) q exactly for polynomials f of degree < 2 steps."""
        nodes, vectors = torch.linalg.eigh(self.matrix())
        return nodes, vectors[0] ** 2


def lanczos(operator: Callable[[Tensor], Tensor], start: Tensor, steps: int) -> Tridiagonal:
    """``steps`` Lanczos iterations from ``start`` with full reorthogonalisation (twice, against
    every earlier vector), which keeps the Ritz values free of the spurious copies that plain
    Lanczos produces in floating point. Stops early when the Krylov space becomes invariant (then
    the Ritz values are exact eigenvalues of H)."""
    if steps < 1:
        raise ValueError("Lanczos needs at least one step")
    basis = torch.zeros(steps, start.numel(), dtype=start.dtype, device=start.device)
    basis[0] = start / start.norm()
    alphas, betas = [], []
    scale = 0.0
    for j in range(steps):
        w = operator(basis[j])
        alpha = torch.dot(w, basis[j])
        alphas.append(alpha)
        w = w - alpha * basis[j] - (betas[-1] * basis[j - 1] if j > 0 else 0.0)
        for _ in range(2):
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = w.norm()
        scale = max(scale, abs(float(alpha)), float(beta))
        if j == steps - 1 or float(beta) <= 1e3 * torch.finfo(start.dtype).eps * max(scale, 1e-300):
            break
        betas.append(beta)
        basis[j + 1] = w / beta

    def as_tensor(values: list[Tensor]) -> Tensor:
        return torch.stack(values) if values else torch.zeros(0, dtype=start.dtype, device=start.device)

    return Tridiagonal(as_tensor(alphas), as_tensor(betas))


def top_eigenvalues(
    operator: Callable[[Tensor], Tensor], size: int, k: int = 1, iterations: int = 20, seed: int = 0,
    dtype: torch.dtype = torch.float64, device: str | torch.device | None = None,
) -> list[float]:
    """The ``k`` largest (algebraic) eigenvalues, largest first, as Ritz values of ``iterations``
    Lanczos steps from a random start: extremal eigenvalues converge first, far faster than power
    iteration (which also finds the largest *magnitude*, not the largest value)."""
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(size, generator=generator, dtype=torch.float64, device="cpu")
    start = start.to(device=operator_device(operator, device), dtype=dtype)
    nodes, _ = lanczos(operator, start, min(iterations, size)).quadrature()
    return nodes.flip(0)[:k].tolist()


def hutchinson_trace(
    operator: Callable[[Tensor], Tensor], size: int, probes: int = 10, seed: int = 0, dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> float:
    """tr(H) ~ mean of v^T H v over Rademacher probes v (unbiased; variance 2 sum_{i!=j} H_ij^2 / probes)."""
    generator = torch.Generator().manual_seed(seed)
    device = operator_device(operator, device)
    total = 0.0
    for _ in range(probes):
        v = rademacher(size, generator, dtype, device)
        total += float(torch.dot(v, operator(v)))
    return total / probes


def row_norms(
    operator: Callable[[Tensor], Tensor], size: int, probes: int = 10, seed: int = 0, dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> Tensor:
    """||H e_i|| for every coordinate i, estimated without forming H: for Rademacher v,
    E[(H v)_i^2] = sum_j H_ij^2 = ||H e_i||^2. A row that is exactly zero (a weight that the loss on
    this batch does not see to second order, e.g. one reading an always-zero pixel or feeding a
    dead unit) gives exactly zero for every probe."""
    generator = torch.Generator().manual_seed(seed)
    device = operator_device(operator, device)
    squares = torch.zeros(size, dtype=torch.float64, device=device)
    for _ in range(probes):
        squares += operator(rademacher(size, generator, dtype, device)).double() ** 2
    return (squares / probes).sqrt()


@dataclass
class SpectralQuadrature:
    """SLQ output: per probe, Lanczos nodes and weights (each probe's weights sum to 1). The
    estimated spectral measure is the average over probes of sum_j w_j delta(lambda - theta_j)."""

    nodes: list[Tensor]
    weights: list[Tensor]

    def moment(self, k: int) -> float:
        """Estimate of tr(H^k) / n."""
        return sum(float((w * t**k).sum()) for t, w in zip(self.nodes, self.weights)) / len(self.nodes)

    def flat(self) -> tuple[Tensor, Tensor]:
        """All nodes and their weights (divided by the number of probes: total mass 1)."""
        return torch.cat(self.nodes).double(), torch.cat(self.weights).double() / len(self.nodes)

    def density(self, grid: Tensor, sigma: float) -> Tensor:
        """Gaussian-smoothed density on ``grid`` (integrates to ~1 when the grid covers the spectrum),
        on the device of the nodes."""
        nodes, weights = self.flat()
        grid = grid.to(device=nodes.device, dtype=torch.float64)
        kernel = torch.exp(-0.5 * ((grid[:, None] - nodes[None, :]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        return kernel @ weights


def spectral_quadrature(
    operator: Callable[[Tensor], Tensor], size: int, steps: int = 100, probes: int = 1, seed: int = 0,
    dtype: torch.dtype = torch.float64, support: Tensor | None = None, device: str | torch.device | None = None,
) -> SpectralQuadrature:
    """Stochastic Lanczos quadrature: for each Rademacher start v (normalised),
    v^T f(H) v ~ sum_j w_j f(theta_j) from ``steps`` Lanczos steps; averaged over ``probes``
    starts, this estimates tr(f(H)) / n, i.e. the spectral density.

    ``support`` (boolean, optional) restricts the start vectors to those coordinates: when the
    other coordinates have exactly zero Hessian rows, H is block-diagonal and this gives the
    spectrum of the live block alone."""
    generator = torch.Generator().manual_seed(seed)
    device = operator_device(operator, device)
    nodes, weights = [], []
    for _ in range(probes):
        start = rademacher(size, generator, dtype, device)
        if support is not None:
            start = start * support.to(device=device, dtype=dtype)
        node, weight = lanczos(operator, start, min(steps, size)).quadrature()
        nodes.append(node)
        weights.append(weight)
    return SpectralQuadrature(nodes, weights)


def sharpness(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    parameters: dict[str, Tensor] | None = None,
    names: list[str] | None = None,
    iterations: int = 20,
    probes: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """{"top_eigenvalue": ..., "trace": ...} of the Hessian of the mean cross-entropy on (x, y) with respect to the
    weights `names` (default: pruning.models.prunable_weight_names(model)), evaluated at `parameters`
    (default: the model's own; a dict as for torch.func.functional_call, e.g. Mask.masked_parameters(model)).

    The top eigenvalue comes from ``iterations`` Lanczos steps, the trace from ``probes``
    Hutchinson probes; the model is left untouched."""
    hessian = loss_hessian(model, x, y, parameters, names)
    top = top_eigenvalues(hessian, hessian.size, 1, iterations, seed, hessian.dtype)[0]
    trace = hutchinson_trace(hessian, hessian.size, probes, seed, hessian.dtype)
    return {"top_eigenvalue": top, "trace": trace}
