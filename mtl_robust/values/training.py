"""How a model is trained, as a value: its defense (`DefenseSpec`) and its multi-task method (the `mtl`
config group), together a `TrainingProcedure`, parsed here once from the configs and formatted here only.

Text form (what rows, reports and sweeps call a training procedure):

* `none`: clean training;
* PGD-AT: `adv_train:<method>[<norm>]-<direction>` with the schedule when it is not the paper's:
  `adv_train:pgd-total`, `adv_train[adv_only]:pgd-dgba`, `adv_train[mixed=0.5]:pgd-total`,
  `adv_train:pgd[l2]-total` (the norm only when not L-inf);
* fast AT: `<method>[<settings that differ from the defaults>]:<direction>`: `fgsm_rs:total`,
  `free_at[m=8]:dgba`, `fgsm_rs[alpha=1.5eps,gradalign=0.2]:total`, `n_fgsm[eps=4/255,craft=train]:total`;
* a multi-task method other than `ew` (today's weighted sum) is appended: `none+pcgrad`,
  `adv_train:pgd-dgba+uw`. Its own settings (CAGrad's c, DWA's temperature) are not in the name, like
  an attack's steps: the training recipe holds them.

A procedure with `ew` formats exactly as defenses were named before the `mtl` group existed, so existing
stores and checkpoint keys keep their names. `TrainingProcedure.parse` reads the text back (for reports,
which must not split names by hand). The config side (`from_config`) validates the defense's settings with
one clear error each; what needs torch (building the attack or the direction) is checked where they are
built (lightning/module.py, lightning/fast_at.py).

Plain Python: importing it needs neither torch nor Hydra.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from mtl_robust.values.budget import check_eps, format_pixels, from_pixels, parse_budget
from mtl_robust.values.direction import DirectionSpec
from mtl_robust.values.norm import Norm, NormRefusal

NONE = "none"
ADV_TRAIN = "adv_train"
FAST_AT_METHODS = ("fgsm_rs", "n_fgsm", "free_at")
DEFENSES = (NONE, ADV_TRAIN, *FAST_AT_METHODS)

# PGD-AT schedules: the paper's (one clean step, then one adversarial step on the same batch), adversarial
# examples only, or one step on (1 - mix_weight) * clean + mix_weight * adversarial loss.
DEFENSE_MODES = ("clean_then_adv", "adv_only", "mixed")
DEFAULT_MODE = "clean_then_adv"
DEFAULT_MIX_WEIGHT = 0.5

# The paper's budget; a fast defense at another one names it.
PAPER_EPS = from_pixels(8)
# Fast-AT defaults, as multiples of eps, from each method's paper (the YAML leaves them null).
DEFAULT_ALPHA = {"fgsm_rs": 1.25, "n_fgsm": 1.0, "free_at": 1.0}
DEFAULT_NOISE = {"fgsm_rs": 1.0, "n_fgsm": 2.0, "free_at": 0.0}
DEFAULT_REPLAYS = 4
# Where the single-step variants craft: "eval" (the default) or "train" (the training forward's modes).
CRAFT_MODES = ("eval", "train")
DEFAULT_CRAFT = "eval"

_FAST_COMMON_KEYS = {"name", "eps", "alpha", "direction", "grad_align", "norm"}
FAST_AT_KEYS = {
    "fgsm_rs": _FAST_COMMON_KEYS | {"craft"},
    "n_fgsm": _FAST_COMMON_KEYS | {"noise", "craft"},
    "free_at": _FAST_COMMON_KEYS | {"replays"},
}

# The multi-task method whose procedures keep their pre-`mtl` names and keys.
DEFAULT_MTL = "ew"


@dataclass(frozen=True)
class FastAT:
    """A fast adversarial training defense's settings; budgets on the [0, 1] pixel scale."""

    method: str
    eps: float
    alpha: float
    noise: float  # half-width of the uniform start (0 for Free AT, which starts from the carried delta)
    project: bool  # clip the step back onto the eps-ball (all but N-FGSM)
    replays: int
    direction: str
    grad_align: float
    craft: str = DEFAULT_CRAFT

    def describe(self) -> str:
        """e.g. "fgsm_rs:dgba"; settings that differ from the defaults are listed, e.g.
        "free_at[m=8]:total", "fgsm_rs[gradalign=0.2]:total", "n_fgsm[alpha=1.5eps]:dgba"."""
        extras = []
        if not math.isclose(self.eps, PAPER_EPS, rel_tol=1e-6):
            extras.append(f"eps={format_pixels(self.eps)}")
        if not math.isclose(self.alpha, DEFAULT_ALPHA[self.method] * self.eps, rel_tol=1e-6):
            extras.append(f"alpha={self.alpha / self.eps:g}eps")
        if self.method == "n_fgsm" and not math.isclose(self.noise, DEFAULT_NOISE["n_fgsm"] * self.eps):
            extras.append(f"noise={self.noise / self.eps:g}eps")
        if self.method == "free_at" and self.replays != DEFAULT_REPLAYS:
            extras.append(f"m={self.replays}")
        if self.grad_align > 0:
            extras.append(f"gradalign={self.grad_align:g}")
        if self.craft != DEFAULT_CRAFT:
            extras.append(f"craft={self.craft}")
        return f"{self.method}{'[' + ','.join(extras) + ']' if extras else ''}:{self.direction}"

    @classmethod
    def from_config(cls, defense: Mapping[str, Any]) -> FastAT:
        method = str(defense.get("name"))
        if not Norm.parse(defense.get("norm")).is_default:
            raise NormRefusal(
                f"defense {method} is L-inf only: FGSM-RS, N-FGSM, Free-AT and GradAlign are defined (and "
                f"tuned) for the L-inf box; for L2 training use defense=adv_train "
                f"defense.attack.norm={defense['norm']}"
            )
        unknown = sorted(set(defense) - FAST_AT_KEYS[method])
        if method == "free_at" and "craft" in unknown:
            raise ValueError(
                "defense free_at does not take craft: it always crafts with the training forward, whose one "
                "backward also trains the weights (craft is an option of fgsm_rs and n_fgsm)"
            )
        if "attack_losses" in unknown:
            raise ValueError(
                f"defense {method} does not take attack_losses: fast adversarial training ascends the "
                "training losses (a step-dependent loss such as SegPGD needs several steps; attack losses "
                "are an evaluation setting, attack.attack_losses)"
            )
        if unknown:
            raise ValueError(
                f"defense {method} does not take {unknown}; its settings are "
                f"{sorted(FAST_AT_KEYS[method] - {'norm'})}"
            )
        eps = check_eps(parse_budget(defense.get("eps", "8/255"), "defense.eps"), "defense.eps")
        if eps == 0:
            raise ValueError("defense.eps must be > 0 for adversarial training, e.g. defense.eps=8/255")
        alpha = defense.get("alpha")
        alpha = DEFAULT_ALPHA[method] * eps if alpha is None else parse_budget(alpha, "defense.alpha")
        if not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"defense.alpha (the step size) must be a finite number > 0, got {alpha}")
        noise = DEFAULT_NOISE[method] * eps
        if method == "n_fgsm" and defense.get("noise") is not None:
            noise = parse_budget(defense["noise"], "defense.noise")
            if not math.isfinite(noise) or noise < 0:
                raise ValueError(f"defense.noise must be a finite number >= 0, got {noise}")
        replays = 1
        if method == "free_at":
            replays = defense.get("replays", DEFAULT_REPLAYS)
            if isinstance(replays, bool) or float(replays) != int(replays) or int(replays) < 1:
                raise ValueError(f"defense.replays must be an integer >= 1, got {replays!r}")
            replays = int(replays)
        grad_align = float(defense.get("grad_align") or 0.0)
        if not math.isfinite(grad_align) or grad_align < 0:
            raise ValueError(f"defense.grad_align (the GradAlign weight) must be >= 0, got {grad_align}")
        craft = defense.get("craft") or DEFAULT_CRAFT
        if craft not in CRAFT_MODES:
            raise ValueError(f"defense.craft must be one of {CRAFT_MODES}, got {craft!r}")
        direction = str(_direction(defense.get("direction", "total")))
        return cls(method, eps, alpha, noise, method != "n_fgsm", replays, direction, grad_align, craft)

    @classmethod
    def parse(cls, method: str, extras: Mapping[str, str], direction: str) -> FastAT:
        """From the parts of the text form (`free_at`, {"m": "8"}, "dgba")."""
        eps = parse_budget(extras.get("eps", "8/255"), "eps")
        alpha = _eps_multiple(extras.get("alpha"), DEFAULT_ALPHA[method]) * eps
        noise = _eps_multiple(extras.get("noise"), DEFAULT_NOISE[method]) * eps
        replays = int(extras.get("m", DEFAULT_REPLAYS if method == "free_at" else 1))
        grad_align = float(extras.get("gradalign", 0.0))
        craft = extras.get("craft", DEFAULT_CRAFT)
        return cls(method, eps, alpha, noise, method != "n_fgsm", replays, direction, grad_align, craft)


