"""Cityscapes reader for the MTAN, LibMTL and AdaShare preprocessed ``.npy`` layouts.

All three layouts hold the same arrays (the down-scaled Cityscapes fine split: 2975 train / 500 val
frames, at 128 x 256 or 256 x 512; the MTAN README links both archives, LibMTL's README the 128 x 256
one; the downloads themselves were not compared here); they differ only in how the files are found.

MTAN layout (``format="mtan"``), the archives as unpacked::

    <root>/{train,val}/image/{i}.npy      H x W x 3 float RGB in [0, 1]
    <root>/{train,val}/label_7/{i}.npy    H x W float, 7 classes 0..6, -1 = ignore
    <root>/{train,val}/label_19/{i}.npy   H x W float, 19 classes 0..18, -1 = ignore
    <root>/{train,val}/depth/{i}.npy      H x W x 1 float, see "Depth" below

LibMTL layout (``format="libmtl"``), what LibMTL's ``examples/cityscapes/create_dataset.py`` reads::

    <root>/{train,val}/image/{i}.npy, depth/{i}.npy   as above
    <root>/{train,val}/label/{i}.npy      H x W float, the 7 classes 0..6, -1 = ignore (7 classes only)

AdaShare layout (``format="adashare"``), what AdaShare's ``dataloaders/cityscapes_dataloader.py`` reads::

    <root>/cityscape.json   {"train": [[image, depth, label_2, label_7, label_19], ...], "test": [...]}
                            paths relative to <root>, each a .npy with the content above (label_2 is a
                            binary labelling this reader does not need except with num_classes=2)

``split="val"`` and ``"test"`` name the same 500 frames (MTAN and LibMTL call them val, AdaShare test).

Converted to the project convention (``mtl_robust.data.transforms``): ``x`` float32 [3,H,W] RGB in
[0, 1]; ``seg`` int64 [H,W] with 255 = ignore (the stored -1); ``depth`` float32 [1,H,W], 0 = invalid.

Depth. The arrays hold what the archives store, not metres: a value proportional to inverse depth
(derived from Cityscapes' stereo disparity maps, which measure 1/depth), positive where the stereo
matcher found a disparity and exactly 0 where it did not (sky, car bonnet, occlusions: typically
10-20% of the pixels). Larger values are nearer. The reader keeps them as they are (non-finite or
negative values become 0) so that errors are on the scale of the papers' tables. Which pixels count is
the task's ``valid_threshold``: MTAN's and LibMTL's losses and metrics count every pixel whose depth is
not 0 (``cityscapes``, ``cityscapes_libmtl``: ``valid_threshold: 0``), AdaShare's every pixel above 3e-5
(``envs/base_env.py``, loss and metrics; ``cityscapes_adashare``: ``valid_threshold: 3.0e-5``).

What differs from each original loader (checked against their code):

* MTAN and LibMTL: MTAN's repository has no Cityscapes loader (its README links the archives; its metric
  code, ``im2im_pred/utils.py``, is what LibMTL's follows). LibMTL's loader does not augment, nor do the
  ``cityscapes`` and ``cityscapes_libmtl`` configs. LibMTL indexes ``0 .. n-1`` by the count of image
  files, this reader the integer file names it finds (the same frames when they are 0..n-1). Their depth
  metrics average per-batch pixel means (LibMTL weights them by batch size); this project pools every
  valid pixel of the data set (see ``tasks/depth.py``). A negative stored depth would be valid for them
  (``!= 0``) and is invalid here.
* AdaShare: the same arrays and, in ``cityscapes_adashare``, the same training augmentation (scale by
  U[0.5, 1.5), image bilinear and targets nearest, depth values not rescaled; flip with p = 0.5; centred
  zero padding, labels ignored and depth invalid there; a random 224 x 224 crop, the ``crop_h``/``crop_w``
  of ``yamls/adashare/cityscapes_2task.yml``) and the same test frames (whole, unresized). AdaShare feeds
  the network BGR values in 0..255 minus the Caffe mean; ``x`` here is RGB in [0, 1] and normalising it is
  the model's business. Its ``train1``/``train2`` lists (the policy-learning halves) are not read.
  TreeMTL, which reads AdaShare's NYUv2 and Taskonomy layouts, was not checked for Cityscapes.

Segmentation metrics as MTAN/LibMTL report them: mIoU and pixel accuracy over non-ignored pixels.
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
    "the folder prepared for LibMTL (https://github.com/median-research-group/LibMTL, "
    "examples/cityscapes: the same 128x256 archive, its loader reads the 7 classes from label/) for format "
    "'libmtl', or the Cityscapes download linked in the AdaShare README "
    "(https://github.com/sunxm2357/AdaShare, section 'Datasets'; the folder holding cityscape.json is the "
    "root) for format 'adashare'"
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
# format -> the folder of the labels with num_classes classes, for the two folder layouts
_LABEL_FOLDERS = {"mtan": {7: "label_7", 19: "label_19"}, "libmtl": {7: "label"}}
_FOLDER_LAYOUTS = (
    "format 'mtan' (data=cityscapes), the MTAN archives:",
    "  train/image/{i}.npy, val/image/{i}.npy        H x W x 3 float RGB in [0, 1]",
    "  train/label_7/{i}.npy, val/label_7/{i}.npy    H x W float, 0..6, -1 = ignore",
    "  train/label_19/{i}.npy, val/label_19/{i}.npy  H x W float, 0..18, -1 = ignore",
    "  train/depth/{i}.npy, val/depth/{i}.npy        H x W x 1 float inverse depth, 0 = invalid",
    "format 'libmtl' (data=cityscapes_libmtl), what LibMTL's loader reads:",
    "  train/image/{i}.npy, val/image/{i}.npy        as above",
    "  train/label/{i}.npy, val/label/{i}.npy        H x W float, the 7 classes 0..6, -1 = ignore",
    "  train/depth/{i}.npy, val/depth/{i}.npy        as above",
)
_ADASHARE_LAYOUT = (
    f"{CITYSCAPES_JSON}  {{'train': [[image, depth, label_2, label_7, label_19], ...], 'test': [...]}}",
    "the .npy files it names (relative to the root), with the content of the MTAN format",
)


class Cityscapes(Dataset):
    """Cityscapes frames as ``(x, targets)``; see the module docstring for formats and conventions.

    Args:
        root: the folder holding ``train/`` and ``val/`` (mtan, libmtl) or ``cityscape.json`` (adashare).
        split: "train", "val"/"test" (the same frames) or "all"/None.
        format: "mtan", "libmtl" or "adashare".
        num_classes: 7 or 19 (the label set read for ``seg``); 2 with format "adashare" only; 7 only
            with format "libmtl".
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
        if format not in ("mtan", "libmtl", "adashare"):
            raise ValueError(f"format must be 'mtan', 'libmtl' or 'adashare', got {format!r}")
        self.format = format
        allowed = tuple(_LABEL_FOLDERS[format]) if format in _LABEL_FOLDERS else (2, 7, 19)
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
        if format in _LABEL_FOLDERS:
            self.split, self.samples = self._index_folders(split)
        else:
            self.split, self.samples = self._index_adashare(split)
        if check_files:
            self._check_files()

    # -- indexing

    def _root_error(self, problem: str) -> DataRootError:
        layout = _FOLDER_LAYOUTS if self.format in _LABEL_FOLDERS else _ADASHARE_LAYOUT
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

    def _index_folders(self, split: str | None) -> tuple[str, list[dict[str, Path]]]:
        label = _LABEL_FOLDERS[self.format][self.num_classes]
        folders = {"img": "image", "seg": label, "depth": "depth"}
        names = ["train", "val"] if split in ("all", None) else ["train" if split == "train" else "val"]
        samples: list[dict[str, Path]] = []
        for name in names:
            dirs = {k: self.root / name / folders[k] for k in self._needed()}
            missing = [f"{name}/{d.name}/" for d in dirs.values() if not d.is_dir()]
            if missing:
                raise self._root_error(f"missing folder(s) {', '.join(missing)}{self._other_layout(name)}")
            ids = sorted(int(p.stem) for p in dirs["img"].glob("*.npy") if p.stem.isdigit())
            if not ids:
                raise self._root_error(f"no {{i}}.npy files in {name}/image/")
            samples.extend({k: d / f"{i}.npy" for k, d in dirs.items()} for i in ids)
        return ("all" if split in ("all", None) else names[0]), samples

    def _other_layout(self, name: str) -> str:
        """A hint when the labels of the other folder layout are there instead."""
        for other, labels in _LABEL_FOLDERS.items():
            found = [f for f in labels.values() if other != self.format and (self.root / name / f).is_dir()]
            if found:
                return (
                    f"; {name}/{found[0]}/ is there: that is the {other!r} layout, read it with "
                    f"format={other!r} (data=cityscapes{'' if other == 'mtan' else '_' + other})"
                )
        return ""

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
