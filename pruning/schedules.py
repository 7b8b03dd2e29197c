"""When and how fast sparsity grows: the *when* to a criterion's *what* (the seam torch.ao.pruning
draws between sparsifier and scheduler).

- ``oneshot``: prune once, after training (the trained dense model), at initialisation (then
  train the sparse network), or early (after ``early_epochs``, then keep training).
- ``iterative``: lottery-ticket style (Frankle & Carbin 2019, OpenLTH): from the trained dense
  model, ``rounds`` rounds each removing the same fraction of the remaining weights
  (cumulative ``1 - (1 - s)^(r / rounds)``), rewinding the survivors to their initial weights or
  to those of epoch ``rewind_epoch`` and retraining between rounds.
- ``gradual``: Zhu & Gupta (2017): from the trained dense model, train ``gradual_epochs`` more while
  the sparsity follows ``s_t = s (1 - (1 - t / T)^3)`` (cubic), updated every ``frequency``
  steps over the first 75% of the steps.
- ``gradflow``: the gradient-flow paper's rounds (Lubana & Dick 2021): from initialisation,
  ``rounds`` times train one epoch then prune to the cumulative fraction
  ``k p / (k p + n (1 - p))``, then train the remaining epochs.

Every schedule may end with ``finetune_epochs`` of training with the mask enforced, at a tenth of
the dense learning rate (our choice: fine-tuning a trained network at its initial rate undoes it).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import torch
from torch import nn

from pruning.errors import BadInputError
from pruning.experiment import Experiment, train_dense
from pruning.masks import Mask
from pruning.methods import PruneContext, Snapshot, get_method
from pruning.selection import check_sparsity
from pruning.train import Progress, evaluate, fit

SCHEDULES = ("oneshot", "iterative", "gradual", "gradflow")
PRUNE_AT = ("after", "init", "early")
REWIND_TO = ("init", "epoch")
GRADUAL_RAMP = 0.75


@dataclass(frozen=True)
class Schedule:
    kind: str = "oneshot"
    prune_at: str = "after"  # oneshot
    early_epochs: int = 1  # oneshot with prune_at="early"
    rounds: int = 3  # iterative, gradflow
    rewind_to: str = "init"  # iterative
    rewind_epoch: int = 1  # iterative with rewind_to="epoch"
    gradual_epochs: int = 3  # gradual
    frequency: int = 10  # gradual: steps between mask updates
    finetune_epochs: int = 0

    def __post_init__(self):
        for value, allowed, what in (
            (self.kind, SCHEDULES, "schedule"),
            (self.prune_at, PRUNE_AT, "prune_at"),
            (self.rewind_to, REWIND_TO, "rewind_to"),
        ):
            if value not in allowed:
                raise BadInputError(f"unknown {what} {value!r}; choose one of: {', '.join(allowed)}")
        for name in ("early_epochs", "rounds", "rewind_epoch", "gradual_epochs", "frequency"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.finetune_epochs < 0:
            raise BadInputError(f"finetune_epochs must be >= 0, got {self.finetune_epochs}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def is_live(self) -> bool:
        """One-shot pruning of the trained model with no training afterwards: instant, no button."""
        return self.kind == "oneshot" and self.prune_at == "after" and self.finetune_epochs == 0


def gradflow_fraction(round_index: int, rounds: int, sparsity: float) -> float:
    """Cumulative pruned fraction after round k of n (Lubana & Dick 2021): k p / (k p + n (1 - p))."""
    return round_index * sparsity / (round_index * sparsity + rounds * (1 - sparsity))


def iterative_fraction(round_index: int, rounds: int, sparsity: float) -> float:
    """Cumulative pruned fraction after round r of n when each round removes the same fraction of
    what remains: 1 - (1 - s)^(r / n)."""
    return 1 - (1 - sparsity) ** (round_index / rounds)


def gradual_fraction(step: int, total_steps: int, sparsity: float) -> float:
    """Zhu & Gupta's cubic schedule, s (1 - (1 - t / T)^3), reaching s at 75% of training."""
    ramp = max(1, int(GRADUAL_RAMP * total_steps))
    return sparsity * (1 - (1 - min(step, ramp) / ramp) ** 3)


