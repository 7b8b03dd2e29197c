"""Dataset registry: every dataset the lab can train on, loaded as standardised in-memory tensors.

All datasets are small enough to hold in memory, so a :class:`Dataset` is just four tensors
plus class names; training code slices batches from them directly (no DataLoader needed).
``mnist-5k`` (bundled with the repo) and ``digits`` (bundled with scikit-learn) always work
offline; ``mnist``, ``fashion-mnist`` and ``cifar10`` are read by torchvision's own loaders
from :func:`data_root` and raise :class:`DataUnavailableError` when their files are missing,
because nothing may be downloaded at run time.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pruning.errors import BadInputError

REPO_ROOT = Path(__file__).resolve().parent.parent
MNIST_5K_FILE = REPO_ROOT / "data" / "mnist_5k.npz"
DIGIT_NAMES = tuple(str(d) for d in range(10))


class DataUnavailableError(RuntimeError):
    """A dataset that needs a download is not on disk; the message says what to fetch and where to put it."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset: float32 images (N, C, H, W) standardised with the training split's
    per-channel mean/std, int64 labels.

    Instances are cached and shared between callers (see :func:`load_dataset`): treat the
    tensors as read-only and copy (``x.clone()``) before changing them in place.
    ``mean``/``std`` are the per-channel statistics used, so images can be shown un-standardised.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device: str | torch.device) -> Dataset:
        """The same dataset with its tensors on ``device`` (itself when already there)."""
        device = torch.device(device)
        if self.x_train.device == device:
            return self
        return replace(self, **{name: getattr(self, name).to(device) for name in ("x_train", "y_train", "x_test", "y_test")})


@dataclass(frozen=True)
class DatasetInfo:
    """What the UI shows about a dataset before loading it."""

    name: str
    description: str
    needs_download: bool


def data_root() -> Path:
    """Where torchvision datasets live: ``$PRUNING_DATA_DIR`` or the git-ignored ``<repo>/data/torchvision``."""
    env = os.environ.get("PRUNING_DATA_DIR")
    return Path(env).expanduser() if env else REPO_ROOT / "data" / "torchvision"


# --- raw loaders: return (x_train, y_train, x_test, y_test, class_names); images (N, C, H, W) are
# uint8 0..255 (kept compact in the cache, scaled in _load) or float already in [0, 1] ---

Raw = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, tuple[str, ...]]


def _load_mnist_5k(root: Path) -> Raw:
    """The bundled 5,000-digit MNIST subset (see data/README.md and scripts/make_mnist5k.py)."""
    if not MNIST_5K_FILE.is_file():
        raise DataUnavailableError(
            f"The bundled file {MNIST_5K_FILE} is missing; rebuild it with: python scripts/make_mnist5k.py"
        )
    with np.load(MNIST_5K_FILE) as f:
        x_train, y_train, x_test, y_test = (torch.from_numpy(f[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
    return x_train.unsqueeze(1), y_train.long(), x_test.unsqueeze(1), y_test.long(), DIGIT_NAMES


def _load_digits(root: Path) -> Raw:
    """scikit-learn's 8x8 digits (pixel values 0..16), stratified 80/20 split with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.images.astype(np.float32) / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(x, bunch.target, test_size=0.2, stratify=bunch.target, random_state=0)
    x_tr, x_te = torch.from_numpy(x_tr).unsqueeze(1), torch.from_numpy(x_te).unsqueeze(1)
    return x_tr, torch.from_numpy(y_tr).long(), x_te, torch.from_numpy(y_te).long(), DIGIT_NAMES


def _cifar10_class():
    """torchvision's CIFAR10 with the md5 checks replaced by presence checks.

    torchvision verifies the md5 of every batch file on each load: that rereads about 180 MB
    every time and makes it impossible to test the real loading code on small files. The
    archive's md5 is still verified when torchvision downloads it, so checking that the
    extracted files exist is enough here. Passing ``None`` as the md5 makes torchvision's own
    ``check_integrity`` test presence only; all of torchvision's loading code is kept.
    """
    from torchvision.datasets import CIFAR10

    class PresentCIFAR10(CIFAR10):
        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    return PresentCIFAR10


def _missing(display: str, torchvision_class: str, folder: Path, files: list[str], root: Path) -> DataUnavailableError:
    return DataUnavailableError(
        f"The {display} dataset is not on disk: expected {', '.join(files)} in the folder {folder}. "
        f"Nothing is downloaded at run time. On a machine with internet run once: python -c 'import torchvision; "
        f'torchvision.datasets.{torchvision_class}("{root}", download=True)\' '
        f"then copy that folder here, or set PRUNING_DATA_DIR to a folder that holds it."
    )


def _torchvision_loader(display: str, class_name: str) -> Callable[[Path], Raw]:
    """A raw loader reading an MNIST-like or CIFAR dataset with torchvision (download=False)."""

    def load(root: Path) -> Raw:
        import torchvision.datasets as tvd

        if class_name == "CIFAR10":
            cls = _cifar10_class()
            folder = root / cls.base_folder
            files = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        else:
            cls = getattr(tvd, class_name)
            folder = root / class_name / "raw"
            files = [Path(name).stem for name, _ in cls.resources]  # torchvision reads them un-gzipped
        try:
            splits = [cls(str(root), train=train, download=False) for train in (True, False)]
        except RuntimeError as e:  # torchvision's "Dataset not found": its files are not all there
            raise _missing(display, class_name, folder, files, root) from e

        names = DIGIT_NAMES if class_name == "MNIST" else tuple(splits[0].classes)
        (x_train, y_train), (x_test, y_test) = (_tensors(ds) for ds in splits)
        return x_train, y_train, x_test, y_test, names

    return load


def _tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, H, W) and int64 labels from a torchvision dataset's ``data``/``targets``:
    MNIST-like ones hold a (N, H, W) tensor, CIFAR a (N, H, W, C) numpy array and a list."""
    data = torch.as_tensor(np.asarray(ds.data))
    data = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2).contiguous()
    return data, torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)


_DOWNLOAD = " (needs a one-time torchvision download)."
DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("mnist-5k", "5,000 real MNIST digits, 28x28 (4,000 train / 1,000 test); bundled.", False),
        DatasetInfo("digits", "scikit-learn's 1,797 small 8x8 handwritten digits (80/20 split); bundled.", False),
        DatasetInfo("mnist", "Full MNIST: 60,000 + 10,000 handwritten digits, 28x28" + _DOWNLOAD, True),
        DatasetInfo("fashion-mnist", "Fashion-MNIST: 70,000 28x28 grey images of 10 clothing types" + _DOWNLOAD, True),
        DatasetInfo("cifar10", "CIFAR-10: 60,000 32x32 colour photos of 10 object classes" + _DOWNLOAD, True),
    )
}
_LOADERS: dict[str, Callable[[Path], Raw]] = {
    "mnist-5k": _load_mnist_5k,
    "digits": _load_digits,
    "mnist": _torchvision_loader("MNIST", "MNIST"),
    "fashion-mnist": _torchvision_loader("Fashion-MNIST", "FashionMNIST"),
    "cifar10": _torchvision_loader("CIFAR-10", "CIFAR10"),
}


