"""Reading checkpoints safely: tensors and plain containers only, and errors that name the file.

Checkpoints are loaded with `torch.load(weights_only=True)`: a file that carries pickled Python objects
(which could run code on load) is refused. The project's own checkpoints hold only tensors, numbers,
strings and containers; the few Lightning types older versions pickled are allow-listed explicitly.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

EXPECTED = "a checkpoint written by `python -m mtl_robust.train` (a Lightning .ckpt)"


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used; the message names the file and what was expected."""


def safe_globals() -> list[Any]:
    """Non-builtin types a project checkpoint may contain besides tensors (Lightning's hparams container)."""
    from pytorch_lightning.utilities.parsing import AttributeDict

    return [AttributeDict]


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's dict (`state_dict`, `hyper_parameters`, ...), loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} not found; pass ckpt=<path to a .ckpt written by python -m mtl_robust.train> "
            "(training writes <run dir>/checkpoints/last.ckpt)"
        )
    try:
        with torch.serialization.safe_globals(safe_globals()):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights only" in str(err).lower() or "weights_only" in str(err):
            raise CheckpointError(
                f"checkpoint {path} was refused: it contains pickled Python objects beyond tensors and plain "
                f"containers, which could run code when loaded ({first}); expected {EXPECTED}"
            ) from err
        raise CheckpointError(
            f"checkpoint {path} is not a torch file ({first}); expected {EXPECTED}"
        ) from err
    except Exception as err:  # noqa: BLE001 - a damaged file fails in many ways (IndexError, KeyError, ...)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path} cannot be read (truncated or not a torch file? {reason}); expected {EXPECTED}"
        ) from err
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= set(checkpoint):
        found = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"checkpoint {path} has no `state_dict` and `hyper_parameters` (found {found}); "
            f"expected {EXPECTED}"
        )
    return checkpoint
