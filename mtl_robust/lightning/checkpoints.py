"""Reading checkpoints safely (tensors and plain containers only, errors that name the file) and writing
them whole.

Checkpoints are loaded with `torch.load(weights_only=True)`: a file that carries pickled Python objects
(which could run code on load) is refused. The project's own checkpoints hold only tensors, numbers,
strings and containers; the few Lightning types older versions pickled are allow-listed explicitly.

Lightning writes its checkpoints (`last.ckpt` included) through a temporary file in the system's temp
folder that is then moved: across file systems that move is a copy, so a kill can leave a truncated
`last.ckpt`. `AtomicCheckpointIO` writes next to the target and renames instead (`mtl_robust.files`).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from mtl_robust.files import atomic_path

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
        global_line = _line_with(str(err), "GLOBAL")
        if global_line:  # the weights-only unpickler met a Python object it will not construct
            raise CheckpointError(
                f"checkpoint {path} was refused: it contains pickled Python objects beyond tensors and "
                f"plain containers, which could run code when loaded ({global_line}); expected {EXPECTED}"
            ) from err
        reason = _line_with(str(err), "WeightsUnpickler").split("WeightsUnpickler error:")[-1].strip()
        reason = f"unpickling stopped: {reason}" if reason else _first_sentence(str(err))
        raise CheckpointError(
            f"checkpoint {path} is not a torch checkpoint ({reason}); expected {EXPECTED}"
        ) from err
    except Exception as err:  # noqa: BLE001 - a damaged file fails in many ways (IndexError, KeyError, ...)
        raise CheckpointError(
            f"checkpoint {path} cannot be read (truncated or not a torch file? {_first_sentence(str(err))}); "
            f"expected {EXPECTED}"
        ) from err
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= set(checkpoint):
        found = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"checkpoint {path} has no `state_dict` and `hyper_parameters` (found {found}); "
            f"expected {EXPECTED}"
        )
    return checkpoint


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    return text.split(". ")[0] if text else "no message"


def _line_with(text: str, word: str) -> str:
    """The informative line of torch's multi-line unpickling errors (with the next one if it is a label)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if word in line:
            if line.endswith(":") and i + 1 < len(lines):
                return f"{line} {lines[i + 1]}"
            return line
    return ""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, with every local checkpoint written whole or not at all."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's own way
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