def sparsity_curve(schedule: Schedule, sparsity: float, dense_epochs: int, steps_per_epoch: int) -> list[dict]:
    """Planned sparsity against training epoch, for a preview plot before anything runs.
    Epoch 0 is the start of the schedule's own training (the trained dense model for
    ``after``/iterative/gradual, initialisation for ``init``/``early``/gradflow)."""
    points = []
    if schedule.kind == "oneshot":
        start = {"after": 0, "init": 0, "early": schedule.early_epochs}[schedule.prune_at]
        train_epochs = 0 if schedule.prune_at == "after" else dense_epochs
        points = [{"epoch": 0, "sparsity": 0.0 if start else sparsity}, {"epoch": start, "sparsity": sparsity}]
        points.append({"epoch": max(start, train_epochs), "sparsity": sparsity})
    elif schedule.kind == "iterative":
        for round_index in range(1, schedule.rounds + 1):
            begin = (round_index - 1) * dense_epochs
            target = iterative_fraction(round_index, schedule.rounds, sparsity)
            points += [{"epoch": begin, "sparsity": target}, {"epoch": begin + dense_epochs, "sparsity": target}]
    elif schedule.kind == "gradual":
        total = schedule.gradual_epochs * steps_per_epoch
        for step in range(0, total + 1, max(1, schedule.frequency)):
            points.append({"epoch": step / steps_per_epoch, "sparsity": gradual_fraction(step, total, sparsity)})
    else:
        points = [{"epoch": 0, "sparsity": 0.0}]
        for round_index in range(1, schedule.rounds + 1):
            points.append({"epoch": round_index, "sparsity": gradflow_fraction(round_index, schedule.rounds, sparsity)})
        points.append({"epoch": max(dense_epochs, schedule.rounds), "sparsity": sparsity})
    offset = len(points) and points[-1]["epoch"]
    if schedule.finetune_epochs:
        points.append({"epoch": offset + schedule.finetune_epochs, "sparsity": sparsity})
    return points


@dataclass
class ScheduleOutcome:
    mask: Mask
    state_dict: dict[str, torch.Tensor]
    history: list[dict]  # {step, epoch, sparsity, accuracy, per_class_recall}
    accuracy_before_finetune: float
    snapshots: list[Snapshot] = field(default_factory=list)  # the mask after each pruning step


PruneFunction = Callable[[nn.Module, float, Mask | None], Mask]  # (model, target sparsity, previous mask) -> mask


def run_schedule(
    experiment: Experiment,
    method_name: str,
    sparsity: float,
    overrides: dict[str, Any] | None,
    schedule: Schedule,
    progress: Progress | None = None,
    dense: nn.Module | None = None,
) -> ScheduleOutcome:
    """Prune ``experiment``'s model with a registry method on ``schedule``. ``dense`` is the
    experiment's trained dense model when the caller already has it (else it is loaded or
    trained); it is never modified: every schedule works on its own copy."""
    method = get_method(method_name)
    settings = method.settings(overrides)
    data = experiment.load_data()

    def prune(model, target, previous=None) -> Mask:
        context = PruneContext(data=data, seed=experiment.seed, previous_mask=previous)
        return method.prune(model, target, settings, context).mask

    return run_pruning_schedule(experiment, prune, sparsity, schedule, progress=progress, dense=dense)


