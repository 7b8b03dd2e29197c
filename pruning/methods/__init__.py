"""Pruning methods: the registry the app's method picker and the CLI's ``--method`` read.

A method declares its hyperparameters once (``params``); adding a method is adding one
module and one registry entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pruning.errors import BadInputError
from pruning.masks import Mask
from pruning.params import Param, resolve_settings


@dataclass
class PruneContext:
    """What a method may use besides the model: the data (for data-driven criteria), the seed,
    how many samples per class make the scoring batch, and the current mask (iterative criteria
    such as SynFlow score the network as already pruned)."""

    data: Any
    seed: int = 0
    samples_per_class: int = 10
    mask: Mask | None = None
    previous_mask: Mask | None = None  # set by iterative schedules: what is pruned stays pruned


@dataclass
class Snapshot:
    """The mask of a training-time method at one step of its run, with the test accuracy then."""

    step: int
    epoch: float
    mask: Mask
    accuracy: float
    phase: str = ""


@dataclass
class PruneOutcome:
    """A method's result. ``state_dict`` is None when the method only masks the given weights
    (one-shot pruning); training-time methods return their final weights there, the run's
    ``history`` (``{step, epoch, sparsity, accuracy, ...}``), mask ``snapshots`` to scrub
    through, and method-specific scalars in ``extras`` (DNS's ``spliced_total``)."""

    mask: Mask
    state_dict: dict[str, torch.Tensor] | None = None
    history: list[dict] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)


class Method:
    name: str = ""
    description: str = ""
    formula: str = ""  # LaTeX, shown with st.latex
    reference: str = ""
    params: tuple[Param, ...] = ()
    trains: bool = False  # True: the method runs its own training (``TrainingMethod``)
    target_sparsity: bool = True  # False: sparsity emerges from the hyperparameters (DNS, gRDA)

    def settings(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        return resolve_settings(self.params, overrides)

    def prune(self, model: nn.Module, sparsity: float, settings: dict[str, Any], context: PruneContext) -> PruneOutcome:
        raise NotImplementedError

    def describe(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "trains": self.trains,
            "target_sparsity": self.target_sparsity,
            "params": [param.describe() for param in self.params],
        }


class TrainingMethod(Method):
    """A method that prunes while it trains, on its own schedule (schedules and fine-tuning
    options do not apply). ``train`` gets the experiment's trained dense model (never
    modified: methods that start from it copy it) and returns the final weights, mask,
    history and snapshots."""

    trains = True

    def prune(self, model, sparsity, settings, context):
        raise BadInputError(f"{self.name} prunes while it trains: run it on an experiment (run_prune), not one-shot")

    def train(self, experiment, dense: nn.Module, sparsity: float | None, settings: dict[str, Any],
              progress=None) -> PruneOutcome:
        raise NotImplementedError


def _registry() -> dict[str, Method]:
    from pruning.methods.oneshot import ONE_SHOT_METHODS
    from pruning.methods.training import TRAINING_METHODS

    return {method.name: method for method in (*ONE_SHOT_METHODS, *TRAINING_METHODS)}


METHODS: dict[str, Method] = _registry()


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise BadInputError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def method_names() -> list[str]:
    return list(METHODS)
