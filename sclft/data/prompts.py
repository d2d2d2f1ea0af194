"""Zero-shot prompts: prompt templates and readable class names per dataset.

Templates are CLIP_benchmark's per-dataset sets (``en_zeroshot_classification_templates.json``;
digits uses its MNIST template), written with ``{}`` for the class name. A dataset without an entry
(``imagefolder:…``, ``hf:…``, Fashion-MNIST) gets open_clip's ``SIMPLE_IMAGENET_TEMPLATES`` — the
7 of OpenAI's 80 ImageNet templates that OpenAI found to ensemble as well as all 80. Class names are
made readable by :func:`readable_class_names` (underscores → spaces, per-dataset overrides first).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import UsageError

__all__ = ["DatasetPrompts", "register_prompts", "templates_for", "readable_class_names", "IMAGENET_TEMPLATES",
           "GENERIC_TEMPLATES"]


def _as_strings(templates) -> tuple[str, ...]:
    """open_clip's templates are ``lambda c: f"…{c}…"``; ours are ``str.format`` strings (kept in config.json)."""
    return tuple(t("{}") for t in templates)


_OPEN_CLIP_TEMPLATES = {"IMAGENET_TEMPLATES": "OPENAI_IMAGENET_TEMPLATES",  # the 80 OpenAI ImageNet templates
                        "GENERIC_TEMPLATES": "SIMPLE_IMAGENET_TEMPLATES"}   # their 7-template subset: the fallback


@functools.cache
def _open_clip_templates(name: str) -> tuple[str, ...]:
    from open_clip import zero_shot_metadata  # open_clip loads only for zero-shot prompts (seconds)

    return _as_strings(getattr(zero_shot_metadata, _OPEN_CLIP_TEMPLATES[name]))


def __getattr__(name: str) -> tuple[str, ...]:
    """``IMAGENET_TEMPLATES`` / ``GENERIC_TEMPLATES``, read from open_clip on first use (importing open_clip
    takes about a second, and only zero-shot heads need the templates)."""
    if name not in _OPEN_CLIP_TEMPLATES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _open_clip_templates(name)


_PHOTO_OF = (
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.", "a low contrast photo of a {}.",
    "a high contrast photo of a {}.", "a bad photo of a {}.", "a good photo of a {}.", "a photo of a small {}.",
    "a photo of a big {}.", "a photo of the {}.", "a blurry photo of the {}.", "a black and white photo of the {}.",
    "a low contrast photo of the {}.", "a high contrast photo of the {}.", "a bad photo of the {}.",
    "a good photo of the {}.", "a photo of the small {}.", "a photo of the big {}.",
)  # CLIP_benchmark's cifar10 / cifar100 set


@dataclass(frozen=True)
class DatasetPrompts:
    templates: tuple[str, ...]
    class_names: dict[str, str] = field(default_factory=dict)  # dataset label name -> readable name


_PROMPTS: dict[str, DatasetPrompts] = {}


def register_prompts(dataset: str, templates: Sequence[str], class_names: dict[str, str] | None = None) -> None:
    """Templates (``"… {} …"``) and optional readable-name overrides for a dataset name of the registry."""
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise UsageError(f"prompt templates must each contain '{{}}' for the class name; got {bad or 'none'}")
    if dataset in _PROMPTS:
        raise UsageError(f"prompts for dataset {dataset!r} are already registered")
    _PROMPTS[dataset] = DatasetPrompts(tuple(templates), dict(class_names or {}))


register_prompts("cifar10", _PHOTO_OF)
register_prompts("cifar100", _PHOTO_OF)
register_prompts("dtd", tuple(f"a photo of {a} {{}} {kind}." for a in ("a", "the")
                              for kind in ("texture", "pattern", "thing", "object")))
register_prompts("fgvc_aircraft", ("a photo of a {}, a type of aircraft.", "a photo of the {}, a type of aircraft."))
register_prompts("oxford_pets", ("a photo of a {}, a type of pet.",))
register_prompts("digits", ('a photo of the number: "{}".',))  # CLIP_benchmark's MNIST template


def templates_for(dataset: str | None) -> tuple[str, ...]:
    """The dataset's templates, or :data:`GENERIC_TEMPLATES`."""
    entry = _PROMPTS.get(dataset or "")
    return entry.templates if entry else _open_clip_templates("GENERIC_TEMPLATES")


def readable_class_names(dataset: str | None, names: Sequence[str]) -> list[str]:
    """``american_bulldog`` → ``american bulldog`` (a dataset's own overrides win)."""
    overrides = _PROMPTS[dataset].class_names if dataset in _PROMPTS else {}
    return [overrides.get(n, " ".join(str(n).replace("_", " ").split())) for n in names]
