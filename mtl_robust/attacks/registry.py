"""Build attacks by name (for configs): `build_attack("pgd", eps=8/255, direction="dgba")`."""

from __future__ import annotations

from typing import Any

from mtl_robust.attacks.apgd import APGD
from mtl_robust.attacks.base import Attack
from mtl_robust.attacks.fgsm import FGSM
from mtl_robust.attacks.mim import MIM
from mtl_robust.attacks.pgd import PGD
from mtl_robust.attacks.square import Square
from mtl_robust.values.budget import from_pixels

METHODS: dict[str, type[Attack]] = {"fgsm": FGSM, "pgd": PGD, "mim": MIM, "apgd": APGD, "square": Square}


def build_attack(method: str, **kwargs: Any) -> Attack:
    """An attack by method name: "fgsm", "pgd", "mim", "apgd", "apgd_paper" (the DGBA code's APGD),
    "square" (gradient-free).

    `pixel_eps` / `pixel_alpha` (0-255 units) may replace `eps` / `alpha`.
    """
    key = method.lower()
    pixel_eps = kwargs.pop("pixel_eps", None)
    pixel_alpha = kwargs.pop("pixel_alpha", None)
    if pixel_eps is not None:
        if "eps" in kwargs:
            raise ValueError("give either eps (0-1 scale) or pixel_eps (0-255 units), not both")
        kwargs["eps"] = from_pixels(pixel_eps)
    if pixel_alpha is not None:
        if "alpha" in kwargs:
            raise ValueError("give either alpha (0-1 scale) or pixel_alpha (0-255 units), not both")
        kwargs["alpha"] = from_pixels(pixel_alpha)
    if key == "apgd_paper":
        return APGD.paper(**kwargs)
    if key not in METHODS:
        raise ValueError(f"unknown attack method {method!r}; choose one of {[*METHODS, 'apgd_paper']}")
    return METHODS[key](**kwargs)