def _eps_multiple(text: str | None, default: float) -> float:
    if text is None:
        return default
    if not text.endswith("eps"):
        raise ValueError(f"a fast-AT step is written as a multiple of eps ('1.5eps'), got {text!r}")
    return float(text[: -len("eps")])


def _direction(config: Any) -> DirectionSpec:
    """A direction config or text; a config's `module` is imported first so that its direction is
    registered (as `attacks.config.direction_spec` does)."""
    if isinstance(config, Mapping) and config.get("module"):
        try:
            importlib.import_module(str(config["module"]))
        except ModuleNotFoundError as err:
            raise ValueError(
                f"direction {config.get('name')!r}: its module {config['module']!r} cannot be imported "
                f"({err}); is the package installed or on PYTHONPATH?"
            ) from err
    return DirectionSpec.parse(config)


@dataclass(frozen=True)
class DefenseSpec:
    """A defense: `name` in DEFENSES; PGD-AT's attack (its config as given, its method and norm), inner
    direction, schedule and mix; a fast method's settings (`fast`)."""

    name: str = NONE
    direction: str = "total"
    attack_method: str | None = None
    norm: Norm = field(default_factory=Norm)
    mode: str = DEFAULT_MODE
    mix_weight: float = DEFAULT_MIX_WEIGHT
    fast: FastAT | None = None
    # PGD-AT's attack config as the defense gave it (built by attacks.config); not part of the name.
    attack: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    direction_config: Any = field(default="total", compare=False, repr=False)

    @property
    def is_none(self) -> bool:
        return self.name == NONE

    @property
    def is_fast(self) -> bool:
        return self.fast is not None

    @property
    def is_pgd_at(self) -> bool:
        return self.name == ADV_TRAIN

    @property
    def optimizer_steps_per_batch(self) -> int:
        """Optimiser steps one batch takes: Free AT's replays, the paper's PGD-AT 2, the others 1."""
        if self.fast is not None:
            return self.fast.replays
        return 2 if self.is_pgd_at and self.mode == "clean_then_adv" else 1

    def __str__(self) -> str:
        if self.is_none:
            return NONE
        if self.fast is not None:
            return self.fast.describe()
        method = f"{self.attack_method}{'' if self.norm.is_default else f'[{self.norm}]'}"
        return f"{self.name}{self._schedule_tag()}:{method}-{self.direction}"

    def _schedule_tag(self) -> str:
        """The schedule in the name when it is not the paper's: two PGD-AT models that differ only there
        are different procedures (optimiser steps per batch), so their rows must not share a name."""
        if self.mode == DEFAULT_MODE:
            return ""
        if self.mode == "mixed":
            return f"[mixed={self.mix_weight:g}]"
        return f"[{self.mode}]"

    @classmethod
    def from_config(cls, defense: Mapping[str, Any] | None) -> DefenseSpec:
        """From the `defense` config group (a resolved dict); None or `name: none` is clean training."""
        if not defense or defense.get("name", NONE) == NONE:
            return cls()
        name = defense.get("name")
        if name not in DEFENSES:
            raise ValueError(f"unknown defense {name!r}; choose one of {DEFENSES}")
        direction_config = defense.get("direction", "total")
        if name in FAST_AT_METHODS:
            fast = FastAT.from_config(defense)
            return cls(name, fast.direction, fast=fast, direction_config=direction_config)
        mode = defense.get("mode", DEFAULT_MODE)
        if mode not in DEFENSE_MODES:
            raise ValueError(f"defense.mode must be one of {DEFENSE_MODES}, got {mode!r}")
        mix_weight = float(defense.get("mix_weight", DEFAULT_MIX_WEIGHT))
        if not 0.0 <= mix_weight <= 1.0:
            raise ValueError(f"defense.mix_weight must lie in [0, 1], got {mix_weight}")
        attack = dict(defense.get("attack") or {})
        return cls(
            name,
            str(_direction(direction_config)),
            str(attack.get("method", "?")),
            Norm.parse(attack.get("norm")),
            mode,
            mix_weight,
            attack=MappingProxyType(attack),
            direction_config=direction_config,
        )

    @classmethod
    def parse(cls, text: str) -> DefenseSpec:
        """The text form back (`adv_train[adv_only]:pgd-dgba`, `free_at[m=8]:total`, `none`)."""
        text = text.strip()
        if text == NONE:
            return cls()
        match = _DEFENSE_TEXT.fullmatch(text)
        if match is None or match["name"] not in DEFENSES[1:]:
            raise ValueError(f"not a defense name: {text!r} (e.g. 'adv_train:pgd-total', 'fgsm_rs:dgba')")
        name, tag, rest = match["name"], match["tag"], match["rest"]
        if name in FAST_AT_METHODS:
            extras = dict(item.partition("=")[::2] for item in tag.split(",")) if tag else {}
            fast = FastAT.parse(name, extras, str(DirectionSpec.parse(rest)))
            return cls(name, fast.direction, fast=fast)
        attack = _ATTACK_TEXT.fullmatch(rest)
        if attack is None:
            raise ValueError(f"not a PGD-AT name: {text!r} (e.g. 'adv_train:pgd-total')")
        mode, _, mix = (tag or DEFAULT_MODE).partition("=")
        if mode not in DEFENSE_MODES:
            raise ValueError(f"not a PGD-AT schedule in {text!r}: {tag!r}")
        return cls(
            name,
            str(DirectionSpec.parse(attack["direction"])),
            attack["method"],
            Norm.parse(attack["norm"]),
            mode,
            float(mix) if mix else DEFAULT_MIX_WEIGHT,
        )

    def pgd_at_like(self) -> DefenseSpec | None:
        """The PGD-AT a fast defense is compared with: adversarial examples only, the same inner direction
        (`fgsm_rs[gradalign=0.2]:dgba` -> `adv_train[adv_only]:pgd-dgba`); None for other defenses."""
        if self.fast is None:
            return None
        return DefenseSpec(ADV_TRAIN, self.direction, "pgd", mode="adv_only")


