"""Image → tensor transforms from a timm-style ``data_config``.

Evaluation (and training with ``augment=False``) is deterministic and resolution-aware:

* an image at least as large as the target side is resized and centre-cropped the timm way
  (shorter side to ``S / crop_pct``, centre crop ``S``), as the backbone was evaluated;
* an image *smaller* than the target (8×8 digits, 28×28 Fashion-MNIST, 32×32 CIFAR at 224 px) is
  upsampled with its shorter side to ``S`` and centre-cropped without the ``crop_pct`` zoom: the
  whole (square) image is kept, since upsampling adds no detail that a crop could focus on and
  small-image datasets put the object edge-to-edge.

``augment=True`` gives timm's standard training augmentation (random-resized crop, horizontal flip,
colour jitter). With ``augment=False`` the train transform *is* the eval transform, which is what
lets the trainer cache frozen features.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image

__all__ = ["build_transforms", "eval_settings"]

Transform = Callable[[Image.Image], Any]


class _ResolutionAware:
    """Use ``small`` for images smaller than ``size`` (shorter side) and ``large`` otherwise."""

    def __init__(self, size: int, large: Transform, small: Transform):
        self.size, self.large, self.small = size, large, small

    def __call__(self, image: Image.Image):
        return (self.small if min(image.size) < self.size else self.large)(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size},\n large={self.large},\n small={self.small})"


def eval_settings(data_config: Mapping[str, Any], image_size: int | None = None) -> dict[str, Any]:
    """The resolved eval settings of ``data_config``: ``input_size`` ``(3, H, W)``, ``interpolation``, ``mean``,
    ``std``, ``crop_pct`` (missing keys take timm's ImageNet defaults; ``image_size`` overrides ``H`` and ``W``)."""
    from timm.data.constants import DEFAULT_CROP_PCT, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # slow import

    height, width = tuple(data_config.get("input_size", (3, 224, 224)))[-2:]
    size = (image_size, image_size) if image_size else (int(height), int(width))
    return dict(
        input_size=(3, *size),
        interpolation=data_config.get("interpolation") or "bicubic",
        mean=tuple(data_config.get("mean", IMAGENET_DEFAULT_MEAN)),
        std=tuple(data_config.get("std", IMAGENET_DEFAULT_STD)),
        crop_pct=float(data_config.get("crop_pct") or DEFAULT_CROP_PCT),
    )


def build_transforms(
    data_config: Mapping[str, Any], image_size: int | None = None, augment: bool = False
) -> tuple[Transform, Transform]:
    """Return ``(train_transform, eval_transform)``: PIL RGB image → float tensor ``(3, S, S)``.

    ``data_config`` follows timm (``input_size``, ``mean``, ``std``, ``interpolation``,
    ``crop_pct``); missing keys take timm's ImageNet defaults (:func:`eval_settings`). ``image_size``
    overrides ``S``. :mod:`sclft.preprocess` is the same eval transform in numpy and Pillow.
    """
    from timm.data import create_transform  # imported here: timm is slow to import

    common = eval_settings(data_config, image_size)
    crop_pct = common.pop("crop_pct")
    eval_tf = _ResolutionAware(
        min(common["input_size"][1:]),
        large=create_transform(**common, crop_pct=crop_pct, crop_mode="center"),
        small=create_transform(**common, crop_pct=1.0, crop_mode="center"),
    )
    train_tf = create_transform(**common, is_training=True) if augment else eval_tf
    return train_tf, eval_tf
