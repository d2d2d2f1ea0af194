"""Figures without pyplot: library code never switches the user's matplotlib backend or keeps figures open.

``Figure`` objects render with the Agg canvas on ``savefig`` whatever backend the user's process has
chosen, so nothing here calls ``matplotlib.use`` or touches pyplot's global figure list.
"""

from __future__ import annotations

from typing import Any


def subplots(nrows: int = 1, ncols: int = 1, **kwargs: Any):
    """Like ``plt.subplots`` but pyplot-free: ``figsize``/``dpi`` go to the Figure, the rest to ``subplots``."""
    from matplotlib.figure import Figure  # matplotlib loads only when a figure is drawn

    fig = Figure(figsize=kwargs.pop("figsize", None), dpi=kwargs.pop("dpi", None))
    return fig, fig.subplots(nrows, ncols, **kwargs)


def colormap(name: str):
    from matplotlib import colormaps  # as above

    return colormaps[name]
