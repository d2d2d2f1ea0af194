"""Stand-in image folders for the paper suite's datasets: their published split sizes, class counts and
typical image sizes, random JPEG content (for timing only: an accuracy on them means nothing).

Each dataset becomes ``ROOT/<name>/{train,test}/<class>/<i>.jpg`` (``sclft``'s ``imagefolder:`` layout), so a
run decodes JPEGs of the size it would decode on the real data. The content is a smooth random pattern plus
noise, which compresses like a photograph (pure noise would be several times larger and slower to decode).

    python scripts/standin_data.py ROOT [--scale 0.01] [--max-size 64] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

# name: (train images, test images, classes, typical (width, height)) — the sizes the paper suite states
# (sclft/configs/bench/paper.yaml); image sizes: CIFAR 32×32; FGVC-Aircraft 1–2 Mpixel (Maji et al. 2013);
# DTD 300×300 to 640×640 (Cimpoi et al. 2014); Oxford-IIIT Pets about 500×375 (Parkhi et al. 2012).
PAPER_DATASETS = {
    "cifar10": (50_000, 10_000, 10, (32, 32)),
    "cifar100": (50_000, 10_000, 100, (32, 32)),
    "fgvc_aircraft": (3_334, 3_333, 100, (1280, 853)),
    "dtd": (1_880, 1_880, 47, (500, 500)),
    "oxford_pets": (3_680, 3_669, 37, (500, 375)),
}


def _image(seed: int, size: tuple[int, int]):
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    coarse = rng.integers(0, 256, (max(2, h // 32), max(2, w // 32), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.int16)
    noisy = np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy)


def _write(job: tuple[str, int, tuple[int, int]]) -> None:
    path, seed, size = job
    _image(seed, size).save(path, quality=90)


def generate(root: str | Path, names: list[str] | None = None, scale: float = 1.0, max_size: int | None = None,
             workers: int | None = None) -> dict[str, dict]:
    """Write the stand-in folders (a finished dataset, marked by ``.complete``, is kept); returns their sizes.
    ``scale`` < 1 keeps that share of every split (at least two images per class); ``max_size`` caps the side."""
    root = Path(root)
    made = {}
    jobs = []
    for name in names or list(PAPER_DATASETS):
        n_train, n_test, classes, (w, h) = PAPER_DATASETS[name]
        if max_size:
            f = min(1.0, max_size / max(w, h))
            w, h = max(8, round(w * f)), max(8, round(h * f))
        sizes = {split: max(2 * classes, round(n * scale)) if scale < 1 else n  # two a class at least
                 for split, n in (("train", n_train), ("test", n_test))}
        made[name] = {**sizes, "classes": classes, "image_size": [w, h], "path": name}
        if (root / name / ".complete").is_file():
            continue
        for split, n in sizes.items():
            for c in range(classes):
                (root / name / split / f"class_{c:03d}").mkdir(parents=True, exist_ok=True)
            jobs += [(str(root / name / split / f"class_{i % classes:03d}" / f"{i:06d}.jpg"),
                      zlib.crc32(f"{name}/{split}/{i}".encode()), (w, h)) for i in range(n)]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        list(pool.map(_write, jobs, chunksize=256))
    for name in made:
        (root / name / ".complete").touch()
    return made


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("root")
    p.add_argument("--scale", type=float, default=1.0, help="share of every split to write (default: all)")
    p.add_argument("--max-size", type=int, default=None, help="cap the image side (px)")
    p.add_argument("--workers", type=int, default=None)
    args = p.parse_args(argv)
    for name, info in generate(args.root, scale=args.scale, max_size=args.max_size, workers=args.workers).items():
        print(f"{name}: {info['train']} train / {info['test']} test, {info['classes']} classes, "
              f"{info['image_size'][0]}×{info['image_size'][1]} px")


if __name__ == "__main__":
    main()
