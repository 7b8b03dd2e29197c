"""When and how fast sparsity grows: the *when* to a criterion's *what* (the seam torch.ao.pruning
draws between sparsifier and scheduler, where each schedule is a small class).

A schedule declares its settings as ``Param``s (the CLI flags and the app's widgets are generated
from them), describes itself, plans its sparsity against training epoch (``curve``) and runs
(``run``) with any pruning function ``prune(model, target, previous_mask) -> Mask``: it never
needs to know which method scores the weights, so this module does not import the methods.

Every schedule may end with ``finetune_epochs`` of training with the mask enforced, at a tenth of
the dense learning rate (our choice: fine-tuning a trained network at its initial rate undoes it).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, Callable

import torch
from torch import nn

from pruning.errors import BadInputError
from pruning.experiment import Experiment, train_dense
from pruning.masks import Mask
from pruning.methods.base import PruneOutcome
from pruning.params import Param, resolve_settings
from pruning.recording import RunRecorder
from pruning.selection import check_sparsity
from pruning.train import Progress, fit, progress_stage, steps_per_epoch

GRADUAL_RAMP = 0.75
FINETUNE = Param("finetune_epochs", "int", 0, "Epochs of training with the mask enforced after pruning, at a tenth of "
                 "the dense learning rate.", min=0, ui_range=(0, 20), label="Fine-tuning epochs (mask enforced)")
ROUNDS = Param("rounds", "int", 3, "Pruning rounds (iterative: each removes the same fraction of what remains; gradflow: "
               "each after one epoch of training).", min=1, ui_range=(1, 10), label="Rounds")

PruneFunction = Callable[..., Mask]  # (model, target sparsity, previous mask=None) -> mask
RoundCallback = Callable[[int, nn.Module, Mask], None]  # (round, model after its training, mask)


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


def rewind_state(experiment: Experiment, data, rewind_to: str, rewind_epoch: int) -> dict[str, torch.Tensor]:
    """The weights survivors are rewound to: initialisation, or epoch k of the dense run
    (recomputed deterministically on the dense run's own learning-rate schedule)."""
    model = experiment.build_model(data)
    if rewind_to == "epoch":
        fit(model, data, experiment.train, seed=experiment.seed, stop_after_epochs=rewind_epoch)
    return copy.deepcopy(model.state_dict())


class Schedule:
    """A schedule with its settings: ``OneShot(prune_at="init")``, ``Iterative(rounds=5)``.
    Settings read as attributes (``schedule.rounds``); two schedules are equal when their kind
    and settings are."""

    kind = ""
    description = ""
    formula = ""  # LaTeX
    reference = ""
    params: tuple[Param, ...] = ()
    from_trained = True  # the run starts from the trained dense model (else from initialisation)

    def __init__(self, **overrides: Any):
        settings = resolve_settings(self.all_params(), overrides, owner=f"the {self.kind} schedule")
        self._items = tuple(settings.items())  # read-only: a schedule is a hashable choice

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self._items)

    @classmethod
    def all_params(cls) -> tuple[Param, ...]:
        return cls.params + (FINETUNE,)

    def __getattr__(self, name: str) -> Any:
        settings = dict(self.__dict__.get("_items", ()))
        if name in settings:
            return settings[name]
        raise AttributeError(f"{type(self).__name__} has no setting {name!r}")

    def __eq__(self, other) -> bool:
        return isinstance(other, Schedule) and (self.kind, self.settings) == (other.kind, other.settings)

    def __hash__(self) -> int:
        return hash((self.kind, self._items))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{key}={value!r}' for key, value in self.settings.items())})"

    def to_dict(self) -> dict:
        return {"kind": self.kind, **self.settings}

    @property
    def is_live(self) -> bool:
        """One-shot pruning of the trained model with no training afterwards: instant, no button."""
        return False

    def curve(self, sparsity: float, dense_epochs: int, steps_per_epoch: int) -> list[dict]:
        """Planned sparsity against training epoch, for a preview plot before anything runs.
        Epoch 0 is the start of the schedule's own training (the trained dense model, or the
        initialisation for schedules that start there)."""
        points = self.plan(sparsity, dense_epochs, steps_per_epoch)
        if self.finetune_epochs:
            points.append({"epoch": points[-1]["epoch"] + self.finetune_epochs, "sparsity": sparsity})
        return points

    def plan(self, sparsity: float, dense_epochs: int, steps_per_epoch: int) -> list[dict]:
        raise NotImplementedError

    def run(self, experiment: Experiment, prune: PruneFunction, sparsity: float, progress: Progress | None = None,
            dense: nn.Module | None = None, on_round: RoundCallback | None = None) -> PruneOutcome:
        """Prune ``experiment``'s model on this schedule with ``prune``. ``dense`` is the trained
        dense model when the caller has it (else it is loaded or trained); it is never modified:
        the schedule works on its own copy. ``on_round`` sees the model after every pruning
        round's training (the loss valley's iterative levels)."""
        sparsity = check_sparsity(sparsity)
        data = experiment.load_data()
        per_epoch = steps_per_epoch(data, experiment.train.batch_size)
        recorder = RunRecorder(data, per_epoch, changes_only=True)

        def report(stage, start=0.0, end=1.0):
            return progress_stage(progress, start, end, f"{stage}: ")

        if self.from_trained:
            if dense is None:
                dense = train_dense(experiment, progress=report("dense training")).model
            model = copy.deepcopy(dense)
        else:
            model = experiment.build_model(data)

        def record(mask, epoch):
            recorder.record(round(epoch * per_epoch), mask, model, epoch=epoch)

        record(None, 0)
        mask = self.prune_and_train(experiment, data, model, prune, sparsity, record, report, on_round)
        before = None  # the accuracy before fine-tuning, where there is one
        if self.finetune_epochs:
            before = recorder.history[-1]["accuracy"]
            config = experiment.train
            finetune = replace(config, epochs=self.finetune_epochs, lr=config.lr / 10)
            fit(model, data, finetune, seed=experiment.seed + 1000, mask=mask, progress=report("fine-tuning"))
            record(mask, recorder.history[-1]["epoch"] + self.finetune_epochs)
        return PruneOutcome(mask, model.state_dict(), recorder.history, recorder.snapshots, accuracy_before_finetune=before)

    def prune_and_train(self, experiment, data, model, prune, sparsity, record, report, on_round) -> Mask:
        """The schedule's own part: prune ``model`` in place to ``sparsity``, training as it
        goes; ``record(mask, epoch)`` after each pruning step. Returns the final mask."""
        raise NotImplementedError


