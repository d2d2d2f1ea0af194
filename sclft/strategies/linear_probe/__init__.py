"""Linear probe: frozen backbone → penultimate feature → new linear head."""

from .model import LinearProbe  # noqa: F401
