"""Tests for the dataset registry (pruning/data.py).

The torchvision datasets are exercised through torchvision's real loading code on tiny
files written here in its on-disk formats, so no download is ever needed.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch

from pruning.data import (
    DATASETS,
    Dataset,
    DataUnavailableError,
    data_root,
    dataset_names,
    load_dataset,
    make_long_tailed,
)
from pruning.errors import BadInputError
from tests.tiny_cifar import CIFAR_NAMES, write_tiny_cifar10

DIGITS = tuple(str(d) for d in range(10))


def unstandardise(ds: Dataset, x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)
    return x * std + mean


# ---------------------------------------------------------------- bundled datasets


def test_registry_order_and_info():
    assert dataset_names()[0] == "mnist-5k"
    assert set(dataset_names()) == {"mnist-5k", "digits", "mnist", "fashion-mnist", "cifar10"}
    assert [n for n in dataset_names() if DATASETS[n].needs_download] == ["mnist", "fashion-mnist", "cifar10"]
    assert all(DATASETS[n].name == n and DATASETS[n].description for n in dataset_names())


def test_mnist_5k_split_shapes_and_standardisation():
    ds = load_dataset("mnist-5k")
    assert ds.x_train.shape == (4000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10 and ds.class_names == DIGITS
    assert torch.bincount(ds.y_train).tolist() == [400] * 10
    assert torch.bincount(ds.y_test).tolist() == [100] * 10
    assert abs(ds.x_train.mean().item()) < 1e-4 and abs(ds.x_train.std().item() - 1) < 1e-3
    pixels = unstandardise(ds, ds.x_train)
    assert pixels.min().item() == pytest.approx(0, abs=1e-5) and pixels.max().item() == pytest.approx(1, abs=1e-5)
    assert load_dataset("mnist-5k") is ds  # cached


def test_digits():
    ds = load_dataset("digits")
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10 and ds.class_names == DIGITS
    assert len(ds.y_train) + len(ds.y_test) == 1797 and len(ds.y_test) == 360
    assert abs(ds.x_train.mean().item()) < 1e-4


# ---------------------------------------------------------------- imbalance


@pytest.mark.parametrize("ratio", [2.0, 10.0, 100.0])
def test_imbalance_follows_exponential_profile(ratio):
    ds = load_dataset("mnist-5k", imbalance=ratio, seed=3)
    counts = torch.bincount(ds.y_train, minlength=10).tolist()
    assert counts == [round(400 * ratio ** (-c / 9)) for c in range(10)]
    assert counts[0] == max(counts) == 400
    assert abs(counts[-1] - 400 / ratio) <= 0.5
    assert abs(ds.x_train.mean().item()) < 1e-4 and abs(ds.x_train.std().item() - 1) < 1e-3


def test_imbalance_keeps_test_split_and_picks_seeded_subset():
    full = load_dataset("mnist-5k")
    tail = load_dataset("mnist-5k", imbalance=10, seed=5)
    assert torch.equal(tail.y_test, full.y_test)
    assert torch.allclose(unstandardise(tail, tail.x_test), unstandardise(full, full.x_test), atol=1e-5)
    keep = make_long_tailed(full.y_train, 10, 10, seed=5)
    assert torch.equal(tail.y_train, full.y_train[keep])
    assert torch.allclose(unstandardise(tail, tail.x_train), unstandardise(full, full.x_train[keep]), atol=1e-5)


def test_make_long_tailed_seeds():
    y = torch.arange(10).repeat_interleave(50)
    a, b, c = (make_long_tailed(y, 5.0, 10, seed) for seed in (1, 1, 2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(a, torch.unique(a))  # sorted, no duplicates
    assert torch.equal(make_long_tailed(y, 1.0, 10, 0), torch.arange(500))


def test_make_long_tailed_unequal_classes_uses_smallest_class():
    y = torch.cat([torch.zeros(70), torch.ones(90), torch.full((60,), 2)]).long()
    counts = torch.bincount(y[make_long_tailed(y, 4.0, 3, 0)]).tolist()
    assert counts == [60, 30, 15]


@pytest.mark.parametrize("bad", [0.5, 0, -3, math.nan, math.inf, "lots", None])
def test_bad_imbalance_raises(bad):
    with pytest.raises(BadInputError):
        load_dataset("mnist-5k", imbalance=bad)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(BadInputError) as info:
        load_dataset("imagenet")
    assert all(name in str(info.value) for name in dataset_names())


# ---------------------------------------------------------------- torchvision datasets


@pytest.mark.parametrize(
    "name, folder",
    [("mnist", "MNIST/raw"), ("fashion-mnist", "FashionMNIST/raw"), ("cifar10", "cifar-10-batches-py")],
)
def test_missing_torchvision_files(tmp_path, name, folder):
    with pytest.raises(DataUnavailableError) as info:
        load_dataset(name, root=tmp_path)
    assert str(tmp_path / folder) in str(info.value) and "download=True" in str(info.value)


def test_data_root_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNING_DATA_DIR", str(tmp_path))
    assert data_root() == tmp_path
    with pytest.raises(DataUnavailableError, match=str(tmp_path / "MNIST" / "raw")):
        load_dataset("mnist")
    monkeypatch.delenv("PRUNING_DATA_DIR")
    assert data_root().parts[-2:] == ("data", "torchvision")


def write_idx(path, array: np.ndarray) -> None:
    """IDX format as MNIST ships it: magic 2049 (labels) / 2051 (images), big-endian sizes, uint8 data."""
    magic = 2049 if array.ndim == 1 else 2051
    path.write_bytes(struct.pack(f">{1 + array.ndim}i", magic, *array.shape) + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_like_real_loading(tmp_path, name, folder):
    rng = np.random.default_rng(0)
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    written = {}
    for prefix, n in (("train", 20), ("t10k", 10)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written[prefix] = images, labels

    ds = load_dataset(name, root=tmp_path)
    for (images, labels), x, y in ((written["train"], ds.x_train, ds.y_train), (written["t10k"], ds.x_test, ds.y_test)):
        assert y.tolist() == labels.tolist()
        assert np.array_equal(torch.round(unstandardise(ds, x) * 255).squeeze(1).numpy().astype(np.uint8), images)
    assert ds.input_shape == (1, 28, 28)
    import torchvision

    expected = DIGITS if name == "mnist" else tuple(torchvision.datasets.FashionMNIST.classes)
    assert ds.class_names == expected
    if name == "fashion-mnist":
        assert ds.class_names[0] == "T-shirt/top"


def test_cifar10_real_loading(tmp_path):
    train, (test_data, test_labels) = write_tiny_cifar10(tmp_path)
    ds = load_dataset("cifar10", root=tmp_path)
    assert ds.input_shape == (3, 32, 32) and ds.class_names == tuple(CIFAR_NAMES)
    assert ds.y_train.tolist() == [label for _, labels in train for label in labels]
    assert ds.y_test.tolist() == test_labels
    train_data = np.concatenate([data for data, _ in train])
    for x, data in ((ds.x_train, train_data), (ds.x_test, test_data)):
        pixels = torch.round(unstandardise(ds, x) * 255).numpy().astype(np.uint8)
        assert np.array_equal(pixels, data.reshape(-1, 3, 32, 32))
    assert len(ds.mean) == 3 and abs(ds.x_train.mean(dim=(0, 2, 3))).max().item() < 1e-4