class OneShot(Schedule):
    kind = "oneshot"
    description = (
        "Prune once. After training: the trained dense model is pruned (no training afterwards unless "
        "fine-tuning is asked). At initialisation: the untrained network is pruned (SNIP-style) and the "
        "sparse network is trained. Early: pruned after a few epochs, then trained on with the mask."
    )
    formula = r"m = \mathrm{top}_{(1-s)}\big(\mathrm{score}(w_t)\big),\quad t \in \{0,\ k,\ T\}"
    reference = ("Lee, Ajanthan & Torr, SNIP, ICLR 2019; Blalock et al., What is the State of Neural Network "
                 "Pruning?, MLSys 2020.")
    params = (
        Param("prune_at", "choice", "after", "after: prune the trained model; init: prune at initialisation, then "
              "train; early: prune after early_epochs, then keep training.", choices=("after", "init", "early"),
              label="Prune"),
        Param("early_epochs", "int", 1, "With prune_at = early: epochs of training before pruning (fewer than the "
              "experiment's training epochs).", min=1, ui_range=(1, 20),
              label="Epochs before pruning", only_if=("prune_at", "early")),
    )

    @property
    def from_trained(self) -> bool:
        return self.prune_at == "after"

    @property
    def is_live(self) -> bool:
        return self.prune_at == "after" and self.finetune_epochs == 0

    def plan(self, sparsity, dense_epochs, steps_per_epoch):
        start = self.early_epochs if self.prune_at == "early" else 0
        train_epochs = 0 if self.prune_at == "after" else dense_epochs
        return [{"epoch": 0, "sparsity": 0.0 if start else sparsity}, {"epoch": start, "sparsity": sparsity},
                {"epoch": max(start, train_epochs), "sparsity": sparsity}]

    def prune_and_train(self, experiment, data, model, prune, sparsity, record, report, on_round):
        config, early = experiment.train, self.prune_at == "early"
        if early and self.early_epochs >= config.epochs:
            raise BadInputError(f"pruning early after {self.early_epochs} epochs needs more training epochs than that "
                                f"(the experiment trains {config.epochs})")
        if early:
            fit(model, data, config, seed=experiment.seed, stop_after_epochs=self.early_epochs, progress=report("early training"))
            record(None, self.early_epochs)
        mask = prune(model, sparsity)
        mask.apply_(model)
        record(mask, self.early_epochs if early else 0)
        if self.prune_at != "after":
            remaining = config.epochs - (self.early_epochs if early else 0)
            fit(model, data, replace(config, epochs=max(1, remaining)), seed=experiment.seed, mask=mask,
                progress=report("sparse training"))
            record(mask, config.epochs)
        return mask


