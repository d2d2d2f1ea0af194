"""Image → model input for exported sclft models, with numpy and Pillow only (no torch, no sclft import).

This file is the reference implementation of the preprocessing every ``sclft export`` describes in its metadata
(key ``preprocessing``, :data:`VERSION`); it reproduces sclft's own eval transform (timm's, plus the small-image
rule) to float rounding. It imports only the standard library, numpy and Pillow, so a deployer may also copy it
alone next to an ONNX file::

    import json, numpy as np, onnxruntime as ort
    from sclft.preprocess import load_image, preprocess

    session = ort.InferenceSession("model.onnx")
    meta = session.get_modelmeta().custom_metadata_map
    spec = json.loads(meta["preprocessing"])
    x = np.stack([preprocess(load_image(p), spec) for p in ["cat.jpg"]])      # (N, 3, S, S) float32
    logits = session.run(None, {"input": x})[0]

The steps (:func:`describe` writes them out as data):

1. decode; apply the EXIF orientation (``PIL.ImageOps.exif_transpose``);
2. 8-bit RGB (:func:`to_rgb`): 16-bit / 32-bit integer modes keep their top 8 bits (``v >> 8``, clipped to
   0..65535 first), float mode ``F`` is read as 0..1 (``round(255 v)``), everything else (grey ``L``, ``LA``,
   palette ``P``, ``RGBA``, ``CMYK``, ``1``) through Pillow's ``convert("RGB")`` (alpha is dropped, not composited);
3. resize so the shorter side is ``R`` (the longer one ``int(R * long / short)``, truncated; no resize when the
   size is already right) with the named Pillow filter, where ``R = floor(S / crop_pct)`` — except for an image
   whose shorter side is smaller than ``S``, for which ``R = S`` (the *small-image rule*: upsampled images are
   not zoomed into);
4. centre crop ``S × S``, the top-left corner at ``round((h - S) / 2)``, ``round((w - S) / 2)`` (Python's
   ``round``: halves go to the even integer);
5. ``(x / 255 - mean) / std`` per channel in float32, channels first (RGB order), stacked as ``(N, 3, S, S)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .errors import UsageError

VERSION = 1  # of the preprocessing description; bump when a step or field changes meaning
FILTERS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")  # Pillow's, by timm's names

__all__ = ["VERSION", "describe", "load_image", "preprocess", "preprocessor_config", "to_rgb", "upright"]


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation says (``ImageOps.exif_transpose``); ``image`` itself when it has
    none (no copy)."""
    if image.getexif().get(0x0112, 1) in (1, None):  # 0x0112: the EXIF Orientation tag
        return image
    return ImageOps.exif_transpose(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, scaling high-bit-depth modes instead of clipping them.

    Pillow's own ``convert("RGB")`` clips 16-bit (``I;16*``, ``I``) and float (``F``) pixels to
    0..255, which turns a 16-bit image black and white. Here 16-bit values keep their top 8 bits
    (``v >> 8``; ``I`` is read as 16-bit, the mode Pillow gives 16-bit PNG / TIFF data, clipped to
    0..65535) and float values are taken as 0..1 (``round(255 v)``, clipped), as torchvision's
    ``decode_image`` + ``convert_image_dtype`` do. Other modes use Pillow's conversion.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "I" or mode.startswith("I;16"):
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535) >> 8
        image = Image.fromarray(values.astype(np.uint8), "L")
    elif mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        image = Image.fromarray(np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8), "L")
    return image.convert("RGB")


def load_image(path) -> Image.Image:
    """The file at ``path`` decoded completely, turned upright (EXIF) and as 8-bit RGB (:func:`to_rgb`)."""
    with Image.open(path) as image:
        image.load()  # decode it all now: a truncated file fails here
        return to_rgb(upright(image))


