"""How reports name, order and draw attack directions: all of it comes from the direction registry
(`mtl_robust.values.direction`), so a direction registered there shows in every table and figure with its
label, rank and look, and one nobody registered still reports under its own name, after the registered
ones, in a palette colour.

`TOTAL` and `DGBA` are named here only where the report shows the paper's own comparisons (DGBA vs TOTAL,
the cost of adversarial training under both).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from mtl_robust.values.direction import TASK_ORDER, DirectionSpec, DirectionStyle

TOTAL = DirectionSpec("total")
DGBA = DirectionSpec("dgba")
SINGLE = "single"  # the paper's per-task direction (its transfer matrices are the SINGLE ones)

# Per-task directions draw in their task's colour (the example grids use the same task names).
TASK_COLORS = {
    "seg": "tab:blue",
    "normal": "tab:green",
    "depth": "tab:orange",
    "keypoints": "tab:purple",
    "edges": "tab:brown",
}
# Directions whose style leaves the colour open take these in turn.
OTHER_COLORS = ("tab:pink", "tab:olive", "tab:cyan", "tab:gray")

# Rows whose direction does not parse (hand-edited, or a per-task name without its task) sort last.
_UNREADABLE = sys.maxsize


def spec_of(direction: str) -> DirectionSpec | None:
    """A row's direction as a spec; None where the text is no direction (the report then shows it as
    written instead of failing)."""
    try:
        return DirectionSpec.parse(direction)
    except (ValueError, TypeError):
        return None


def direction_label(direction: str) -> str:
    """ "single:seg" -> "SINGLE(seg)", "dgba" -> "DGBA"; unregistered names as written."""
    spec = spec_of(direction)
    return spec.label if spec else direction


def direction_sort_key(direction: str, tasks: Sequence[str] = TASK_ORDER) -> tuple[int, int, str]:
    """Registered order (per-task directions in task order), then unregistered names, then unreadable ones."""
    spec = spec_of(direction)
    return spec.sort_key(tasks) if spec else (_UNREADABLE, 0, direction)


def direction_style(direction: str, index: int = 0) -> dict[str, Any]:
    """matplotlib line keywords: the registered look; a per-task direction in its task's colour, a direction
    without a colour in the `index`-th palette colour."""
    spec = spec_of(direction)
    style = spec.style if spec else DirectionStyle(direction)
    colour = style.colour
    if colour is None and spec is not None and spec.task in TASK_COLORS:
        colour = TASK_COLORS[spec.task]
    if colour is None:
        colour = OTHER_COLORS[index % len(OTHER_COLORS)]
    return {
        "color": colour,
        "linestyle": style.linestyle,
        "marker": style.marker,
        "linewidth": style.linewidth,
    }