class Iterative(Schedule):
    kind = "iterative"
    description = (
        "Lottery-ticket style: from the trained dense model, each round removes the same fraction of the "
        "remaining weights, rewinds the survivors to their initial weights (or to those of an early epoch) "
        "and retrains. Pruned weights stay pruned."
    )
    formula = r"s_r = 1 - (1 - s)^{r/n},\qquad w \leftarrow m_r \odot w_{\mathrm{rewind}}"
    reference = ("Frankle & Carbin, The Lottery Ticket Hypothesis, ICLR 2019; Frankle et al., Linear Mode "
                 "Connectivity and the Lottery Ticket Hypothesis, ICML 2020 (rewinding).")
    params = (
        ROUNDS,
        Param("rewind_to", "choice", "init", "Rewind survivors to their initial weights or to those of an epoch.",
              choices=("init", "epoch"), label="Rewind survivors to"),
        Param("rewind_epoch", "int", 1, "With rewind_to = epoch: the dense run's epoch to rewind to.", min=1, ui_range=(1, 30),
              label="Rewind epoch", only_if=("rewind_to", "epoch")),
    )

    def plan(self, sparsity, dense_epochs, steps_per_epoch):
        points = []
        for round_index in range(1, self.rounds + 1):
            begin, target = (round_index - 1) * dense_epochs, iterative_fraction(round_index, self.rounds, sparsity)
            points += [{"epoch": begin, "sparsity": target}, {"epoch": begin + dense_epochs, "sparsity": target}]
        return points

    def prune_and_train(self, experiment, data, model, prune, sparsity, record, report, on_round):
        rewind = rewind_state(experiment, data, self.rewind_to, self.rewind_epoch)
        mask = None
        for round_index in range(1, self.rounds + 1):
            mask = prune(model, iterative_fraction(round_index, self.rounds, sparsity), previous=mask)
            model.load_state_dict(rewind)
            fit(model, data, experiment.train, seed=experiment.seed + round_index, mask=mask,
                progress=report(f"round {round_index}/{self.rounds}", (round_index - 1) / self.rounds, round_index / self.rounds))
            record(mask, round_index * experiment.train.epochs)
            if on_round:
                on_round(round_index, model, mask)
        return mask


