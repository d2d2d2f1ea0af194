"""The one place a device name becomes a ``torch.device``."""

from __future__ import annotations

import torch

from .errors import UsageError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None = None, flag: str = "--device") -> torch.device:
    """``auto`` / None → CUDA when present, else CPU; anything but an available ``cpu``, ``cuda[:N]`` or ``mps``
    (``tpu``, ``cuda`` without a GPU) is a :class:`~sclft.errors.UsageError` naming ``flag``, the value and the valid
    choices here."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    valid = ", ".join(["auto", "cpu", *(["cuda", f"cuda:0..{gpus - 1}"] if gpus else []), *(["mps"] if mps else [])])
    try:
        dev = torch.device(device)
    except RuntimeError:  # torch: "Expected one of cpu, cuda, ... device type at start of device string: tpu"
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"{flag} {device}: not a device sclft runs on; valid here: {valid}")
    if (dev.type == "cuda" and (not gpus or (dev.index or 0) >= gpus)) or (dev.type == "mps" and not mps):
        raise UsageError(f"{flag} {device}: no such device here (valid here: {valid})")
    return dev
