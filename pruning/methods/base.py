"""What every pruning method is: the shapes the registry, the schedules and the pipeline share.

A leaf of the methods package (it imports only masks and params), so a method module, the
registry and the pipeline can all build on it without import cycles (OpenLTH's
``pruning/base.py`` draws the same line). A one-shot method scores and masks the given weights
(``Method.prune``); a method that prunes while it trains runs its own training
(``TrainingMethod.train``). Both return the one outcome type, ``PruneOutcome``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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
    """The mask of a run at one step, with the test accuracy then (scrubbed on the Masks page)."""

    step: int
    epoch: float
    mask: Mask
    accuracy: float
    phase: str = ""


@dataclass(frozen=True)
class Details:
    """Numbers only one method has (DNS's splicing counts, gRDA's final threshold): each method
    that has some declares a subclass, so they are named fields, not string keys."""

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class PruneOutcome:
    """What a method or a schedule produces. ``state_dict`` is None when the method only masks
    the given weights (one-shot pruning); methods and schedules that train return their final
    weights, the run's ``history`` (``{step, epoch, sparsity, accuracy, ...}``), mask
    ``snapshots`` to scrub through, the accuracy before their fine-tuning where they have one,
    and their own numbers in ``details``."""

    mask: Mask
    state_dict: dict[str, torch.Tensor] | None = None
    history: list[dict] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    accuracy_before_finetune: float | None = None
    details: Details | None = None


class Method:
    """A pruning method: its name, description, formula (LaTeX) and reference for the picker,
    and its hyperparameters declared once as ``Param``s (the CLI's ``--set`` and the app's
    widgets are generated from them)."""

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
    history and snapshots; ``pruning.methods.loop.TrainingRun`` runs the loop for it."""

    trains = True
    details_type: type[Details] | None = None  # the method's own numbers, read back from a cached run

    def prune(self, model, sparsity, settings, context):
        raise BadInputError(f"{self.name} prunes while it trains: run it on an experiment (run_prune), not one-shot")

    def train(self, experiment, dense: nn.Module, sparsity: float | None, settings: dict[str, Any],
              progress=None) -> PruneOutcome:
        raise NotImplementedError
