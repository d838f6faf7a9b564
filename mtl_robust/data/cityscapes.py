"""Cityscapes reader for the MTAN/LibMTL and the AdaShare/TreeMTL preprocessed ``.npy`` formats.

Both formats hold the same arrays (the down-scaled Cityscapes fine split: 2975 train / 500 val frames, at
128 x 256 or 256 x 512); they differ only in how the files are found.

MTAN/LibMTL format (``format="mtan"``)::

    <root>/{train,val}/image/{i}.npy      H x W x 3 float RGB in [0, 1]
    <root>/{train,val}/label_7/{i}.npy    H x W float, 7 classes 0..6, -1 = ignore
    <root>/{train,val}/label_19/{i}.npy   H x W float, 19 classes 0..18, -1 = ignore
    <root>/{train,val}/depth/{i}.npy      H x W x 1 float, see "Depth" below

AdaShare/TreeMTL format (``format="adashare"``)::

    <root>/cityscape.json   {"train": [[image, depth, label_2, label_7, label_19], ...], "test": [...]}
                            paths relative to <root>, each a .npy with the content above (label_2 is a
                            binary labelling this reader does not need except with num_classes=2)

``split="val"`` and ``"test"`` name the same 500 frames (MTAN calls them val, AdaShare test).

Converted to the project convention (``mtl_robust.data.transforms``): ``x`` float32 [3,H,W] RGB in
[0, 1]; ``seg`` int64 [H,W] with 255 = ignore (the stored -1); ``depth`` float32 [1,H,W], 0 = invalid.

Depth. The arrays hold what the archives store, not metres: a value proportional to inverse depth
(derived from Cityscapes' stereo disparity maps, which measure 1/depth), positive where the stereo
matcher found a disparity and exactly 0 where it did not (sky, car bonnet, occlusions: typically
10-20% of the pixels). Larger values are nearer. The reader keeps them as they are (non-finite or
negative values become 0) so that errors are on the scale the MTAN/LibMTL tables use; use
``task_options.depth.valid_threshold: 0`` so that every positive value counts (the configs do).

Metrics as MTAN/LibMTL report them: segmentation mIoU and pixel accuracy over non-ignored pixels;
depth absolute and relative error over pixels with a non-zero target (``rel = |p - g| / g``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mtl_robust.data.common import select_tasks
from mtl_robust.data.errors import DataFormatError, DataRootError
from mtl_robust.data.nyuv2 import _read_npy

__all__ = [
    "Cityscapes",
    "CITYSCAPES_SOURCE",
    "CITYSCAPES_JSON",
    "CITYSCAPES_7_CLASS_NAMES",
    "CITYSCAPES_19_CLASS_NAMES",
]

Transform = Callable[[Tensor, dict[str, Tensor]], tuple[Tensor, dict[str, Tensor]]]

CITYSCAPES_TASKS = ("seg", "depth")
CITYSCAPES_JSON = "cityscape.json"
IGNORE_INDEX = 255
CITYSCAPES_SOURCE = (
    "the pre-processed Cityscapes archives linked in the MTAN README (https://github.com/lorenmt/mtan; "
    "128x256 or 256x512; unpack so that the folder holding train/ and val/ is the root) for format 'mtan', "
    "or the Cityscapes download linked in the AdaShare README (https://github.com/sunxm2357/AdaShare, "
    "section 'Datasets'; the folder holding cityscape.json is the root) for format 'adashare'"
)
# The Cityscapes categories without 'void', in the order of the official category ids 1..7.
CITYSCAPES_7_CLASS_NAMES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
# The official 19 evaluation classes in train-id order.
CITYSCAPES_19_CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
_CLASS_NAMES = {7: CITYSCAPES_7_CLASS_NAMES, 19: CITYSCAPES_19_CLASS_NAMES, 2: None}
_ADASHARE_ENTRY_INDEX = {"img": 0, "depth": 1, 2: 2, 7: 3, 19: 4}
_MTAN_LAYOUT = (
    "train/image/{i}.npy, val/image/{i}.npy        H x W x 3 float RGB in [0, 1]",
    "train/label_7/{i}.npy, val/label_7/{i}.npy    H x W float, 0..6, -1 = ignore",
    "train/label_19/{i}.npy, val/label_19/{i}.npy  H x W float, 0..18, -1 = ignore",
    "train/depth/{i}.npy, val/depth/{i}.npy        H x W x 1 float inverse depth, 0 = invalid",
)
_ADASHARE_LAYOUT = (
    f"{CITYSCAPES_JSON}  {{'train': [[image, depth, label_2, label_7, label_19], ...], 'test': [...]}}",
    "the .npy files it names (relative to the root), with the content of the MTAN format",
)


class Cityscapes(Dataset):
    """Cityscapes frames as ``(x, targets)``; see the module docstring for formats and conventions.

    Args:
        root: the folder holding ``train/`` and ``val/`` (mtan) or ``cityscape.json`` (adashare).
        split: "train", "val"/"test" (the same frames) or "all"/None.
        format: "mtan" or "adashare".
        num_classes: 7 or 19 (the label set read for ``seg``); 2 with format "adashare" only.
        tasks: subset of ("seg", "depth").
        transform: joint ``(x, targets) -> (x, targets)`` callable; None keeps the stored resolution.
        check_files: verify at construction that every file the split needs exists.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = "train",
        format: str = "mtan",
        num_classes: int = 7,
        tasks: Sequence[str] = CITYSCAPES_TASKS,
        transform: Transform | None = None,
        check_files: bool = True,
    ) -> None:
        self.root = Path(root).expanduser()
        if format not in ("mtan", "adashare"):
            raise ValueError(f"format must be 'mtan' or 'adashare', got {format!r}")
        self.format = format
        allowed = (7, 19) if format == "mtan" else (2, 7, 19)
        if num_classes not in allowed:
            raise ValueError(
                f"num_classes must be one of {allowed} for format {format!r}, got {num_classes!r}"
            )
        if split not in ("train", "val", "test", "all", None):
            raise ValueError(f"split must be 'train', 'val', 'test', 'all' or None, got {split!r}")
        self.num_classes = int(num_classes)
        self.class_names = _CLASS_NAMES[self.num_classes]
        self.tasks = select_tasks(tasks, CITYSCAPES_TASKS, "Cityscapes")
        self.transform = transform
        self._check_root()
        if format == "mtan":
            self.split, self.samples = self._index_mtan(split)
        else:
            self.split, self.samples = self._index_adashare(split)
        if check_files:
            self._check_files()

    # -- indexing

    def _root_error(self, problem: str) -> DataRootError:
        layout = _MTAN_LAYOUT if self.format == "mtan" else _ADASHARE_LAYOUT
        return DataRootError(
            f"Cityscapes (format {self.format!r})", self.root, problem, layout, CITYSCAPES_SOURCE
        )

    def _check_root(self) -> None:
        if not self.root.exists():
            raise self._root_error("the data root does not exist")
        if not self.root.is_dir():
            raise self._root_error("the data root is not a folder")

    def _needed(self) -> tuple[str, ...]:
        return ("img", *self.tasks)

    def _index_mtan(self, split: str | None) -> tuple[str, list[dict[str, Path]]]:
        folders = {"img": "image", "seg": f"label_{self.num_classes}", "depth": "depth"}
        names = ["train", "val"] if split in ("all", None) else ["train" if split == "train" else "val"]
        samples: list[dict[str, Path]] = []
        for name in names:
            dirs = {k: self.root / name / folders[k] for k in self._needed()}
            missing = [f"{name}/{d.name}/" for d in dirs.values() if not d.is_dir()]
            if missing:
                raise self._root_error(f"missing folder(s) {', '.join(missing)}")
            ids = sorted(int(p.stem) for p in dirs["img"].glob("*.npy") if p.stem.isdigit())
            if not ids:
                raise self._root_error(f"no {{i}}.npy files in {name}/image/")
            samples.extend({k: d / f"{i}.npy" for k, d in dirs.items()} for i in ids)
        return ("all" if split in ("all", None) else names[0]), samples

    def _index_adashare(self, split: str | None) -> tuple[str, list[dict[str, Path]]]:
        json_path = self.root / CITYSCAPES_JSON
        if not json_path.is_file():
            raise self._root_error(f"{CITYSCAPES_JSON} is missing")
        try:
            info = json.loads(json_path.read_text())
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{json_path}: not valid JSON ({err})") from err
        names = ["train", "test"] if split in ("all", None) else ["train" if split == "train" else "test"]
        columns = {"img": 0, "depth": 1, "seg": _ADASHARE_ENTRY_INDEX[self.num_classes]}
        samples: list[dict[str, Path]] = []
        for name in names:
            if not isinstance(info, dict) or not isinstance(info.get(name), list):
                found = sorted(info) if isinstance(info, dict) else type(info).__name__
                raise DataFormatError(
                    f"{json_path}: expected a '{name}' list of [image, depth, label_2, label_7, label_19] "
                    f"entries; found {found}"
                )
            for i, entry in enumerate(info[name]):
                if not (isinstance(entry, list | tuple) and len(entry) == 5):
                    raise DataFormatError(
                        f"{json_path}: entry {name}[{i}] must be [image, depth, label_2, label_7, label_19], "
                        f"got {entry!r}"
                    )
                samples.append({k: self.root / entry[columns[k]] for k in self._needed()})
        return ("all" if split in ("all", None) else names[0]), samples

    def _check_files(self) -> None:
        missing = [(i, k, p) for i, s in enumerate(self.samples) for k, p in s.items() if not p.is_file()]
        if missing:
            shown = "; ".join(f"sample {i} ({k}): {p}" for i, k, p in missing[:5])
            raise self._root_error(
                f"{len(missing)} file(s) of split '{self.split}' do not exist, e.g. {shown}"
            )

    # -- access

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def names(self) -> list[str]:
        """Frame ids (image file stems), in dataset order."""
        return [s["img"].stem for s in self.samples]

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        paths = self.samples[index]
        img = _read_npy(paths["img"])
        if img.ndim != 3 or img.shape[2] != 3:
            raise DataFormatError(f"{paths['img']}: expected H x W x 3 float RGB, got shape {img.shape}")
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))
        targets: dict[str, Tensor] = {}
        for task in self.tasks:
            arr = _read_npy(paths[task])
            arr = arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr
            if arr.shape != img.shape[:2]:
                raise DataFormatError(
                    f"{paths[task]}: {task} must be H x W (or H x W x 1) matching the image "
                    f"{img.shape[:2]}, got shape {arr.shape}"
                )
            if task == "seg":
                targets["seg"] = torch.from_numpy(self._labels(arr, paths[task]))
            else:
                depth = arr.astype(np.float32)
                depth[~np.isfinite(depth) | (depth < 0)] = 0.0
                targets["depth"] = torch.from_numpy(depth)[None]
        if self.transform is not None:
            x, targets = self.transform(x, targets)
        return x, targets

    def _labels(self, arr: np.ndarray, path: Path) -> np.ndarray:
        seg = np.rint(np.nan_to_num(arr, nan=-1.0)).astype(np.int64)
        seg[seg < 0] = IGNORE_INDEX
        bad = (seg >= self.num_classes) & (seg != IGNORE_INDEX)
        if bad.any():
            raise DataFormatError(
                f"{path}: labels must be 0..{self.num_classes - 1} or -1 (ignore) for num_classes="
                f"{self.num_classes}, found {sorted(np.unique(seg[bad]).tolist())[:10]}"
            )
        return seg

    def __repr__(self) -> str:
        return (
            f"Cityscapes(root={str(self.root)!r}, split={self.split!r}, format={self.format!r}, "
            f"num_classes={self.num_classes}, tasks={self.tasks}, n={len(self)})"
        )
