"""Bring your own weights: a trained state_dict (and optionally a mask) for a registry model.

A weights file is untrusted input. A safetensors file (told by its content, see
``pruning.tensor_files``) holds raw tensors and cannot carry code; a torch file is read with
``torch.load(weights_only=True)``, which unpickles tensors and plain containers only and refuses
anything that would import or call code. Either must be under a size limit
(``PRUNING_MAX_UPLOAD_MB``, default 200); its keys and shapes must be exactly the model's.
Accepted layouts: a plain state_dict, ``{"state_dict": ...}`` (training checkpoints and this
project's cache entries), keys prefixed ``module.`` (DataParallel), and ``torch.nn.utils.prune``'s
``weight_orig`` + ``weight_mask`` pairs (folded into ``weight``).

Registered weights are stored, re-saved as plain tensors, in the cache under a hash of their
content; the experiment names them by that hash, so every cached result of a model built on
uploaded weights is kept apart from the trained ones.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from pruning.cache import cache_dir, load_entry, save_entry
from pruning.errors import BadInputError
from pruning.masks import Mask
from pruning.models import prunable_weight_names
from pruning.tensor_files import check_named, read_tensors

DEFAULT_MAX_UPLOAD_MB = 200
SHOWN_KEYS = 4  # key names quoted in a mismatch message


def max_upload_bytes() -> int:
    try:
        megabytes = float(os.environ.get("PRUNING_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB))
    except ValueError:
        megabytes = DEFAULT_MAX_UPLOAD_MB
    return int(megabytes * 2**20)


def read_bytes(path: str | Path, what: str = "weights") -> bytes:
    """A file's content for :func:`load_tensors`, refusing a missing or oversized file before reading it."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{what} file {str(path)!r} does not exist")
    size = path.stat().st_size
    if size > max_upload_bytes():
        raise BadInputError(f"{what} file {path.name!r} is {size / 2**20:.1f} MB, over the {max_upload_bytes() / 2**20:.0f} MB limit")
    content = path.read_bytes()
    check_named(content, path.name, what)
    return content


def load_tensors(content: bytes, what: str = "weights") -> dict[str, torch.Tensor]:
    """``{name: tensor}`` from a torch or safetensors file's bytes, never running code from it."""
    if len(content) > max_upload_bytes():
        raise BadInputError(f"the {what} file is {len(content) / 2**20:.1f} MB, over the {max_upload_bytes() / 2**20:.0f} MB limit")
    entry = read_tensors(content, what)
    if isinstance(entry, dict) and isinstance(entry.get("state_dict"), dict):
        entry = entry["state_dict"]
    if not isinstance(entry, dict) or not entry:
        raise BadInputError(f"the {what} file holds {type(entry).__name__}, not a state_dict ({{name: tensor}})")
    strange = [str(key) for key, value in entry.items() if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if strange:
        raise BadInputError(f"the {what} file is not a state_dict: {', '.join(strange[:SHOWN_KEYS])} not a tensor")
    if all(key.startswith("module.") for key in entry):
        entry = {key[len("module."):]: value for key, value in entry.items()}
    return _fold_pruning_reparametrisation(entry)


def _fold_pruning_reparametrisation(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``torch.nn.utils.prune`` stores ``X_orig`` and ``X_mask``; the weight is their product."""
    folded = dict(state)
    for key in [key for key in state if key.endswith("_orig")]:
        base = key[: -len("_orig")]
        if f"{base}_mask" in state:
            folded[base] = state[key] * state[f"{base}_mask"]
            del folded[key], folded[f"{base}_mask"]
    return folded


def _names(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:SHOWN_KEYS]) + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")


def check_state_dict(state: dict[str, torch.Tensor], model: nn.Module, model_name: str) -> dict[str, torch.Tensor]:
    """``state`` converted to the model's dtypes and device, if its keys and shapes are exactly the model's
    and its floating values are finite; else one clear message naming the first mismatch."""
    expected = model.state_dict()
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        parts = [f"missing {_names(missing)}"] if missing else []
        parts += [f"unexpected {_names(unexpected)}"] if unexpected else []
        raise BadInputError(f"the weights do not fit model {model_name!r}: {'; '.join(parts)}")
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            raise BadInputError(
                f"the weights do not fit model {model_name!r}: {name} has shape {tuple(state[name].shape)}, "
                f"the model's is {tuple(tensor.shape)}"
            )
        if state[name].is_floating_point() and not bool(torch.isfinite(state[name]).all()):
            raise BadInputError(f"the weights hold NaN or infinite values in {name}")
    return {name: state[name].to(device=tensor.device, dtype=tensor.dtype) for name, tensor in expected.items()}


def check_mask(entries: dict[str, torch.Tensor], model: nn.Module, model_name: str) -> Mask:
    """A mask for ``model``'s prunable weights: keys among them, shapes equal, values 0/1."""
    prunable = {name: tensor for name, tensor in model.state_dict().items() if name in set(prunable_weight_names(model))}
    unknown = set(entries) - set(prunable)
    if unknown:
        raise BadInputError(f"the mask does not fit model {model_name!r}: {_names(unknown)} not among its prunable weights")
    for name, entry in entries.items():
        if entry.shape != prunable[name].shape:
            raise BadInputError(
                f"the mask does not fit model {model_name!r}: {name} has shape {tuple(entry.shape)}, "
                f"the weight's is {tuple(prunable[name].shape)}"
            )
    return Mask(entries)  # Mask refuses values other than 0/1


def uploads_path(model_name: str, digest: str) -> Path:
    return cache_dir() / "uploads" / f"{model_name}-{digest}.pt"


# Weights checked for one CLI run (``use_weights(..., store=False)``): held by this process, never
# written, so a command that then stops on bad input leaves the cache as it was.
_held: dict[tuple[str, str], dict[str, torch.Tensor]] = {}


def use_weights(experiment, weights: bytes, mask: bytes | None = None, store: bool = True):
    """``experiment`` on the given weights (pruned by ``mask`` if given: masked weights set to
    exactly 0) instead of training: checked, named by a hash of the content, and stored in the
    cache (the app: every session and rerun finds them there) or, with ``store=False`` (the CLI),
    held by this process only."""
    # the dataset too: the same file checked against another dataset's input shape is another question
    fitted_to = f"\0{experiment.dataset}/{experiment.model}\0mask\0".encode()
    digest = hashlib.sha256(weights + fitted_to + (mask or b"")).hexdigest()[:16]
    path = uploads_path(experiment.model, digest)
    named = replace(experiment, weights=digest)
    if (experiment.model, digest) in _held or path.exists():  # checked when stored; the app calls this on every rerun
        return named
    data = experiment.load_data()
    model = experiment.build_model(data)
    state = check_state_dict(load_tensors(weights, "weights"), model, experiment.model)
    if mask is not None:
        for name, entry in check_mask(load_tensors(mask, "mask"), model, experiment.model).items():
            state[name] = state[name] * entry.to(state[name].device)
    if store:
        save_entry({"state_dict": state}, path)
    else:
        _held[experiment.model, digest] = state
    return named


def stored_weights(experiment) -> dict[str, torch.Tensor]:
    """The state_dict registered under ``experiment.weights``."""
    if (experiment.model, experiment.weights) in _held:
        return _held[experiment.model, experiment.weights]
    path = uploads_path(experiment.model, experiment.weights)
    entry = load_entry(path)
    if entry is None:
        path.unlink(missing_ok=True)  # a damaged copy: the next use_weights stores them afresh
        raise BadInputError(
            f"the uploaded weights {experiment.weights} are no longer in the cache (cleared or evicted): load them again"
        )
    return entry["state_dict"]
