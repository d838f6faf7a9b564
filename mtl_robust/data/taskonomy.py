"""Tiny-Taskonomy reader for the AdaShare/TreeMTL on-disk format.

Layout::

    <root>/taskonomy.json            {"train": [...], "test": [...], "test_small": [...]}, each entry
                                     [rgb, segment_semantic, normal, depth_zbuffer, keypoints2d, edge_texture]
    <root>/semseg_prior_factor.npy   17 class-rebalancing weights (-> ``class_weights``)
    <root>/train/...                 files of the "train" entries (paths relative to this folder)
    <root>/test/...                  files of the "test" and "test_small" entries

TreeMTL roots entry paths at ``<root>/train`` (train) or ``<root>/test`` (test, test_small); the original
AdaShare loader roots them at ``<root>``. The reader picks the first of the two under which the split's first
entry exists.

Decoding (every raw file is first resized to ``base_size``, 256x256 by default, nearest, as the code line
does, the RGB image included):

* rgb: 8-bit RGB -> float [0,1].
* seg: 8-bit labels. As in the code line, raw 0 becomes 1, then all labels shift down by 1, so raw 0 and
  raw 1 both become class 0 and raw 1..17 become 0..16 (17 classes). AdaShare additionally gives raw-0
  pixels zero weight through its ``seg_mask`` (TreeMTL's loss does not use that mask);
  ``seg_raw_zero="ignore"`` reproduces that by mapping raw 0 to 255 instead. Raw 255 stays 255 (ignore).
* normal: 8-bit RGB -> /255 -> [-1,1], renormalised to unit length, channels as stored (the code line's
  mirror negates channel 0, so channel 0 is horizontal). Its validity mask is the depth mask: normals are
  zeroed where the depth is invalid.
* depth_zbuffer: 16-bit PNG, valid where raw < 64500. ``depth_encoding="log"`` (code line, default):
  log(1 + raw) / log(2^16), a value in [0, 1) that is NOT metres; ``"metres"``: raw / 512 (Taskonomy stores
  depth in 1/512 m). Invalid pixels are 0 in both (the code line keeps a separate mask instead).
* keypoints2d: 16-bit PNG / 2^16, clipped to [0, 0.005], rescaled to [-1, 1].
* edge_texture: 16-bit PNG / 2^16, clipped to [0, 0.08], rescaled to [-1, 1].

Training-time augmentation (random scale, mirror with the normal x negated, crop 224; test: resize 224) is
``transforms.paper_train_transform(size=(224, 224))`` / ``paper_test_transform(size=(224, 224))``, or
``train_transform=True/False`` here. Its padding writes 255 into keypoints/edges, the value the code
line's keypoint/edge loss ignores.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from mtl_robust.data.common import select_tasks

from .errors import TASKONOMY_SOURCE, DataFormatError, DataRootError
from .transforms import TASKONOMY_SIZE, paper_transform, resize

__all__ = [
    "Taskonomy",
    "TASKONOMY_TASKS",
    "DEPTH_INVALID_RAW",
    "decode_depth",
    "decode_keypoints",
    "decode_edges",
    "decode_seg",
    "decode_normal",
]

Transform = Callable[[Tensor, dict[str, Tensor]], tuple[Tensor, dict[str, Tensor]]]

TASKONOMY_TASKS = ("seg", "normal", "depth", "keypoints", "edges")
TASKONOMY_JSON = "taskonomy.json"
PRIOR_FILE = "semseg_prior_factor.npy"
NUM_CLASSES = 17
IGNORE_INDEX = 255
DEPTH_INVALID_RAW = 64500
DEPTH_UNITS_PER_METRE = 512.0
_ENTRY_INDEX = {"img": 0, "seg": 1, "normal": 2, "depth": 3, "keypoints": 4, "edges": 5}
_SPLIT_DIR = {"train": "train", "test": "test", "test_small": "test"}
_LAYOUT = (
    f"{TASKONOMY_JSON}            train / test / test_small lists of "
    "[rgb, segment_semantic, normal, depth_zbuffer, keypoints2d, edge_texture]",
    f"{PRIOR_FILE}  17 class-rebalancing weights",
    "train/...                  files of the train entries (paths in the json are relative to it)",
    "test/...                   files of the test and test_small entries",
)


# ---------------------------------------------------------------------------------------------- decoding


def decode_seg(raw: np.ndarray, raw_zero: str = "merge") -> np.ndarray:
    """Raw Taskonomy labels -> int64 classes 0..16, 255 = ignore (see the module docstring)."""
    raw = raw.astype(np.int64)
    bad = (raw > NUM_CLASSES) & (raw != IGNORE_INDEX)
    if bad.any():
        raise DataFormatError(
            f"segment_semantic labels must be 0..{NUM_CLASSES} or {IGNORE_INDEX}, found "
            f"{sorted(np.unique(raw[bad]).tolist())[:10]}"
        )
    seg = np.where(raw == 0, 1, raw) - 1
    seg[raw == IGNORE_INDEX] = IGNORE_INDEX
    if raw_zero == "ignore":
        seg[raw == 0] = IGNORE_INDEX
    elif raw_zero != "merge":
        raise ValueError(f"seg_raw_zero must be 'merge' or 'ignore', got {raw_zero!r}")
    return seg


def depth_valid(raw: np.ndarray) -> np.ndarray:
    return raw < DEPTH_INVALID_RAW


def decode_depth(raw: np.ndarray, encoding: str = "log") -> np.ndarray:
    """Raw 16-bit z-buffer -> float32 [H,W]; 0 where raw >= 64500."""
    raw = raw.astype(np.float64)
    if encoding == "log":
        out = np.log1p(raw) / math.log(2.0**16)
    elif encoding == "metres":
        out = raw / DEPTH_UNITS_PER_METRE
    else:
        raise ValueError(f"depth_encoding must be 'log' or 'metres', got {encoding!r}")
    out[~depth_valid(raw)] = 0.0
    return out.astype(np.float32)


def _clip_rescale(raw: np.ndarray, hi: float) -> np.ndarray:
    v = np.clip(raw.astype(np.float64) / 2.0**16, 0.0, hi) / hi
    return (v * 2.0 - 1.0).astype(np.float32)


def decode_keypoints(raw: np.ndarray) -> np.ndarray:
    """Raw 16-bit keypoints2d -> float32 in [-1, 1]: /2^16, clip to [0, 0.005], rescale."""
    return _clip_rescale(raw, 0.005)


def decode_edges(raw: np.ndarray) -> np.ndarray:
    """Raw 16-bit edge_texture -> float32 in [-1, 1]: /2^16, clip to [0, 0.08], rescale."""
    return _clip_rescale(raw, 0.08)


def decode_normal(rgb: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """8-bit RGB normal -> float32 [3,H,W] unit vectors (channels as stored), all-zero where invalid."""
    v = rgb.astype(np.float32).transpose(2, 0, 1) / 255.0 * 2.0 - 1.0
    norm = np.sqrt((v * v).sum(axis=0))
    bad = norm < 0.5
    if valid is not None:
        bad |= ~valid
    out = v / np.where(bad, 1.0, norm)[None]
    out[:, bad] = 0.0
    return out.astype(np.float32)


def _read_png(path: Path) -> tuple[np.ndarray, str]:
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("RGBA", "CMYK", "YCbCr", "LA"):
                im, mode = im.convert("RGB"), "RGB"
            return np.array(im), mode
    except UnidentifiedImageError as err:
        raise DataFormatError(f"{path}: not a readable image ({err})") from err
    except OSError as err:  # e.g. "image file is truncated": the header read, the pixels did not
        raise DataFormatError(
            f"{path}: the image cannot be decoded ({err}); expected a complete PNG file "
            "(re-copy or re-extract it from the data set archive)"
        ) from err


def _read_16bit(path: Path, what: str) -> np.ndarray:
    arr, mode = _read_png(path)
    if arr.ndim != 2 or mode not in ("I", "I;16", "I;16B", "I;16L"):
        raise DataFormatError(f"{path}: {what} must be a 16-bit single-channel PNG, got mode {mode}")
    return arr.astype(np.int64)


# ------------------------------------------------------------------------------------------------ dataset


class Taskonomy(Dataset):
    """Tiny-Taskonomy as ``(x, targets)``; see the module docstring for the format and decoding.

    Args:
        root: folder holding ``taskonomy.json``.
        split: "train", "test" or "test_small" (a subset of test, used for attacks).
        tasks: subset of ("seg", "normal", "depth", "keypoints", "edges").
        transform: joint ``(x, targets) -> (x, targets)`` callable applied after the base resize.
        train_transform: shortcut for the code line's preprocessing at ``size``: True = random scale, mirror,
            pad/crop (training), False = resize (test); None = only ``transform`` (if any). Not both.
        size: crop/resize size used by ``train_transform``; default 224x224.
        base_size: (H, W) every raw file is resized to first (nearest); None keeps the native size.
        depth_encoding: "log" (code line) or "metres".
        seg_raw_zero: "merge" (code line: raw 0 -> class 0) or "ignore" (raw 0 -> 255).
        check_files: verify at construction that every file of the split exists (slow on big splits;
            without it only the first entry is checked and missing files are reported when read).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] = TASKONOMY_TASKS,
        transform: Transform | None = None,
        train_transform: bool | None = None,
        size: Sequence[int] | None = TASKONOMY_SIZE,
        base_size: Sequence[int] | None = (256, 256),
        depth_encoding: str = "log",
        seg_raw_zero: str = "merge",
        check_files: bool = False,
    ) -> None:
        self.root = Path(root).expanduser()
        self.split = split
        self.tasks = select_tasks(tasks, TASKONOMY_TASKS, "Taskonomy")
        if train_transform is not None:
            if transform is not None:
                raise ValueError("pass either transform or train_transform, not both")
            transform = paper_transform(bool(train_transform), size)
        self.transform = transform
        self.base_size = None if base_size is None else (int(base_size[0]), int(base_size[1]))
        if depth_encoding not in ("log", "metres"):
            raise ValueError(f"depth_encoding must be 'log' or 'metres', got {depth_encoding!r}")
        if seg_raw_zero not in ("merge", "ignore"):
            raise ValueError(f"seg_raw_zero must be 'merge' or 'ignore', got {seg_raw_zero!r}")
        self.depth_encoding = depth_encoding
        self.seg_raw_zero = seg_raw_zero
        self.num_classes = NUM_CLASSES
        self.class_names: tuple[str, ...] | None = None
        if split not in _SPLIT_DIR:
            raise ValueError(f"split must be one of {tuple(_SPLIT_DIR)}, got {split!r}")
        if not self.root.is_dir():
            raise self._root_error(
                "the data root does not exist" if not self.root.exists() else "the data root is not a folder"
            )
        self.entries = self._read_json()
        self.class_weights = self._read_prior()
        self.base_dir = self._find_base_dir()
        if check_files:
            for i in range(len(self.entries)):
                self._check_entry(i)

    def _root_error(self, problem: str) -> DataRootError:
        return DataRootError("Taskonomy (AdaShare format)", self.root, problem, _LAYOUT, TASKONOMY_SOURCE)

    def _read_json(self) -> list[list[str]]:
        path = self.root / TASKONOMY_JSON
        if not path.is_file():
            raise self._root_error(f"{TASKONOMY_JSON} is missing")
        try:
            info = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{path}: not valid JSON ({err})") from err
        if not isinstance(info, dict) or self.split not in info:
            keys = sorted(info) if isinstance(info, dict) else type(info).__name__
            raise DataFormatError(f"{path}: has no '{self.split}' list (found {keys})")
        entries = info[self.split]
        for i, e in enumerate(entries):
            if not (isinstance(e, (list, tuple)) and len(e) == 6):
                raise DataFormatError(
                    f"{path}: entry {self.split}[{i}] must be [rgb, segment_semantic, normal, depth_zbuffer, "
                    f"keypoints2d, edge_texture], got {e!r}"
                )
        return [list(e) for e in entries]

    def _read_prior(self) -> Tensor | None:
        path = self.root / PRIOR_FILE
        if not path.is_file():
            if "seg" in self.tasks:
                warnings.warn(f"Taskonomy: {path} is missing; class_weights is None", stacklevel=3)
            return None
        prior = np.load(path, allow_pickle=False).astype(np.float32).reshape(-1)
        if prior.shape[0] != NUM_CLASSES:
            raise DataFormatError(f"{path}: expected {NUM_CLASSES} weights, got {prior.shape[0]}")
        return torch.from_numpy(prior)

    def _find_base_dir(self) -> Path:
        candidates = [self.root / _SPLIT_DIR[self.split], self.root]
        if not self.entries:
            return candidates[0]
        first = self.entries[0][0]
        for base in candidates:
            if (base / first).is_file():
                return base
        tried = ", ".join(str(b / first) for b in candidates)
        raise self._root_error(f"the first '{self.split}' entry's rgb file was not found; tried {tried}")

    def _paths(self, index: int) -> dict[str, Path]:
        entry = self.entries[index]
        return {k: self.base_dir / entry[j] for k, j in _ENTRY_INDEX.items()}

    def _needed(self) -> tuple[str, ...]:
        extra = ("depth",) if "normal" in self.tasks and "depth" not in self.tasks else ()
        return ("img", *self.tasks, *extra)

    def _check_entry(self, index: int) -> dict[str, Path]:
        paths = self._paths(index)
        missing = [f"{k}: {paths[k]}" for k in self._needed() if not paths[k].is_file()]
        if missing:
            raise self._root_error(
                f"{TASKONOMY_JSON} entry {self.split}[{index}] names file(s) that do not exist: "
                + "; ".join(missing)
            )
        return paths

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        paths = self._check_entry(index)
        img, mode = _read_png(paths["img"])
        if img.ndim != 3 or img.dtype != np.uint8 or img.shape[2] != 3:
            raise DataFormatError(f"{paths['img']}: rgb must be 8-bit RGB, got mode {mode}")
        hw = img.shape[:2]
        raw: dict[str, np.ndarray] = {}
        for k in self._needed()[1:]:
            if k in ("depth", "keypoints", "edges"):
                raw[k] = _read_16bit(
                    paths[k],
                    {"depth": "depth_zbuffer", "keypoints": "keypoints2d", "edges": "edge_texture"}[k],
                )
            else:
                raw[k], mode = _read_png(paths[k])
                want = (2, np.uint8) if k == "seg" else (3, np.uint8)
                if raw[k].ndim != want[0] or raw[k].dtype != want[1]:
                    raise DataFormatError(
                        f"{paths[k]}: {k} must be 8-bit {'gray' if k == 'seg' else 'RGB'}, got mode {mode}"
                    )
            if raw[k].shape[:2] != hw:
                raise DataFormatError(
                    f"Taskonomy {self.split}[{index}]: {k} is {raw[k].shape[:2]} but rgb is {hw} "
                    f"(rgb {paths['img']}, {k} {paths[k]})"
                )
        targets: dict[str, Tensor] = {}
        for k in self.tasks:
            if k == "seg":
                t = torch.from_numpy(decode_seg(raw["seg"], self.seg_raw_zero))
            elif k == "normal":
                t = torch.from_numpy(decode_normal(raw["normal"], depth_valid(raw["depth"])))
            elif k == "depth":
                t = torch.from_numpy(decode_depth(raw["depth"], self.depth_encoding))[None]
            elif k == "keypoints":
                t = torch.from_numpy(decode_keypoints(raw["keypoints"]))[None]
            else:
                t = torch.from_numpy(decode_edges(raw["edges"]))[None]
            targets[k] = t
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)
        if self.base_size is not None:
            # nearest for the image too, as the code line does (cv2 INTER_NEAREST on every input)
            x, targets = resize(x, targets, self.base_size, image_mode="nearest")
        if self.transform is not None:
            x, targets = self.transform(x, targets)
        return x, targets

    def __repr__(self) -> str:
        return f"Taskonomy(root={str(self.root)!r}, split={self.split!r}, tasks={self.tasks}, n={len(self)})"