class Gradual(Schedule):
    kind = "gradual"
    description = (
        "Sparsity grows smoothly while the trained model keeps training (at a tenth of its learning rate), "
        "fast at first and slowly near the end, reaching the target at 75% of the steps."
    )
    formula = r"s_t = s\left(1 - \left(1 - \frac{t}{T}\right)^3\right)"
    reference = "Zhu & Gupta, To prune, or not to prune: exploring the efficacy of pruning for model compression, 2017."
    params = (
        Param("gradual_epochs", "int", 3, "Epochs of training while the sparsity grows.", min=1, ui_range=(1, 20),
              label="Epochs while pruning"),
        Param("frequency", "int", 10, "Training steps between two mask updates.", min=1, ui_range=(1, 100),
              label="Steps between mask updates"),
    )

    def plan(self, sparsity, dense_epochs, steps_per_epoch):
        total = self.gradual_epochs * steps_per_epoch
        steps = list(range(0, total + 1, self.frequency))
        steps += [] if steps[-1] == total else [total]  # the last mask lands on the target
        return [{"epoch": step / steps_per_epoch, "sparsity": gradual_fraction(step, total, sparsity)} for step in steps]

    def prune_and_train(self, experiment, data, model, prune, sparsity, record, report, on_round):
        config = experiment.train
        total_steps = self.gradual_epochs * steps_per_epoch(data, config.batch_size)
        state = {"mask": None}

        def update_mask(step, current_model):
            if step % self.frequency or step > GRADUAL_RAMP * total_steps + self.frequency:
                return None
            state["mask"] = prune(current_model, gradual_fraction(step, total_steps, sparsity), previous=state["mask"])
            return state["mask"]

        fit(model, data, replace(config, epochs=self.gradual_epochs, lr=config.lr / 10), seed=experiment.seed,
            update_mask=update_mask, progress=report("gradual pruning"))
        mask = prune(model, sparsity, previous=state["mask"])  # land exactly on the target
        mask.apply_(model)
        record(mask, self.gradual_epochs)
        return mask


class GradFlow(Schedule):
    kind = "gradflow"
    description = (
        "The gradient-flow paper's early pruning: from initialisation, n rounds of one training epoch "
        "followed by pruning, the cumulative fraction after round k given below, then training to the end."
    )
    formula = r"p_k = \frac{k\,p}{k\,p + n\,(1 - p)}"
    reference = "Lubana & Dick, A Gradient Flow Framework for Analyzing Network Pruning, ICLR 2021."
    params = (ROUNDS,)
    from_trained = False

    def plan(self, sparsity, dense_epochs, steps_per_epoch):
        points = [{"epoch": 0, "sparsity": 0.0}]
        points += [{"epoch": k, "sparsity": gradflow_fraction(k, self.rounds, sparsity)} for k in range(1, self.rounds + 1)]
        return points + [{"epoch": max(dense_epochs, self.rounds), "sparsity": sparsity}]

    def prune_and_train(self, experiment, data, model, prune, sparsity, record, report, on_round):
        config, mask = experiment.train, None
        for round_index in range(1, self.rounds + 1):
            fit(model, data, config, seed=experiment.seed + round_index, mask=mask, stop_after_epochs=1,
                progress=report(f"round {round_index}/{self.rounds}", (round_index - 1) / (self.rounds + 1),
                                round_index / (self.rounds + 1)))
            mask = prune(model, gradflow_fraction(round_index, self.rounds, sparsity), previous=mask)
            mask.apply_(model)
            record(mask, round_index)
        remaining = max(1, config.epochs - self.rounds)
        fit(model, data, replace(config, epochs=remaining), seed=experiment.seed, mask=mask, progress=report("training to the end", self.rounds / (self.rounds + 1)))
        record(mask, self.rounds + remaining)
        return mask


SCHEDULES: dict[str, type[Schedule]] = {cls.kind: cls for cls in (OneShot, Iterative, Gradual, GradFlow)}


def make_schedule(kind: str = "oneshot", settings: dict[str, Any] | None = None) -> Schedule:
    """The schedule named ``kind`` with ``settings`` (strings from the CLI are parsed by its Params)."""
    if kind not in SCHEDULES:
        raise BadInputError(f"unknown schedule {kind!r}; choose one of: {', '.join(SCHEDULES)}")
    return SCHEDULES[kind](**(settings or {}))


def schedule_params() -> dict[str, Param]:
    """Every schedule setting by name (the CLI's flags); a name several schedules share
    (``rounds``) appears once."""
    return {param.name: param for cls in SCHEDULES.values() for param in cls.all_params()}