def describe(input_size: Sequence[int], interpolation: str, mean: Sequence[float], std: Sequence[float],
             crop_pct: float) -> dict[str, Any]:
    """The preprocessing of a model with these (resolved) settings, as data: what :func:`preprocess` reads and
    every export carries (JSON) under ``preprocessing``."""
    channels, height, width = (int(v) for v in input_size)
    if interpolation not in FILTERS:
        raise UsageError(f"interpolation {interpolation!r}: valid: {', '.join(FILTERS)}")
    return {
        "version": VERSION,
        "reference": "sclft.preprocess.preprocess (numpy + Pillow)",
        "decode": "Pillow; EXIF orientation applied (PIL.ImageOps.exif_transpose)",
        "to_rgb": "I, I;16*: top 8 bits (clip 0..65535, v >> 8) then grey; F: round(255 * clip(v, 0, 1)) then "
                  "grey; other modes (L, LA, P, RGBA, CMYK, 1): PIL convert('RGB'), alpha dropped",
        "input_size": [channels, height, width],
        "interpolation": interpolation,
        "resize": "shorter side to R, longer side int(R * long / short) (truncated); no resize when already that "
                  "size; R = floor(S / crop_pct), S = min(input height, width)",
        "crop_pct": float(crop_pct),
        "small_image_rule": "an image whose shorter side is < S uses crop_pct 1.0 (R = S)",
        "crop": "centre S x S; top = round((h - S) / 2), left = round((w - S) / 2), Python round (half to even)",
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "normalize": "(x / 255 - mean) / std per RGB channel, float32",
        "layout": "NCHW, channels RGB",
        "dtype": "float32",
    }


def _filter(name: str) -> Image.Resampling:
    return Image.Resampling[name.upper()]


def resize_target(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) with the shorter side ``side`` and the longer one scaled and truncated (torchvision's
    ``Resize(int)`` rule)."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(side * long / short)
    return (side, new_long) if width <= height else (new_long, side)


def preprocess(image: Image.Image, spec: Mapping[str, Any]) -> np.ndarray:
    """One upright RGB image (:func:`load_image`, or :func:`to_rgb` of your own) → float32 ``(3, S, S)`` as
    ``spec`` (an export's ``preprocessing`` metadata, :func:`describe`) says."""
    if spec.get("version") != VERSION:
        raise UsageError(f"preprocessing version {spec.get('version')!r}: this implementation follows version "
                         f"{VERSION}; use the sclft release that wrote the export")
    _, height, width = spec["input_size"]
    if height != width:
        raise UsageError(f"input size {height}x{width}: only square inputs are described (version {VERSION})")
    side = int(height)
    image = to_rgb(image)
    crop_pct = 1.0 if min(image.size) < side else float(spec["crop_pct"])
    scaled = math.floor(side / crop_pct)
    size = resize_target(*image.size, scaled)
    if size != image.size:
        image = image.resize(size, _filter(spec["interpolation"]))
    w, h = image.size
    top, left = int(round((h - side) / 2.0)), int(round((w - side) / 2.0))
    image = image.crop((left, top, left + side, top + side))
    x = np.asarray(image, dtype=np.float32) / np.float32(255)
    mean = np.asarray(spec["mean"], dtype=np.float32)
    std = np.asarray(spec["std"], dtype=np.float32)
    return np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1))


def preprocessor_config(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What Hugging Face's image-processor format (``preprocessor_config.json``, ``CLIPImageProcessor``) can say
    of ``spec``: the path of images at least ``S`` px on the shorter side. Its fields cannot say the small-image
    rule, and its centre crop rounds the offset down where :func:`preprocess` rounds half to even."""
    side = int(spec["input_size"][1])
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"shortest_edge": math.floor(side / float(spec["crop_pct"]))},
        "resample": int(_filter(spec["interpolation"])),
        "do_center_crop": True,
        "crop_size": {"height": side, "width": side},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(spec["mean"]),
        "image_std": list(spec["std"]),
    }
