"""The fundamental limit of pruning (Zhang et al., "How Sparse Can We Prune a Deep Network: A
Fundamental Limit Perspective", NeurIPS 2024): predicted from the loss landscape at
the L1-trained weights w*, and measured by one-shot magnitude pruning (LOMP, no fine-tuning).

Prediction. Pruning a fraction p of the smallest weights moves w* by R(p) = ||w* - w^p||_2. Along
an eigendirection of the Hessian with eigenvalue lambda the loss stays within eps of its minimum
up to a distance r with lambda r^2 / 2 = eps, i.e. r^2 = 2 eps / |lambda|; eps is the training loss's
own noise (std of the loss over the training split's batches of 128, as the reference computes it).
The fraction of directions a step of length R can be absorbed by is

    G(R) = sum_lambda rho(lambda) r^2 / (R^2 + r^2) / sum_lambda rho(lambda),

which is 1 at R = 0 and falls to the mass of zero eigenvalues (r = infinity) as R grows. The
predicted limit is the p where the removable fraction equals the removed one, G(R(p)) = p. Flat
directions (small |lambda|, many zero eigenvalues) and small weights (small R) both push it up.

Smoothing. SLQ estimates tr f(H) / n for a smooth f directly by its quadrature, and G is such a
trace (f(lambda) = r^2 / (R^2 + r^2)), so by default G sums over the quadrature nodes: the limit
sigma -> 0 of the smoothed formula. The smoothed density is for display. Smoothing inside G
(``g_sigma``) is an option, but G depends on the spectrum at |lambda| ~ 2 eps / R^2 (about 1e-3 on
mnist-5k), where a trained network's Hessian holds most of its mass: a kernel wider than that moves
mass away from zero and lowers the prediction substantially (bench/RESULTS.md gives the numbers).

Spectrum. rho is that of the Hessian of the mean loss over the whole training split (by default; a
seeded draw of N samples is a setting), as the reference takes it: a Hessian of few samples has a
Gauss-Newton part of rank <= samples x classes and so an artificial null space. Its products are
streamed in chunks of 128 (``streamed_loss_hessian``: memory stays bounded, the product is the
full-batch one). rho is estimated by stochastic Lanczos quadrature; a ~100-step
Lanczos run cannot resolve the (often large) multiplicity of exactly zero eigenvalues, so that mass
is measured directly: weights whose Hessian row ||H e_i|| is (numerically) zero, e.g. those into or
out of units dead on the whole batch, span an exact null space (H is symmetric, so their columns
vanish too and H is block-diagonal). Their fraction is the zero mass; SLQ then runs on the other
coordinates only, and rho = zero mass * delta(0) + (1 - zero mass) * rho_live. Row norms come from
E[(H v)_i^2] = ||H e_i||^2 for Rademacher v (a few products H v, no extra passes per weight).

Actual limit: the largest pruned fraction on the grid (``grid_step``) whose accuracy on the whole test
split is at least the unpruned L1-trained model's minus ``tolerance``. The "paper" preset trains
w* with the reference's L1 recipe (``pruning.methods.lomp.l1_recipe``) and sweeps 1,000 fractions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from pruning.analysis.hessian import row_norms, spectral_quadrature, streamed_loss_hessian
from pruning.cache import load_json_entry, save_json_entry
from pruning.errors import BadInputError
from pruning.experiment import Experiment, variant_path
from pruning.methods.lomp import PAPER_L1_EPOCHS, l1_recipe, l1_trained
from pruning.models import prunable_weight_names
from pruning.selection import mask_from_scores
from pruning.train import Progress, evaluate

RESULT_FORMAT = 3


# What the "paper" preset sets where a setting is left unset (None): the reference's sparsity grid
# (1,000 pruned fractions) and Lanczos run (128 steps, one start vector).
PRESET_DEFAULTS = {"quick": {"grid_step": 0.01, "lanczos_steps": 100, "hessian_samples": 1000},
                   "paper": {"grid_step": 0.001, "lanczos_steps": 128, "hessian_samples": 0}}
INTEGER_SETTINGS = ("l1_epochs", "hessian_samples", "hessian_batch", "lanczos_steps", "probes", "row_probes", "bins", "seed")


@dataclass(frozen=True)
class LimitSettings:
    """quick: the experiment's L1 training, a 0.01 grid, 100 Lanczos steps, the Hessian on 1,000
    training samples (minutes on a CPU). paper: the reference's L1 recipe (``l1_recipe``), a 0.001
    grid, 128 Lanczos steps, the Hessian over the whole training split. Both: the Hessian streamed at
    batch 128 and eps over the whole training split at batch 128. Still unlike the reference: the Hessian is in the prunable weights
    (the reference's in every weight and bias), eps from consecutive full batches (the reference's
    from shuffled ones, the last partial included), the actual limit keeps accuracy >= the unpruned
    one's (the reference's >)."""

    preset: str = "quick"  # L1 training recipe (pruning.methods.lomp.l1_recipe); unset settings below take its values
    l1: float = 5e-5  # lambda of LOMP's L1 term (the same default as the lomp method)
    l1_epochs: int = PAPER_L1_EPOCHS  # epochs of the paper recipe's L1 training (quick: the experiment's)
    hessian_samples: int | None = None  # training samples of the Hessian (a seeded draw); 0 = the whole split; None: the preset's
    hessian_batch: int = 128  # chunk of the streamed Hessian products, and the batch whose loss std is eps
    lanczos_steps: int | None = None  # None: the preset's (quick 100, paper 128)
    probes: int = 1  # SLQ start vectors
    row_probes: int = 8  # Rademacher probes for the Hessian row norms (zero mass)
    zero_tolerance: float = 1e-6  # a row counts as zero when ||H e_i|| <= this * the largest row norm
    sigma: float = 1e-3  # Gaussian smoothing of the displayed rho, as a fraction of the spectrum's width
    g_sigma: float = 0.0  # smoothing of rho inside G (same unit); 0: G from the quadrature nodes directly
    bins: int = 4000  # grid points of the density
    grid_step: float | None = None  # pruned fractions of the accuracy sweep: 0, step, ..., <= 0.99; None: the preset's
    tolerance: float = 0.0  # accuracy (a fraction) the actual limit may lose against the unpruned model
    seed: int = 0

    def __post_init__(self):
        if self.preset not in PRESET_DEFAULTS:
            raise BadInputError(f"unknown limit preset {self.preset!r}; choose one of: {', '.join(PRESET_DEFAULTS)}")
        for name, value in PRESET_DEFAULTS[self.preset].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        for item in fields(self):
            if item.name == "preset":
                continue
            try:
                value = float(getattr(self, item.name))
            except (TypeError, ValueError):
                raise BadInputError(f"limit setting {item.name} must be a number, got {getattr(self, item.name)!r}") from None
            if not math.isfinite(value):
                raise BadInputError(f"limit setting {item.name} must be finite")
            if item.name in INTEGER_SETTINGS:
                if value != int(value):
                    raise BadInputError(f"limit setting {item.name} must be a whole number, got {getattr(self, item.name)!r}")
                value = int(value)
            object.__setattr__(self, item.name, value)
        if self.preset == "quick":  # the quick recipe trains the experiment's epochs: one name (and key) per choice
            object.__setattr__(self, "l1_epochs", LimitSettings.l1_epochs)
        if self.l1 < 0:
            raise BadInputError("l1 must be >= 0")
        if min(self.l1_epochs, self.hessian_batch, self.lanczos_steps, self.probes, self.row_probes) < 1 or self.bins < 10:
            raise BadInputError("l1_epochs, hessian_batch, lanczos_steps, probes and row_probes must be >= 1, bins >= 10")
        if self.hessian_samples < 0:
            raise BadInputError("hessian_samples must be >= 0 (0: the whole training split)")
        if not 0 < self.grid_step <= 0.5:
            raise BadInputError("grid_step must be in (0, 0.5]")
        if not 0 <= self.tolerance < 1:
            raise BadInputError("tolerance must be in [0, 1) (a fraction of accuracy)")
        if not 0 <= self.zero_tolerance < 1 or not 0 < self.sigma <= 1 or not 0 <= self.g_sigma <= 1:
            raise BadInputError("zero_tolerance must be in [0, 1), sigma in (0, 1] and g_sigma in [0, 1]")

    @classmethod
    def from_pairs(cls, pairs: dict[str, str]) -> "LimitSettings":
        """Settings from ``KEY=VALUE`` strings (the CLI's ``--set``); unknown keys are user errors."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(pairs) - known)
        if unknown:
            raise BadInputError(f"unknown limit setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return cls(**pairs)

    def to_dict(self) -> dict:
        return asdict(self)


# --- The prediction, as pure functions of a spectrum and the weights ------------------------------


@dataclass
class Spectrum:
    """rho of the live part on ``grid`` (any normalisation; a smoothed density on a grid, or the
    SLQ quadrature itself: nodes and weights) plus the exact-zero mass, and eps."""

    grid: torch.Tensor
    density: torch.Tensor
    zero_mass: float
    eps: float


def removable_fraction(radius, spectrum: Spectrum) -> torch.Tensor:
    """G(R): the fraction of directions that absorb a step of length R within eps of loss, a
    continuous function of R (scalar or tensor). r^2 / (R^2 + r^2) = 2 eps / (2 eps + R^2 |lambda|),
    which is 1 at lambda = 0 and is written this way to stay finite there. On the spectrum's device."""
    radius = torch.as_tensor(radius, dtype=torch.float64, device=spectrum.density.device)
    density = spectrum.density.double().clamp(min=0)
    total = float(density.sum())
    flat = spectrum.grid.double().abs()
    if total <= 0:
        return torch.ones_like(radius)  # no curvature anywhere: every direction is flat
    two_eps = 2.0 * spectrum.eps
    share = two_eps / (two_eps + radius.reshape(-1, 1) ** 2 * flat.reshape(1, -1))
    share = torch.where(torch.isnan(share), torch.ones_like(share), share)  # 0/0 at R = 0, lambda = 0
    live = (share * density).sum(1) / total
    result = spectrum.zero_mass + (1.0 - spectrum.zero_mass) * live
    return result.reshape(radius.shape)


def pruned_distance_squares(weights: torch.Tensor) -> torch.Tensor:
    """R^2 after pruning the k smallest |w|, for k = 0..n (the cumulative sum of sorted squares):
    the distance of one-shot magnitude pruning, as ``mask_from_scores`` prunes round(p n)."""
    squares = weights.detach().double().reshape(-1).square().sort().values
    return torch.cat([torch.zeros(1, dtype=torch.float64, device=squares.device), squares.cumsum(0)])


def radius_at(fractions, squares: torch.Tensor) -> torch.Tensor:
    """R(p) for pruned fractions p, with R^2 cumulated as by ``pruned_distance_squares``."""
    count = squares.numel() - 1
    fractions = torch.as_tensor(fractions, dtype=torch.float64, device=squares.device)
    index = torch.round(fractions * count).long().clamp(0, count)
    return squares[index].sqrt()


def predicted_limit(squares: torch.Tensor, spectrum: Spectrum) -> float:
    """argmin_p |G(R(p)) - p| over every p = k / n. G(R(p)) - p strictly decreases in k (G is
    non-increasing in R, R non-decreasing in p), so bisection finds the first k where it is <= 0;
    the answer is that k or the one before, whichever is closer."""
    count = squares.numel() - 1

    def gap(k: int) -> float:
        return float(removable_fraction(squares[k].sqrt(), spectrum)) - k / count

    low, high = 0, count  # gap(low) > 0 (G(0) = 1), gap(high) <= 0 (G <= 1)
    if gap(low) <= 0:
        return 0.0
    while high - low > 1:
        middle = (low + high) // 2
        if gap(middle) > 0:
            low = middle
        else:
            high = middle
    best = low if abs(gap(low)) < abs(gap(high)) else high
    return best / count


def actual_limit(fractions: list[float], accuracies: list[float], dense_accuracy: float, tolerance: float = 0.0) -> float:
    """The largest pruned fraction whose accuracy is still at least the unpruned model's minus ``tolerance``."""
    kept = [p for p, accuracy in zip(fractions, accuracies) if accuracy >= dense_accuracy - tolerance - 1e-12]
    return max(kept) if kept else 0.0


# --- Measurements on a trained model ------------------------------------------------------------


def loss_noise(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """eps: std of the mean cross-entropy over consecutive training batches of ``batch_size``, at
    the current weights (eval mode), the loss fluctuation that training cannot resolve anyway."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            losses = [nn.functional.cross_entropy(model(xb), yb).item()
                      for xb, yb in zip(x.split(batch_size), y.split(batch_size)) if len(yb) == batch_size]
    finally:
        model.train(was_training)
    return float(torch.tensor(losses, dtype=torch.float64, device="cpu").std()) if len(losses) > 1 else 0.0


def smoothed(nodes: torch.Tensor, weights: torch.Tensor, relative_sigma: float, bins: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Gaussian-smoothed density of the measure sum_j w_j delta(theta_j) on a grid over its range
    (padded by 5 sigma; lambda = 0 added when inside), with sigma = relative_sigma * width; on the nodes' device."""
    width = max(float(nodes.max() - nodes.min()), 1e-12)
    sigma = relative_sigma * width
    grid = torch.linspace(float(nodes.min()) - 5 * sigma, float(nodes.max()) + 5 * sigma, bins, dtype=torch.float64,
                          device=nodes.device)
    if float(grid[0]) < 0 < float(grid[-1]):  # keep lambda = 0 on the grid: there G's weight is exactly 1
        grid = torch.sort(torch.cat([grid, torch.zeros(1, dtype=torch.float64, device=nodes.device)])).values
    kernel = torch.exp(-0.5 * ((grid[:, None] - nodes[None, :]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    return grid, kernel @ weights, sigma


def hessian_spectrum(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: LimitSettings, eps: float,
    names: list[str] | None = None, progress: Progress | None = None,
) -> tuple[Spectrum, Spectrum, dict]:
    """rho at the model's weights on (x, y): zero mass from row norms, SLQ on the live rest, every
    product streamed over (x, y) in chunks of ``settings.hessian_batch``.
    Returns the spectrum G is computed from, the smoothed one for display, and details."""
    hessian = streamed_loss_hessian(model, x, y, settings.hessian_batch, names=names or prunable_weight_names(model))
    size = hessian.size
    products = [0, settings.row_probes + settings.lanczos_steps * settings.probes]  # done, planned

    def counted(vector: torch.Tensor) -> torch.Tensor:
        products[0] += 1
        if progress:
            progress(min(1.0, products[0] / products[1]), f"Hessian product {products[0]}/{products[1]} "
                                                          f"({len(y)} samples)")
        return hessian(vector)

    norms = row_norms(counted, size, settings.row_probes, settings.seed, hessian.dtype, device=hessian.device)
    largest = float(norms.max()) if size else 0.0
    live = norms > settings.zero_tolerance * largest
    zero_mass = 1.0 - float(live.double().mean())
    steps = min(settings.lanczos_steps, max(1, int(live.sum())))
    products[1] = settings.row_probes + steps * settings.probes
    quadrature = spectral_quadrature(counted, size, steps, settings.probes, settings.seed, hessian.dtype, support=live,
                                     device=hessian.device)
    nodes, weights = quadrature.flat()
    grid, density, sigma = smoothed(nodes, weights, settings.sigma, settings.bins)
    if settings.g_sigma > 0:
        for_g = Spectrum(*smoothed(nodes, weights, settings.g_sigma, max(settings.bins, 20000))[:2], zero_mass, eps)
    else:
        for_g = Spectrum(nodes, weights, zero_mass, eps)
    details = {"weights": size, "top_eigenvalue": float(nodes.max()), "bottom_eigenvalue": float(nodes.min()),
               "trace_estimate": quadrature.moment(1) * int(live.sum()), "sigma": sigma, "lanczos_steps": steps,
               "hessian_samples": len(y), "hessian_products": products[0],
               "quadrature_nodes": nodes.tolist(), "quadrature_weights": weights.tolist()}
    return for_g, Spectrum(grid, density, zero_mass, eps), details


@dataclass
class LimitResult:
    """Predicted and actual limit with every curve behind them."""

    experiment: dict
    settings: dict
    predicted: float
    actual: float
    dense_accuracy: float
    fractions: list[float]  # the p grid of the sweep
    radius: list[float]  # R(p)
    removable: list[float]  # G(R(p))
    accuracy: list[float]  # test accuracy of the magnitude-pruned L1-trained model at p
    density_grid: list[float]
    density: list[float]  # rho of the live part, normalised to integrate to 1 - zero_mass
    eps: float
    zero_mass: float
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": RESULT_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, entry: dict) -> "LimitResult":
        return cls(**{key: value for key, value in entry.items() if key != "format"})


def _cache_path(experiment: Experiment, settings: LimitSettings):
    return variant_path(experiment, "limit", {"format": RESULT_FORMAT, **settings.to_dict()}).with_suffix(".json")


def is_limit_cached(experiment: Experiment, settings: LimitSettings) -> bool:
    return _cache_path(experiment, settings).exists()


def fundamental_limit(
    experiment: Experiment, settings: LimitSettings | None = None, progress: Progress | None = None,
    use_cache: bool = True,
) -> LimitResult:
    """Predicted vs actual pruning limit of ``experiment``'s model trained with LOMP's L1 term by
    the preset's recipe.

    The L1-trained model is cached by the lomp method, the result here as JSON per settings."""

    settings = settings or LimitSettings()
    path = _cache_path(experiment, settings)
    entry = load_json_entry(path) if use_cache else None
    if entry is not None:
        try:
            return LimitResult.from_json(entry)
        except (ValueError, TypeError, KeyError):
            pass  # an unreadable entry is recomputed

    def report(start: float, end: float, label: str) -> Progress | None:
        if progress is None:
            return None
        return lambda fraction, message: progress(start + (end - start) * fraction, f"{label}: {message}")

    data = experiment.load_data()
    recipe = l1_recipe(experiment, settings.preset, settings.l1_epochs)
    trained = l1_trained(experiment, settings.l1, progress=report(0.0, 0.4, "L1 training"), recipe=recipe)
    model = trained.model
    model.eval()
    names = prunable_weight_names(model)
    weights = dict(model.named_parameters())
    magnitudes = {name: weights[name].detach().abs() for name in names}
    # Sweep: accuracy of the magnitude-pruned model at each p, through functional_call.
    steps = int(math.floor(0.99 / settings.grid_step + 1e-9))
    fractions = [round(i * settings.grid_step, 10) for i in range(steps + 1)]
    dense = evaluate(model, data.x_test, data.y_test, data.num_classes).accuracy
    accuracies = []
    for i, fraction in enumerate(fractions):
        mask = mask_from_scores(magnitudes, fraction, scope="global")
        accuracies.append(evaluate(model, data.x_test, data.y_test, data.num_classes,
                                   parameters=mask.masked_parameters(model)).accuracy)
        if progress:
            progress(0.4 + 0.1 * (i + 1) / len(fractions), f"accuracy sweep: p = {fraction:.3f}")
    # Prediction: eps over the training split, the spectrum over it (or a seeded draw), R(p), G(R(p)).
    eps = loss_noise(model, data.x_train, data.y_train, settings.hessian_batch)
    x, y = data.x_train, data.y_train
    if 0 < settings.hessian_samples < len(y):
        draw = torch.randperm(len(y), generator=torch.Generator().manual_seed(settings.seed), device="cpu")
        draw = draw[: settings.hessian_samples].to(data.device)
        x, y = x[draw], y[draw]
    spectrum, display, details = hessian_spectrum(model, x, y, settings, eps, names,
                                                  progress=report(0.5, 0.98, "Hessian spectrum"))
    squares = pruned_distance_squares(torch.cat([weights[name].detach().reshape(-1) for name in names]))
    radius = radius_at(fractions, squares)
    removable = removable_fraction(radius, spectrum)
    predicted = predicted_limit(squares, spectrum)
    step = display.grid[1:] - display.grid[:-1]
    area = float((display.density[1:] + display.density[:-1]).mul(step).sum() / 2) or 1.0
    result = LimitResult(
        experiment=experiment.to_dict(), settings=settings.to_dict(), predicted=predicted,
        actual=actual_limit(fractions, accuracies, dense, settings.tolerance), dense_accuracy=dense, fractions=fractions,
        radius=radius.tolist(), removable=removable.tolist(), accuracy=accuracies,
        density_grid=display.grid.tolist(), density=(display.density * (1 - display.zero_mass) / area).tolist(),
        eps=eps, zero_mass=spectrum.zero_mass,
        details={**details, "total_norm": float(squares[-1].sqrt()), "test_samples": len(data.y_test),
                 "l1_recipe": asdict(recipe), "l1_history": trained.history},
    )
    if use_cache:
        save_json_entry(result.to_json(), path)
    if progress:
        progress(1.0, "done")
    return result