_DEFENSE_TEXT = re.compile(r"(?P<name>[a-z_]+)(\[(?P<tag>[^\]]*)\])?:(?P<rest>.+)")
_ATTACK_TEXT = re.compile(r"(?P<method>[a-z0-9_]+)(\[(?P<norm>[^\]]+)\])?-(?P<direction>.+)")
_MTL_SUFFIX = re.compile(r"\+(?P<mtl>[a-z][a-z0-9_]*)")


@dataclass(frozen=True)
class TrainingProcedure:
    """A defense and a multi-task method: what rows name a trained model by (seeds and the data aside).

    `mtl_options` are the method's settings from the `mtl` config group (not part of the name)."""

    defense: DefenseSpec = field(default_factory=DefenseSpec)
    mtl: str = DEFAULT_MTL
    mtl_options: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __str__(self) -> str:
        return str(self.defense) if self.mtl == DEFAULT_MTL else f"{self.defense}+{self.mtl}"

    @classmethod
    def from_config(
        cls, defense: Mapping[str, Any] | None, mtl: Mapping[str, Any] | None = None
    ) -> TrainingProcedure:
        """From the resolved `defense` and `mtl` configs (None: clean training, `ew`)."""
        options = dict(mtl or {})
        name = str(options.pop("name", DEFAULT_MTL))
        if not _MTL_SUFFIX.fullmatch(f"+{name}"):
            raise ValueError(f"mtl.name must be a lower-case word, got {name!r}")
        return cls(DefenseSpec.from_config(defense), name, MappingProxyType(options))

    @classmethod
    def parse(cls, text: str) -> TrainingProcedure:
        """The text form back: `adv_train:pgd-dgba+pcgrad` -> (PGD-AT with DGBA, pcgrad)."""
        text = text.strip()
        head, plus, tail = text.rpartition("+")
        if plus and _MTL_SUFFIX.fullmatch(f"+{tail}"):
            return cls(DefenseSpec.parse(head), tail)
        return cls(DefenseSpec.parse(text))

    @classmethod
    def read(cls, text: str) -> TrainingProcedure | None:
        """`parse`, or None for a name that is no procedure (a row from another tool, a typo)."""
        try:
            return cls.parse(text)
        except ValueError:
            return None

    def with_defense(self, defense: DefenseSpec) -> TrainingProcedure:
        return replace(self, defense=defense)
