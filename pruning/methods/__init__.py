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
class PruneOutcome:
    """A method's result. ``state_dict`` is None when the method only masks the given weights
    (one-shot pruning); training-time methods return their final weights there."""

    mask: Mask
    state_dict: dict[str, torch.Tensor] | None = None
    history: list[dict] = field(default_factory=list)


class Method:
    name: str = ""
    description: str = ""
    formula: str = ""  # LaTeX, shown with st.latex
    reference: str = ""
    params: tuple[Param, ...] = ()

    def settings(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        return resolve_settings(self.params, overrides)

    def prune(self, model: nn.Module, sparsity: float, settings: dict[str, Any], context: PruneContext) -> PruneOutcome:
        raise NotImplementedError

    def describe(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "params": [param.describe() for param in self.params],
        }


def _registry() -> dict[str, Method]:
    from pruning.methods.oneshot import ONE_SHOT_METHODS

    return {method.name: method for method in ONE_SHOT_METHODS}


METHODS: dict[str, Method] = _registry()


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise BadInputError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def method_names() -> list[str]:
    return list(METHODS)
