"""SCL-FT: Layer FT plus a parameter-free skip from the tuned block to the penultimate feature."""

from .model import SCLFT, match_width  # noqa: F401
