"""The surrogate of a transfer attack (`attack.surrogate`): the model x_adv is crafted on, given as

* a checkpoint path (`attack.surrogate=logs/checkpoints/abc.ckpt`), a model trained here; or
* training choices (`attack.surrogate={sharing: independent, defense: adv_train}`): group overrides applied
  to the job's own training config, whose checkpoint the pipeline takes from its cache (training it when it
  is not there yet). Only the pipeline can resolve them: it knows the job's training config.

Rows do not carry this spec (a path depends on where logs live) but the surrogate's model id, layout and
defense (`surrogate_id`, `surrogate_layout`, `surrogate_defense`); `label` is what progress lines print.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The row fields that describe the surrogate a cell's x_adv was crafted on.
SURROGATE_FIELDS = ("surrogate_id", "surrogate_layout", "surrogate_defense")


@dataclass(frozen=True)
class SurrogateSpec:
    checkpoint: str | None = None
    overrides: tuple[tuple[str, str], ...] = ()  # (group or key, choice), in the order given

    @classmethod
    def parse(cls, value: Any) -> SurrogateSpec | None:
        """None (no surrogate), a checkpoint path, or a mapping of training choices."""
        if value is None or value == "" or value == {}:
            return None
        if isinstance(value, SurrogateSpec):
            return value
        if isinstance(value, Mapping):
            pairs = []
            for key, choice in value.items():
                if not isinstance(key, str) or not key or isinstance(choice, Mapping | list | tuple):
                    raise ValueError(
                        f"attack.surrogate: training choices are group=option pairs such as "
                        f"{{sharing: independent, defense: adv_train}}, got {key!r}: {choice!r}"
                    )
                pairs.append((key, "null" if choice is None else str(choice)))
            return cls(overrides=tuple(pairs))
        if isinstance(value, str | Path):
            path = Path(value)
            if not path.is_file():
                raise ValueError(
                    f"attack.surrogate: checkpoint {str(path)!r} not found (give a .ckpt written by "
                    "training, or training choices such as {sharing: independent, defense: none})"
                )
            return cls(checkpoint=str(path))
        raise ValueError(
            f"attack.surrogate must be a checkpoint path or a mapping of training choices, got {value!r}"
        )

    def override_list(self) -> list[str]:
        """The training choices as Hydra overrides (`sharing=independent`)."""
        return [f"{key}={choice}" for key, choice in self.overrides]

    @property
    def label(self) -> str:
        return self.checkpoint if self.checkpoint is not None else " ".join(self.override_list())
