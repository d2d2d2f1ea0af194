"""Classify new images with a trained model, as timm's ``inference.py`` does: files, folders (walked
recursively) or ``.txt`` lists of paths → the model's eval transform → top-k class names and probabilities.

>>> model = sclft.load("runs/demo")
>>> model.predict(["cat.jpg", pil_image], top_k=3)   # [{"label": [...], "prob": [...], "index": [...]}, ...]
>>> rows, skipped = predict_files(model, gather_images(["photos/"]), top_k=3)
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader

from .config import PRECISIONS
from .data.imagefolder import IMAGE_EXTENSIONS
from .devices import resolve_device
from .errors import MissingFileError, UsageError
from .preprocess import load_image, to_rgb, upright
from .progress import progress_bar

log = logging.getLogger("sclft.predict")

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # the mixed ones of config.PRECISIONS
LIST_SUFFIX = ".txt"  # a file of paths, one a line (relative ones resolve against the list's folder)


class NoImagesError(UsageError):
    """The inputs hold no image file (an empty folder, a list with no paths): nothing to predict."""


@dataclass
class Inputs:
    """Image files found in the inputs, in order (duplicates kept once), and the inputs that named none."""

    files: list[Path] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)  # folders / lists with no image file


def gather_images(inputs: Iterable[str | Path]) -> Inputs:
    """Image files in ``inputs``: a file as given (whatever its suffix: a damaged or misnamed file is found
    out when it is read), a folder walked recursively (sorted; files with an image suffix of Pillow's, hidden
    ones left out), a ``.txt`` file read as one path per line (``#`` comments and blank lines skipped).
    A path that does not exist is a :class:`FileNotFoundError`; when nothing is found, :class:`NoImagesError`."""
    found = Inputs()
    seen: set[Path] = set()

    def add(path: Path) -> None:
        if path not in seen:
            seen.add(path)
            found.files.append(path)

    given = [Path(p) for p in inputs]
    if not given:
        raise NoImagesError("no input: pass image files, folders or .txt lists of image paths")
    for path in given:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not files:
                found.empty.append(f"{path} (a folder with no image file)")
            for f in files:
                add(f)
        elif path.is_file() and path.suffix.lower() == LIST_SUFFIX:
            listed = _read_list(path)
            if not listed:
                found.empty.append(f"{path} (a list with no path)")
            for f in listed:
                add(f)
        elif path.is_file():
            add(path)
        else:
            raise MissingFileError(f"{path}: no such file or folder (pass image files, folders or .txt lists)")
    if not found.files:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS)[:8])
        raise NoImagesError(f"no image to predict: {'; '.join(found.empty)}; folders are searched recursively for "
                            f"files ending in one of Pillow's image suffixes ({exts}, ...)")
    return found


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"{path}: a .txt input must be a UTF-8 list of image paths, one a line") from None
    paths = [Path(s.strip()) for s in lines if s.strip() and not s.lstrip().startswith("#")]
    missing = [str(p) for p in paths if not (p if p.is_absolute() else path.parent / p).is_file()]
    if missing:
        raise MissingFileError(f"{path}: {len(missing)} listed path(s) are not files: {', '.join(missing[:5])}"
                               f"{' ...' if len(missing) > 5 else ''} (relative paths are read from {path.parent})")
    return [p if p.is_absolute() else path.parent / p for p in paths]


def read_image(path: str | Path) -> Image.Image:
    """``path`` decoded completely, turned upright (EXIF orientation) and as 8-bit RGB
    (:func:`sclft.preprocess.load_image`); a file Pillow cannot decode (not an image, truncated) is a
    ``ValueError`` naming it."""
    try:
        return load_image(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # PIL's decode errors
        raise UsageError(f"{path}: not a readable image ({e})") from None


class _Images(torch.utils.data.Dataset):
    """``(tensor, index)`` per file, ``(None, index)`` for a file that cannot be read (counted, then skipped)."""

    def __init__(self, files: Sequence[Path], transform):
        self.files, self.transform = list(files), transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            return self.transform(read_image(self.files[i])), i, None
        except ValueError as e:
            return None, i, str(e)


def _collate(items):
    good = [(x, i) for x, i, _ in items if x is not None]
    bad = [(i, err) for x, i, err in items if x is None]
    x = torch.stack([x for x, _ in good]) if good else None
    return x, [i for _, i in good], bad


def autocast(device: torch.device, precision: str | None):
    if precision not in PRECISIONS and precision is not None:
        raise UsageError(f"precision {precision!r}: valid: {', '.join(PRECISIONS)}")
    dtype = AUTOCAST_DTYPES.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def topk_rows(logits: torch.Tensor, k: int, class_names: Sequence[str] | None) -> list[dict[str, Any]]:
    """Softmax over the classes, the ``k`` most probable: ``{"index", "label", "prob"}`` lists per row."""
    probs = logits.float().softmax(dim=-1)
    values, indices = probs.topk(min(k, probs.shape[-1]), dim=-1)
    names = list(class_names) if class_names else None
    return [{"index": idx, "label": [names[j] if names else str(j) for j in idx], "prob": val}
            for idx, val in zip(indices.tolist(), values.tolist())]


def _check_top_k(k: int, num_classes: int) -> None:
    if not isinstance(k, int) or k < 1:
        raise UsageError(f"top_k must be a whole number >= 1, got {k!r}")
    if k > num_classes:
        log.warning("top_k %d > %d classes: giving all %d", k, num_classes, num_classes)


@torch.inference_mode()
def predict_files(model, files: Sequence[Path] | Inputs, top_k: int = 5, batch_size: int = 64,
                  device: str | None = None, precision: str | None = None, num_workers: int = 0,
                  progress: bool = True) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Rows ``{"filename", "index", "label", "prob"}`` (top-k, best first) for every readable file, in order,
    and ``(filename, reason)`` for every file that could not be read (skipped)."""
    files = files.files if isinstance(files, Inputs) else list(files)
    if batch_size < 1:
        raise UsageError(f"batch size must be >= 1, got {batch_size}")
    _check_top_k(top_k, model.num_classes)
    dev = resolve_device(device)
    model.to(dev).eval()
    loader = DataLoader(_Images(files, model.transform), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=_collate, pin_memory=dev.type == "cuda")
    rows, skipped = [], []
    with progress_bar(total=len(files), desc="predict", unit="img", progress=progress) as bar:
        for x, indices, bad in loader:
            skipped += [(str(files[i]), err) for i, err in bad]
            if x is not None:
                with autocast(dev, precision):
                    logits = model(x.to(dev, non_blocking=True))
                rows += [{"filename": str(files[i]), **r}
                         for i, r in zip(indices, topk_rows(logits, top_k, model.class_names))]
            bar.update(len(indices) + len(bad))
    return rows, skipped


@torch.inference_mode()
def predict_images(model, images, top_k: int = 5, batch_size: int = 64) -> list[dict[str, Any]]:
    """``TransferModel.predict``: PIL images, paths, or tensors (one ``(3, S, S)`` / a batch ``(N, 3, S, S)``,
    already transformed: ``S`` the run's input size, finite values; else a ``ValueError``) → one top-k row per
    image, on the model's device."""
    _check_top_k(top_k, model.num_classes)
    if isinstance(images, torch.Tensor):
        images = list(images) if images.dim() == 4 else [images]
    elif isinstance(images, (str, Path, Image.Image)):
        images = [images]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = []
    try:
        for start in range(0, len(images), batch_size):
            batch = torch.stack([_as_tensor(model, im) for im in images[start:start + batch_size]])
            rows += topk_rows(model(batch.to(device)), top_k, model.class_names)
    finally:
        model.train(was_training)
    return rows


def _as_tensor(model, image) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        size = tuple(model.backbone.data_config.get("input_size", ()))
        if image.dim() != 3 or (size and tuple(image.shape) != size):
            raise UsageError(f"predict takes transformed image tensors of the run's input size {size} (one, or an "
                             f"(N, {', '.join(map(str, size))}) batch; model.transform makes one from an image), got "
                             f"{tuple(image.shape)}; or pass PIL images or paths")
        if not image.is_floating_point():
            raise UsageError(f"predict: an image tensor of dtype {image.dtype}; expected normalised float values, "
                             "as model.transform makes")
        if not bool(torch.isfinite(image).all()):
            raise UsageError("predict: an image tensor holds NaN or infinite values; expected finite normalised "
                             "values, as model.transform makes")
        return image
    if isinstance(image, (str, Path)):
        image = read_image(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"predict takes PIL images, paths or tensors, got {type(image).__name__}")
    return model.transform(to_rgb(upright(image)))


# ------------------------------------------------------------------------------------------- output
OUT_FORMATS = (".csv", ".json")


def format_rows(rows: Sequence[dict[str, Any]], fmt: str, k: int) -> str:
    """CSV (timm's layout: ``filename, label_0 … label_{k-1}, prob_0 …``; ``index_*`` last) or JSON records."""
    if fmt == ".json":
        return json.dumps(list(rows), indent=2) + "\n"
    k = max([len(r["label"]) for r in rows] or [k])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["filename", *(f"label_{j}" for j in range(k)), *(f"prob_{j}" for j in range(k)),
                     *(f"index_{j}" for j in range(k))])
    for r in rows:
        writer.writerow([r["filename"], *r["label"], *(f"{p:.6g}" for p in r["prob"]), *r["index"]])
    return buf.getvalue()
