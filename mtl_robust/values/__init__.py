"""Values that travel through every layer (config -> attack -> store row -> report), each with one parser
and one formatter: the attack budget (`budget`) and the attack direction (`direction`).

Plain Python: importing them needs neither torch nor Hydra, so reports can use them on any machine.
"""

from mtl_robust.values.budget import EPS_HINT, format_eps, from_pixels, parse_budget, parse_eps, to_pixels
from mtl_robust.values.direction import DirectionSpec, DirectionStyle, register_style, style_of

__all__ = [
    "EPS_HINT",
    "DirectionSpec",
    "DirectionStyle",
    "format_eps",
    "from_pixels",
    "parse_budget",
    "parse_eps",
    "register_style",
    "style_of",
    "to_pixels",
]
