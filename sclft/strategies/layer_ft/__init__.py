"""Layer FT: fine-tune one block (and the head); prefix and suffix stay frozen."""

from .model import LayerFT  # noqa: F401
