"""An experiment = the choices that fix a trained dense model, named by a hash of them.

The dense model is trained once per experiment and cached on disk (atomic writes); a cache
file that cannot be read is treated as missing and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from pruning.data import Dataset, load_dataset
from pruning.errors import BadInputError
from pruning.masks import atomic_torch_save
from pruning.models import build_model
from pruning.train import Progress, TrainConfig, fit

CACHE_FORMAT = 1


@dataclass(frozen=True)
class Experiment:
    dataset: str = "mnist-5k"
    model: str = "lenet5"
    imbalance: float = 1.0
    seed: int = 0
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        # Equal choices must hash equally: 1 and 1.0 name the same model.
        object.__setattr__(self, "imbalance", float(self.imbalance))
        object.__setattr__(self, "seed", int(self.seed))
        if not 0 <= self.seed < 2**63:
            raise BadInputError(f"seed must be in [0, 2^63), got {self.seed}")

    def to_dict(self) -> dict:
        return asdict(self)

    def key(self) -> str:
        """Stable name of the trained dense model: a hash of every choice that changes it."""
        text = json.dumps({"format": CACHE_FORMAT, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def load_data(self) -> Dataset:
        return load_dataset(self.dataset, imbalance=self.imbalance, seed=self.seed)

    def build_model(self, data: Dataset | None = None) -> nn.Module:
        """The untrained model, initialised from the experiment's seed."""
        data = data or self.load_data()
        torch.manual_seed(self.seed)
        return build_model(self.model, data.input_shape, data.num_classes)


def cache_dir() -> Path:
    """``PRUNING_CACHE_DIR`` or ``.cache/pruning`` in the repository (git-ignored)."""
    default = Path(__file__).resolve().parent.parent / ".cache" / "pruning"
    return Path(os.environ.get("PRUNING_CACHE_DIR", default))


@dataclass
class DenseModel:
    experiment: Experiment
    model: nn.Module
    history: list[dict]
    from_cache: bool


def cached_dense_path(experiment: Experiment) -> Path:
    return cache_dir() / "dense" / f"{experiment.dataset}-{experiment.model}-{experiment.key()}.pt"


def _read_cache(path: Path, model: nn.Module) -> list[dict] | None:
    """The history stored with the weights, after loading them into ``model``; None, with
    ``model`` untouched, if the file is missing, truncated, corrupt or does not fit the model."""
    if not path.exists():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        state, history = entry["state_dict"], list(entry["history"])
        expected = model.state_dict()
        if set(state) != set(expected) or any(state[name].shape != expected[name].shape for name in expected):
            return None
    except Exception:  # any unreadable entry is rebuilt, never trusted
        return None
    model.load_state_dict(state)
    return history


def train_dense(experiment: Experiment, progress: Progress | None = None, use_cache: bool = True) -> DenseModel:
    """The trained dense model of ``experiment``: from the disk cache if there, else trained and cached."""

    def train(model, data):
        return fit(model, data, experiment.train, seed=experiment.seed, progress=progress)

    return train_cached(experiment, cached_dense_path(experiment), train, use_cache)


def train_cached(experiment: Experiment, path: Path, train, use_cache: bool = True) -> DenseModel:
    """A model of ``experiment`` trained from its initialisation by ``train(model, data) -> history``,
    read from ``path`` if a good copy is there, else trained and written there atomically."""
    data = experiment.load_data()
    model = experiment.build_model(data)
    if use_cache:
        history = _read_cache(path, model)
        if history is not None:
            model.eval()
            return DenseModel(experiment, model, history, from_cache=True)
    history = train(model, data)
    model.eval()
    if use_cache:
        atomic_torch_save(
            {"experiment": experiment.to_dict(), "state_dict": model.state_dict(), "history": history}, path
        )
    return DenseModel(experiment, model, history, from_cache=False)


def variant_path(experiment: Experiment, kind: str, choices: dict) -> Path:
    """Cache file of a model trained differently from the dense one (``kind``, e.g. L1-regularised)."""
    text = json.dumps({"experiment": experiment.key(), **choices}, sort_keys=True)
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    return cache_dir() / kind / f"{experiment.dataset}-{experiment.model}-{key}.pt"


def is_cached(experiment: Experiment) -> bool:
    return cached_dense_path(experiment).exists()
