"""Figures and result files for the DLN lab; everything is written atomically (temp file + ``os.replace``)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..plotting import colormap, log_axis, subplots
from .network import TrainLog
from .parsimony import ParsimonyResult
from .separation import SeparationResult

__all__ = [
    "write_atomic",
    "write_json",
    "save_figure",
    "plot_parsimony",
    "plot_separation",
    "plot_separation_losses",
    "plot_completion",
]


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: map them to None (recursively)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(data: Any, path: str | os.PathLike) -> Path:
    def dump(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(_finite(data), fh, indent=2)
            fh.write("\n")

    return write_atomic(path, dump)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 60) -> Path:
    """PNG at a small dpi (committed figures stay small), optimised by Pillow."""
    return write_atomic(
        path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png", pil_kwargs={"optimize": True})
    )


def plot_parsimony(result: ParsimonyResult, title: str = "") -> Figure:
    """One row per layer: singular values, right- and left-vector angles over the iterations; a line per
    singular value, coloured by its index (the colour bar)."""
    from matplotlib.cm import ScalarMappable  # matplotlib loads only when a figure is drawn
    from matplotlib.colors import Normalize

    depth = result.singular_values.shape[1]
    fig, axes = subplots(depth, 3, figsize=(11, 2.6 * depth), squeeze=False)
    cmap = colormap("viridis")
    count = result.singular_values.shape[2]
    panels = (
        (result.singular_values, r"$\sigma_i(t)$"),
        (result.right_angles, r"$\angle(v_i(t), v_i(0))$ [rad]"),
        (result.left_angles, r"$\angle(u_i(t), u_i(0))$ [rad]"),
    )
    for layer in range(depth):
        for col, (data, label) in enumerate(panels):
            ax = axes[layer, col]
            for i in range(count):
                ax.plot(result.steps, data[:, layer, i].numpy(), color=cmap(i / max(count - 1, 1)), lw=1)
            ax.set_title(f"layer {layer + 1}: {label}", fontsize=9)
            ax.set_xlabel("iteration")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    bar = fig.colorbar(ScalarMappable(Normalize(1, count), cmap), ax=list(axes.flat), fraction=0.025, pad=0.02)
    bar.set_label(f"index i of the singular value (1 = largest, {count} = smallest)")
    return fig


def plot_separation(results: Sequence[SeparationResult], labels: Sequence[str], title: str) -> Figure:
    """``D_l`` against the layer index (log scale), one line per result."""
    fig, ax = subplots(figsize=(5, 4))
    for result, label in zip(results, labels):
        depth = result.config.depth
        ax.plot(range(depth), result.separations[:depth], marker="o", label=label)
    log_axis(ax, "y")
    ax.xaxis.get_major_locator().set_params(integer=True)  # layers are whole numbers
    ax.set_xlabel("layer l")
    ax.set_ylabel(r"$D_l = \mathrm{tr}(\Sigma_W)/\mathrm{tr}(\Sigma_B)$")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_separation_losses(results: Sequence[SeparationResult], labels: Sequence[str], title: str) -> Figure:
    """Training loss against the iteration, one line per result."""
    fig, ax = subplots(figsize=(5, 4))
    for result, label in zip(results, labels):
        ax.plot(result.steps, result.losses, label=label)
    log_axis(ax, "y")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_completion(
    logs: Sequence[TrainLog], labels: Sequence[str], title: str, fully_observed: bool = False
) -> Figure:
    """Recovery error against iterations and against wall-clock seconds; it is measured on the unobserved
    entries, or on all of them when ``fully_observed`` (factorisation), and the axis says which."""
    entries = "all entries" if fully_observed else "unobserved entries"
    fig, (by_step, by_time) = subplots(1, 2, figsize=(10, 4))
    for log, label in zip(logs, labels):
        by_step.plot(log.steps, log.metrics, label=label)
        by_time.plot(log.seconds, log.metrics, label=label)
    by_step.set_xlabel("iteration")
    by_time.set_xlabel("wall-clock seconds (training only)")
    for ax in (by_step, by_time):
        log_axis(ax, "y")
        ax.set_ylabel(f"recovery error ({entries})")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
