"""A model's identity from what it computes: its spec and every state_dict tensor, not the file it came in."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def weights_fingerprint(spec: Mapping[str, Any], model: nn.Module) -> str:
    """Hash of `spec` (JSON-able) and every state_dict tensor (name, dtype, shape, bytes), 12 hex digits.

    A checkpoint file also holds run folders, optimiser state and timestamps, so hashing it gives
    bit-identical retrains different ids; this does not.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()[:12]
