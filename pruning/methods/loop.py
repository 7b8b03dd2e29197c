"""The training loop of a method that prunes while it trains: the method supplies its step
(effective weights, mask updates, penalties as ``TrainingHooks``); the run owns the rest (data,
the model it trains, steps per epoch, the shared loop, snapshots when due, the outcome)."""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from pruning.masks import Mask
from pruning.methods.base import Details, PruneOutcome
from pruning.recording import RunRecorder
from pruning.train import Progress, TrainingHooks, steps_per_epoch, train_epochs


class TrainingRun:
    """One run on an experiment: ``model`` is a copy of the trained dense model (``dense``) or,
    with ``from_init``, the experiment's untrained initialisation; ``epochs`` is the whole run's
    length, which spaces the snapshots."""

    def __init__(self, experiment, dense: nn.Module | None, epochs: int, from_init: bool = False,
                 progress: Progress | None = None):
        self.experiment = experiment
        self.data = experiment.load_data()
        self.model = experiment.build_model(self.data) if from_init else copy.deepcopy(dense)
        self.parameters = dict(self.model.named_parameters())
        self.batch_size = experiment.train.batch_size
        self.per_epoch = steps_per_epoch(self.data, self.batch_size)
        self.total_steps = epochs * self.per_epoch
        self.recorder = RunRecorder(self.data, self.per_epoch, self.total_steps)
        self.progress = progress

    def record(self, step: int, mask: Mask, parameters: dict | None = None, phase: str = "") -> None:
        self.recorder.record(step, mask, self.model, parameters, phase=phase)

    def train(self, epochs: int, optimizer: torch.optim.Optimizer, hooks: TrainingHooks, snapshot: Callable,
              scheduler=None, seed_offset: int = 0, step_offset: int = 0, progress: Progress | None = None) -> list[dict]:
        """The shared loop (``train_epochs``) with the method's ``hooks``; after every step the
        method's own ``after_step`` runs, then, when a snapshot is due, ``snapshot(step)`` gives
        ``(mask, parameters, phase)`` to record (``step`` counted over the whole run)."""
        own_after_step = hooks.after_step

        def after_step(step):
            if own_after_step:
                own_after_step(step)
            done = step_offset + step + 1
            if self.recorder.due(done):
                self.record(done, *snapshot(done))

        looped = copy.copy(hooks)
        looped.after_step = after_step
        return train_epochs(self.model, self.data, epochs, self.batch_size, optimizer, seed=self.experiment.seed + seed_offset,
                            scheduler=scheduler, hooks=looped, progress=progress or self.progress)

    def outcome(self, mask: Mask, details: Details | None = None, state_dict: dict | None = None,
                accuracy_before_finetune: float | None = None) -> PruneOutcome:
        """The final weights (default: the model's own, copied), mask, history and snapshots."""
        if state_dict is None:
            state_dict = {name: tensor.detach().clone() for name, tensor in self.model.state_dict().items()}
        return PruneOutcome(mask, state_dict, self.recorder.history, self.recorder.snapshots,
                            accuracy_before_finetune=accuracy_before_finetune, details=details)
