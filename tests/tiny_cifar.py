"""Tiny CIFAR-10 files written by the tests (nothing is downloaded)."""

import pickle
from pathlib import Path

import numpy as np

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_tiny_cifar10(root: Path, seed: int = 1) -> tuple[list, tuple]:
    """CIFAR-10's python files (``cifar-10-batches-py``: five training batches of 4 random images,
    a test batch of 10, the label names) under ``root``, as torchvision reads them; returns the
    training batches [(uint8 rows, labels)] and the test batch (rows: R plane, G plane, B plane)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(filename, n, offset):
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        labels = [(offset + i) % 10 for i in range(n)]
        with open(folder / filename, "wb") as f:
            pickle.dump({"batch_label": filename, "data": data, "labels": labels}, f, protocol=2)
        return data, labels

    train = [batch(f"data_batch_{i}", 4, 4 * i) for i in range(1, 6)]  # 20 training images
    test = batch("test_batch", 10, 3)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_NAMES, "num_vis": 3072}, f, protocol=2)
    return train, test
