"""An experiment = the choices that fix a trained dense model, named by a hash of them.

The dense model is trained once per experiment and cached on disk (atomic writes); a cache
file that cannot be read is treated as missing and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from pruning.cache import cache_dir, load_entry, save_entry
from pruning.data import Dataset, dataset_on, load_dataset
from pruning.device import DEVICES, check_device
from pruning.errors import BadInputError
from pruning.models import build_model
from pruning.train import Progress, TrainConfig, fit
from pruning.weights import stored_weights

CACHE_FORMAT = 1


@dataclass(frozen=True)
class Experiment:
    dataset: str = "mnist-5k"
    model: str = "lenet5"
    imbalance: float = 1.0
    seed: int = 0
    train: TrainConfig = TrainConfig()
    weights: str | None = None  # hash of uploaded weights (pruning.weights) used instead of training
    device: str = "cpu"  # where data, models and every computation live (pruning.device); "auto" resolved before

    def __post_init__(self):
        # Equal choices must hash equally: 1 and 1.0 name the same model.
        object.__setattr__(self, "imbalance", float(self.imbalance))
        object.__setattr__(self, "seed", int(self.seed))
        if not 0 <= self.seed < 2**63:
            raise BadInputError(f"seed must be in [0, 2^63), got {self.seed}")
        if self.device not in DEVICES:
            raise BadInputError(f"unknown device {self.device!r}; choose one of: {', '.join(DEVICES)} (resolve 'auto' first)")

    def to_dict(self) -> dict:
        """The choices as a dict (TrainConfig's own: stable cache keys). The device is there only when
        it is not the CPU: a GPU trains to different weights (other kernels, other float sums), so
        its models and runs are cached apart; the CPU keeps the keys it had before devices existed."""
        choices = {**asdict(self), "train": self.train.to_dict()}
        if self.device == "cpu":
            del choices["device"]
        return choices

    def key(self) -> str:
        """Stable name of the trained dense model: a hash of every choice that changes it."""
        choices = {key: value for key, value in self.to_dict().items() if key != "weights" or value is not None}
        text = json.dumps({"format": CACHE_FORMAT, **choices}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def load_data(self) -> Dataset:
        """The dataset, its tensors on the experiment's device."""
        data = load_dataset(self.dataset, imbalance=self.imbalance, seed=self.seed)
        return data if self.device == "cpu" else dataset_on(data, str(check_device(self.device)))

    def build_model(self, data: Dataset | None = None) -> nn.Module:
        """The untrained model, initialised from the experiment's seed on the CPU (the same weights
        on every device), then moved to the experiment's device."""
        data = data or self.load_data()
        torch.manual_seed(self.seed)
        with torch.device("cpu"):  # not the default device of the caller's thread: the same weights everywhere
            model = build_model(self.model, data.input_shape, data.num_classes)
        return model if self.device == "cpu" else model.to(check_device(self.device))


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
    entry = load_entry(path)
    if entry is None:
        return None
    try:
        state, history = entry["state_dict"], list(entry["history"])
        expected = model.state_dict()
        if set(state) != set(expected) or any(state[name].shape != expected[name].shape for name in expected):
            return None
    except Exception:  # any unreadable entry is rebuilt, never trusted
        return None
    model.load_state_dict(state)
    return history


def train_dense(experiment: Experiment, progress: Progress | None = None, use_cache: bool = True) -> DenseModel:
    """The trained dense model of ``experiment``: from the disk cache if there, else trained and
    cached; or, for an experiment on uploaded weights, those weights (never trained)."""
    if experiment.weights is not None:
        model = experiment.build_model()
        model.load_state_dict(stored_weights(experiment))
        model.eval()
        return DenseModel(experiment, model, [], from_cache=True)

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
        save_entry({"experiment": experiment.to_dict(), "state_dict": model.state_dict(), "history": history}, path)
    return DenseModel(experiment, model, history, from_cache=False)


def variant_path(experiment: Experiment, kind: str, choices: dict) -> Path:
    """Cache file of a model trained differently from the dense one (``kind``, e.g. L1-regularised)."""
    text = json.dumps({"experiment": experiment.key(), **choices}, sort_keys=True)
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    return cache_dir() / kind / f"{experiment.dataset}-{experiment.model}-{key}.pt"


def is_cached(experiment: Experiment) -> bool:
    """Whether the dense model is there without training (uploaded weights never train)."""
    return experiment.weights is not None or cached_dense_path(experiment).exists()
