"""CLIP zero-shot: the head is built from text prompts of the class names; nothing trains."""

from .model import ZeroShot, TextHead  # noqa: F401
