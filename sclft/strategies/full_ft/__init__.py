"""Full fine-tuning: every backbone parameter and the head train."""

from .model import FullFT  # noqa: F401
