"""The synthetic scenes in PASCAL-Context's shape: the five tasks seg, human_parts, saliency, normal, edge.

For smoke studies of the 5-task benchmark without the download. Every target comes from the ray-cast
scenes of :mod:`mtl_robust.data.synthetic` (their ``seg``, ``normal`` and ``edges``), so the five tasks
stay geometrically related, and the images are exactly the ones ``SyntheticScenes`` renders:

* ``seg``: the 8 scene classes (255 = unlabelled), as ``SyntheticScenes``.
* ``human_parts``: the objects split into "parts" by kind, 0 = room (floor, wall, ceiling, rug, picture),
  1 = box, 2 = sphere, 3 = cylinder; labelled with the 7-label set of the real task (labels 4-6 unused).
* ``saliency``: {0, 1}, 1 on the objects and pictures (what stands out of the room), 255 = unlabelled.
* ``normal``: as ``SyntheticScenes``.
* ``edge``: {0, 1}, 1 on boundaries between different surfaces (the scenes' ``edges == 1``; creases
  inside one surface are not edges), no invalid pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from mtl_robust.data.common import select_tasks
from mtl_robust.data.synthetic import BOX, CYLINDER, PICTURE, SPHERE, SyntheticScenes

__all__ = ["SyntheticPascalScenes", "PASCAL_SHAPE_TASKS"]

PASCAL_SHAPE_TASKS = ("seg", "human_parts", "saliency", "normal", "edge")
IGNORE = 255


class SyntheticPascalScenes(Dataset):
    """``SyntheticScenes`` with the targets above; keyword arguments other than ``tasks`` go to it."""

    def __init__(self, tasks: Sequence[str] = PASCAL_SHAPE_TASKS, **scene_kwargs: Any) -> None:
        self.tasks = select_tasks(tasks, PASCAL_SHAPE_TASKS, "the PASCAL-shaped synthetic scenes")
        base = ["seg"]  # every derived target but the normals needs the labels
        if "normal" in self.tasks:
            base.append("normal")
        if "edge" in self.tasks:
            base.append("edges")
        self.scenes = SyntheticScenes(tasks=base, **scene_kwargs)
        self.num_classes = self.scenes.num_classes
        self.class_names = self.scenes.class_names

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        x, base = self.scenes[index]
        seg = base["seg"]
        targets: dict[str, Tensor] = {}
        for task in self.tasks:
            if task == "seg":
                targets["seg"] = seg
            elif task == "human_parts":
                parts = torch.zeros_like(seg)
                for label, cls in enumerate((BOX, SPHERE, CYLINDER), start=1):
                    parts[seg == cls] = label
                parts[seg == IGNORE] = IGNORE
                targets["human_parts"] = parts
            elif task == "saliency":
                salient = (seg == BOX) | (seg == SPHERE) | (seg == CYLINDER) | (seg == PICTURE)
                sal = salient.float()
                sal[seg == IGNORE] = float(IGNORE)
                targets["saliency"] = sal[None]
            elif task == "normal":
                targets["normal"] = base["normal"]
            else:
                targets["edge"] = (base["edges"] == 1.0).float()
        return x, targets

    def __repr__(self) -> str:
        return f"SyntheticPascalScenes(tasks={self.tasks}, scenes={self.scenes!r})"