def run_pruning_schedule(
    experiment: Experiment,
    prune: PruneFunction,
    sparsity: float,
    schedule: Schedule,
    progress: Progress | None = None,
    dense: nn.Module | None = None,
) -> ScheduleOutcome:
    """``run_schedule`` with any pruning function (a method's own criterion, e.g. undecayed pruning)."""
    sparsity = check_sparsity(sparsity)
    data = experiment.load_data()
    config = experiment.train
    history: list[dict] = []
    snapshots: list[Snapshot] = []
    steps_per_epoch = -(-len(data.y_train) // config.batch_size)

    def record(model, mask, epoch):
        evaluation = evaluate(model, data.x_test, data.y_test, data.num_classes)
        accuracy, step = evaluation.accuracy, round(epoch * steps_per_epoch)
        history.append({"step": step, "epoch": epoch, "sparsity": mask.sparsity() if mask else 0.0, "accuracy": accuracy,
                        "per_class_recall": evaluation.per_class_recall})
        if mask and (not snapshots or not all(torch.equal(mask[name], snapshots[-1].mask[name]) for name in mask)):
            snapshots.append(Snapshot(step, epoch, Mask({name: keep.clone() for name, keep in mask.items()}), accuracy))

    def report(stage):
        return (lambda fraction, message: progress(fraction, f"{stage}: {message}")) if progress else None

    if schedule.kind == "oneshot" and schedule.prune_at == "after" or schedule.kind in ("iterative", "gradual"):
        if dense is None:
            dense = train_dense(experiment, progress=report("dense training")).model
        model = copy.deepcopy(dense)
    else:
        model = experiment.build_model(data)
    record(model, None, 0)

    if schedule.kind == "oneshot":
        if schedule.prune_at == "early":
            fit(model, data, config, seed=experiment.seed, stop_after_epochs=schedule.early_epochs, progress=report("early training"))
            record(model, None, schedule.early_epochs)
        mask = prune(model, sparsity)
        mask.apply_(model)
        record(model, mask, schedule.early_epochs if schedule.prune_at == "early" else 0)
        if schedule.prune_at != "after":
            remaining = config.epochs - (schedule.early_epochs if schedule.prune_at == "early" else 0)
            fit(model, data, replace(config, epochs=max(1, remaining)), seed=experiment.seed, mask=mask, progress=report("sparse training"))
            record(model, mask, config.epochs)
    elif schedule.kind == "iterative":
        rewind_state = _rewind_state(experiment, data, schedule)
        mask = None
        for round_index in range(1, schedule.rounds + 1):
            mask = prune(model, iterative_fraction(round_index, schedule.rounds, sparsity), previous=mask)
            model.load_state_dict(rewind_state)
            fit(model, data, config, seed=experiment.seed + round_index, mask=mask,
                progress=report(f"round {round_index}/{schedule.rounds}"))
            record(model, mask, round_index * config.epochs)
    elif schedule.kind == "gradual":
        total_steps = schedule.gradual_epochs * steps_per_epoch
        state = {"mask": None}

        def update_mask(step, current_model):
            if step % schedule.frequency or step > GRADUAL_RAMP * total_steps + schedule.frequency:
                return None
            state["mask"] = prune(current_model, gradual_fraction(step, total_steps, sparsity), previous=state["mask"])
            return state["mask"]

        fit(model, data, replace(config, epochs=schedule.gradual_epochs, lr=config.lr / 10), seed=experiment.seed,
            update_mask=update_mask, progress=report("gradual pruning"))
        mask = prune(model, sparsity, previous=state["mask"])  # land exactly on the target
        mask.apply_(model)
        record(model, mask, schedule.gradual_epochs)
    else:  # gradflow
        mask = None
        for round_index in range(1, schedule.rounds + 1):
            fit(model, data, config, seed=experiment.seed + round_index, mask=mask, stop_after_epochs=1,
                progress=report(f"round {round_index}/{schedule.rounds}"))
            mask = prune(model, gradflow_fraction(round_index, schedule.rounds, sparsity), previous=mask)
            mask.apply_(model)
            record(model, mask, round_index)
        remaining = max(1, config.epochs - schedule.rounds)
        fit(model, data, replace(config, epochs=remaining), seed=experiment.seed, mask=mask, progress=report("training to the end"))
        record(model, mask, schedule.rounds + remaining)

    accuracy_before_finetune = history[-1]["accuracy"]
    if schedule.finetune_epochs:
        finetune = replace(config, epochs=schedule.finetune_epochs, lr=config.lr / 10)
        fit(model, data, finetune, seed=experiment.seed + 1000, mask=mask, progress=report("fine-tuning"))
        record(model, mask, history[-1]["epoch"] + schedule.finetune_epochs)
    return ScheduleOutcome(mask=mask, state_dict=model.state_dict(), history=history,
                           accuracy_before_finetune=accuracy_before_finetune, snapshots=snapshots)


def _rewind_state(experiment: Experiment, data, schedule: Schedule) -> dict[str, torch.Tensor]:
    """The weights the survivors are rewound to: initialisation, or epoch k of the dense run
    (recomputed deterministically on the dense run's own learning-rate schedule)."""
    model = experiment.build_model(data)
    if schedule.rewind_to == "epoch":
        fit(model, data, experiment.train, seed=experiment.seed, stop_after_epochs=schedule.rewind_epoch)
    return copy.deepcopy(model.state_dict())



SCHEDULE_INFO = {
    "oneshot": (
        "Prune once. After training: the trained dense model is pruned (no training afterwards unless "
        "fine-tuning is asked). At initialisation: the untrained network is pruned (SNIP-style) and the "
        "sparse network is trained. Early: pruned after a few epochs, then trained on with the mask.",
        r"m = \mathrm{top}_{(1-s)}\big(\mathrm{score}(w_t)\big),\quad t \in \{0,\ k,\ T\}",
        "Lee, Ajanthan & Torr, SNIP, ICLR 2019; Blalock et al., What is the State of Neural Network Pruning?, MLSys 2020.",
    ),
    "iterative": (
        "Lottery-ticket style: from the trained dense model, each round removes the same fraction of the "
        "remaining weights, rewinds the survivors to their initial weights (or to those of an early epoch) "
        "and retrains. Pruned weights stay pruned.",
        r"s_r = 1 - (1 - s)^{r/n},\qquad w \leftarrow m_r \odot w_{\mathrm{rewind}}",
        "Frankle & Carbin, The Lottery Ticket Hypothesis, ICLR 2019; Frankle et al., Linear Mode Connectivity "
        "and the Lottery Ticket Hypothesis, ICML 2020 (rewinding).",
    ),
    "gradual": (
        "Sparsity grows smoothly while the trained model keeps training (at a tenth of its learning rate), "
        "fast at first and slowly near the end, reaching the target at 75% of the steps.",
        r"s_t = s\left(1 - \left(1 - \frac{t}{T}\right)^3\right)",
        "Zhu & Gupta, To prune, or not to prune: exploring the efficacy of pruning for model compression, 2017.",
    ),
    "gradflow": (
        "The gradient-flow paper's early pruning: from initialisation, n rounds of one training epoch "
        "followed by pruning, the cumulative fraction after round k given below, then training to the end.",
        r"p_k = \frac{k\,p}{k\,p + n\,(1 - p)}",
        "Lubana & Dick, A Gradient Flow Framework for Analyzing Network Pruning, ICLR 2021.",
    ),
}