def dataset_names() -> list[str]:
    """Registry order; the first one is the default."""
    return list(DATASETS)


def _check_ratio(ratio) -> float:
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise BadInputError(f"The imbalance ratio must be a number >= 1, got {ratio!r}.") from None
    if not math.isfinite(value) or value < 1:
        raise BadInputError(f"The imbalance ratio must be a finite number >= 1 (1 = balanced), got {ratio!r}.")
    return value


def make_long_tailed(y: torch.Tensor, ratio: float, num_classes: int, seed: int) -> torch.Tensor:
    """Indices (sorted) of a long-tailed subset of labels ``y``: class c keeps
    ``n_c = round(n_max * ratio ** (-c / (C - 1)))`` samples, so class 0 is the most frequent and
    the last class has ``n_max / ratio``; which samples are kept is drawn with ``seed``.

    ``n_max`` is the smallest class count, so every class can supply its target and the profile
    is exact even when the classes are not perfectly balanced to start with (as in full MNIST).
    ``ratio == 1`` keeps everything. Every class keeps at least one sample.
    """
    ratio = _check_ratio(ratio)
    y = torch.as_tensor(y)
    if ratio == 1 or num_classes < 2:
        return torch.arange(len(y))
    counts = torch.bincount(y, minlength=num_classes)[:num_classes]
    if int(counts.min()) == 0:
        raise BadInputError("Cannot make the training split long-tailed: some class has no samples.")
    n_max = int(counts.min())
    generator = torch.Generator().manual_seed(int(seed))
    keep = []
    for c in range(num_classes):
        n_c = max(1, round(n_max * ratio ** (-c / (num_classes - 1))))
        members = torch.nonzero(y == c).flatten()
        keep.append(members[torch.randperm(len(members), generator=generator)[:n_c]])
    return torch.sort(torch.cat(keep)).values


def _standardise(x_train: torch.Tensor, x_test: torch.Tensor):
    """Scale to [0, 1] floats, then standardise per channel with the training split's statistics
    (also applied to the test split, as a model would see it)."""
    if x_train.dtype == torch.uint8:
        x_train, x_test = x_train.float() / 255, x_test.float() / 255
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (x_train - mean) / std, (x_test - mean) / std, tuple(mean.flatten().tolist()), tuple(std.flatten().tolist())


@functools.lru_cache(maxsize=None)
def _raw(name: str, root: Path) -> Raw:
    """Decoded images before subsampling/standardisation, kept so that new ratios/seeds are cheap."""
    return _LOADERS[name](root)


@functools.lru_cache(maxsize=4)
def _load(name: str, imbalance: float, seed: int, root: Path) -> Dataset:
    x_train, y_train, x_test, y_test, class_names = _raw(name, root)
    if imbalance != 1:
        keep = make_long_tailed(y_train, imbalance, len(class_names), seed)
        x_train, y_train = x_train[keep], y_train[keep]
    x_train, x_test, mean, std = _standardise(x_train, x_test)
    return Dataset(name, x_train, y_train.clone(), x_test, y_test.clone(), class_names, mean, std)


def load_dataset(name: str, imbalance: float = 1.0, seed: int = 0, root: str | Path | None = None) -> Dataset:
    """Load dataset ``name``; ``imbalance`` R > 1 makes the training split long-tailed (see
    :func:`make_long_tailed`, ``seed`` picks the subset), the test split is never changed.

    ``root`` (default :func:`data_root`) only matters for the torchvision datasets.
    Results are cached per (name, imbalance, seed, root) and shared: do not modify their tensors.
    """
    if name not in _LOADERS:
        raise BadInputError(f"Unknown dataset {name!r}; choose one of: {', '.join(dataset_names())}.")
    imbalance = _check_ratio(imbalance)
    folder = Path(root).expanduser() if root is not None else data_root()
    folder = folder.resolve() if DATASETS[name].needs_download else Path(".")  # bundled ones ignore root
    seed = int(seed) if imbalance != 1 else 0  # the seed only picks the long-tailed subset
    return _load(name, imbalance, seed, folder)


@functools.lru_cache(maxsize=4)
def dataset_on(data: Dataset, device: str) -> Dataset:
    """``data`` moved to ``device`` once and shared (datasets compare by identity)."""
    return data.to(device)
