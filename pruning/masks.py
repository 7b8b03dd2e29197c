"""Masks: which prunable weights are kept (True) and which are pruned (False).

Modelled on OpenLTH's ``Mask``: a plain dict of 0/1 tensors keyed by parameter name
(as in ``state_dict``), validated on the way in, that knows its own sparsity.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pruning.cache import atomic_torch_save
from pruning.errors import BadInputError
from pruning.tensor_files import load_tensor_file


class Mask(dict):
    """``{parameter name: bool tensor}``; True = kept. Accepts bool or 0/1 numeric tensors."""

    def __init__(self, entries=None):
        super().__init__()
        for name, value in dict(entries or {}).items():
            self[name] = value

    def __setitem__(self, name: str, value) -> None:
        value = value if isinstance(value, torch.Tensor) else torch.as_tensor(value, device="cpu")
        if value.dtype != torch.bool:
            if not bool(((value == 0) | (value == 1)).all()):
                raise BadInputError(f"mask entry {name!r} has values other than 0 and 1")
            value = value != 0
        super().__setitem__(name, value.detach())

    @classmethod
    def ones_like(cls, model: nn.Module, names: list[str]) -> "Mask":
        parameters = dict(model.named_parameters())
        return cls({name: torch.ones_like(parameters[name], dtype=torch.bool) for name in names})

    def to(self, device: str | torch.device) -> "Mask":
        """This mask on ``device`` (itself when already there): a mask read from disk is on the
        CPU and must move to the device of its weights before it meets them."""
        device = torch.device(device)
        if all(entry.device == device for entry in self.values()):
            return self
        return Mask({name: entry.to(device) for name, entry in self.items()})

    @property
    def num_weights(self) -> int:
        return sum(entry.numel() for entry in self.values())

    @property
    def num_pruned(self) -> int:
        return self.num_weights - sum(int(torch.count_nonzero(entry)) for entry in self.values())

    def sparsity(self) -> float:
        """Fraction of the masked weights that are pruned."""
        return self.num_pruned / self.num_weights if self else 0.0

    def layer_sparsity(self) -> dict[str, float]:
        return {name: 1.0 - int(torch.count_nonzero(entry)) / entry.numel() for name, entry in self.items()}

    def check_fits(self, model: nn.Module) -> None:
        """Raise a clear error if an entry names no parameter or has the wrong shape."""
        parameters = dict(model.named_parameters())
        for name, entry in self.items():
            if name not in parameters:
                raise BadInputError(f"mask entry {name!r} matches no parameter of the model")
            if tuple(entry.shape) != tuple(parameters[name].shape):
                raise BadInputError(
                    f"mask entry {name!r} has shape {tuple(entry.shape)}, the parameter {tuple(parameters[name].shape)}"
                )

    @torch.no_grad()
    def apply_(self, model: nn.Module) -> nn.Module:
        """Zero the pruned weights of ``model`` in place (and return it)."""
        parameters = dict(model.named_parameters())
        for name, entry in self.items():
            parameters[name].mul_(entry)
        return model

    @torch.no_grad()
    def mask_gradients_(self, model: nn.Module) -> None:
        """Zero the gradients of pruned weights, so momentum never builds up on them."""
        parameters = dict(model.named_parameters())
        for name, entry in self.items():
            if parameters[name].grad is not None:
                parameters[name].grad.mul_(entry)

    def masked_parameters(
        self, model: nn.Module, replacements: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Parameters and buffers of ``model`` (``replacements`` taking the place of some, e.g.
        weights after training-time pruning) with this mask applied, for
        ``torch.func.functional_call``: the model itself is left untouched."""
        tensors = dict(model.named_parameters())
        tensors.update(model.named_buffers())
        tensors.update(replacements or {})
        for name, entry in self.items():
            tensors[name] = tensors[name].detach() * entry
        return tensors

    def save(self, path: str | Path) -> None:
        atomic_torch_save({name: entry.clone() for name, entry in self.items()}, path)

    @classmethod
    def load(cls, path: str | Path) -> "Mask":
        """A mask saved by :meth:`save` or given as a torch or safetensors file of 0/1 tensors."""
        return cls(load_tensor_file(path, "mask"))


def pruned_state_dict(model: nn.Module, mask: Mask) -> dict[str, torch.Tensor]:
    """A plain state_dict (no ``weight_orig``/``weight_mask``) whose pruned weights are exactly 0."""
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    for name, entry in mask.items():
        state[name] = state[name] * entry
    return state
