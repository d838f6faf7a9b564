"""NYUv2 reader for the AdaShare/TreeMTL/DGBA and the MTAN/LibMTL on-disk formats.

Both formats are converted to the project convention (see ``mtl_robust.data.transforms``):
``x`` float32 [3,H,W] RGB in [0,1]; ``seg`` int64 [H,W], 255 = ignore; ``normal`` float32 [3,H,W] unit
vectors, all-zero = invalid; ``depth`` float32 [1,H,W] metres, 0 = invalid.

AdaShare format (``format="adashare"``; 40 classes)::

    <root>/nyu_v2_3task.json        {"train": [[img, seg, normal, depth], ...], "test": [...]}, paths
                                    relative to <root> (795 train / 654 test in the full download)
    <root>/img/NNNN.png             RGB uint8
    <root>/seg/NNNN.png             8-bit labels 0..39, 255 = ignore
    <root>/normal_mask/NNNN.png     RGB uint8 encoding (n + 1) * 127.5
    <root>/depth/NNNN.npy           float32 metres, 0 = invalid

Without the json (the published sample frames have none) the four folders are listed and paired by file
stem; all frames then form one split, reachable as ``split="all"`` (or ``None``, ``"test"``, ``"val"``,
matching AdaShare's ``NYU_v2_Customize``, which files them under "test"). ``split="train"`` is refused in
that case so a test set is never trained on by accident.

Normals (AdaShare format). Decoding is ``v = p / 127.5 - 1`` per channel, then renormalised to unit length.
Invalid pixels become all-zero: those with any channel equal to 255 (the code line's rule
``max over channels < 255`` for valid; ``normal_invalid="white"`` marks only (255,255,255)); on the real
frames both rules select the same pixels, because no valid pixel has a saturated channel) and those
whose decoded vector is (near) zero: the frames contain (127,127,127) pixels (about 1%), which encode
n = 0, i.e. no normal (the code line keeps them as valid).

Axis convention of the output: channel 0 = x pointing to the image's right, channel 1 = y pointing up,
channel 2 = z pointing towards the camera (right-handed). The PNGs are written by OpenCV; read with Pillow
as (R, G, B), the mapping is ``x = R, y = B, z = -G`` (in OpenCV's in-memory BGR order, which the AdaShare
loader sees: ``x = ch2, y = ch0, z = -ch1``). Evidence from the four real frames in /work/shared/data:
correlating each decoded channel with normals computed from the depth maps (back-projected with the
standard NYUv2 intrinsics) gives corr(R, x) = 0.73..0.91, corr(B, y) = 0.79..0.90, corr(G, z) =
-0.74..-0.80; with the mapping above the median angle to the depth-derived normals is 12-19 degrees. Floor
pixels (NYU40 index 1) have mean normal y = +0.86..+0.92 (up), the ceiling (index 21) y = -0.87 (down), and
walls (index 0) mostly face the camera (z = +0.75..+0.89).

MTAN format (``format="mtan"``; 13 classes)::

    <root>/{train,val}/image/{i}.npy   H x W x 3 float RGB [0,1] (288 x 384)
    <root>/{train,val}/label/{i}.npy   H x W float, 0..12, -1 = ignore (mapped to 255)
    <root>/{train,val}/depth/{i}.npy   H x W x 1 float metres, 0 = invalid
    <root>/{train,val}/normal/{i}.npy  H x W x 3 float in [-1,1], all-zero = invalid

``split="test"`` reads ``val``. Normals keep the stored channel order (Eigen's precomputed normals; LibMTL's
flip negates channel 0, so channel 0 is horizontal); their axis signs were not verified here.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from mtl_robust.data.common import select_tasks

from .errors import NYUV2_ADASHARE_SOURCE, NYUV2_MTAN_SOURCE, DataFormatError, DataRootError

__all__ = [
    "NYUv2",
    "NYU40_CLASS_NAMES",
    "NYU13_CLASS_NAMES",
    "decode_adashare_normal",
    "encode_adashare_normal",
    "ADASHARE_JSON",
]

Transform = Callable[[Tensor, dict[str, Tensor]], tuple[Tensor, dict[str, Tensor]]]

NYUV2_TASKS = ("seg", "normal", "depth")
ADASHARE_JSON = "nyu_v2_3task.json"
IGNORE_INDEX = 255
_ADASHARE_DIRS = {
    "img": ("img", ".png"),
    "seg": ("seg", ".png"),
    "normal": ("normal_mask", ".png"),
    "depth": ("depth", ".npy"),
}
_ADASHARE_ENTRY_INDEX = {"img": 0, "seg": 1, "normal": 2, "depth": 3}
_MTAN_DIRS = {"img": "image", "seg": "label", "depth": "depth", "normal": "normal"}
_ADASHARE_LAYOUT = (
    f"{ADASHARE_JSON}  (split lists; optional: without it the folders below are paired by file stem)",
    "img/NNNN.png          RGB uint8",
    "seg/NNNN.png          8-bit labels 0..39, 255 = ignore",
    "normal_mask/NNNN.png  RGB uint8, (n + 1) * 127.5, white = invalid",
    "depth/NNNN.npy        float32 metres, 0 = invalid",
)
_MTAN_LAYOUT = (
    "train/image/{i}.npy, val/image/{i}.npy    H x W x 3 float RGB in [0, 1]",
    "train/label/{i}.npy, val/label/{i}.npy    H x W float, 13 classes, -1 = ignore",
    "train/depth/{i}.npy, val/depth/{i}.npy    H x W x 1 float metres, 0 = invalid",
    "train/normal/{i}.npy, val/normal/{i}.npy  H x W x 3 float in [-1, 1], all-zero = invalid",
)

NYU40_CLASS_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat",
    "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel", "shower curtain", "box",
    "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
)  # fmt: skip
# 13-class mapping of ankurhanda/nyuv2-meta-data (class 0 "unknown" is MTAN's -1); order as published there.
NYU13_CLASS_NAMES = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa", "table", "tv",
    "wall", "window",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------- decoding


def decode_adashare_normal(rgb: np.ndarray, invalid: str = "any_255") -> np.ndarray:
    """Decode an AdaShare ``normal_mask`` image (H x W x 3 uint8 as Pillow reads it, R,G,B) to float32
    [3,H,W] unit vectors in (x right, y up, z towards camera), all-zero where invalid.

    ``invalid="any_255"``: invalid where any channel is 255 (the code line's rule); ``"white"``: only
    (255, 255, 255). Pixels whose decoded vector has length < 0.5 (e.g. (127,127,127), i.e. n = 0) are
    invalid under both rules.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DataFormatError(f"normal map must be H x W x 3, got shape {rgb.shape}")
    if invalid == "any_255":
        bad = (rgb == 255).any(axis=2)
    elif invalid == "white":
        bad = (rgb == 255).all(axis=2)
    else:
        raise ValueError(f"normal_invalid must be 'any_255' or 'white', got {invalid!r}")
    v = rgb.astype(np.float32) / 127.5 - 1.0
    xyz = np.stack([v[..., 0], v[..., 2], -v[..., 1]], axis=0)
    norm = np.sqrt((xyz * xyz).sum(axis=0))
    bad |= norm < 0.5
    out = xyz / np.where(bad, 1.0, norm)[None]
    out[:, bad] = 0.0
    return out.astype(np.float32)


def encode_adashare_normal(normal: np.ndarray) -> np.ndarray:
    """Inverse of :func:`decode_adashare_normal` for writing test files: float [3,H,W] (x right, y up,
    z towards camera) -> H x W x 3 uint8 (R,G,B); all-zero vectors become white (invalid)."""
    x, y, z = (np.asarray(normal, dtype=np.float64)[i] for i in range(3))
    rgb = np.stack([x, -z, y], axis=-1)
    out = np.clip(np.floor((rgb + 1.0) * 127.5), 0, 254).astype(np.uint8)
    out[(np.asarray(normal) == 0).all(axis=0)] = 255
    return out


def _renormalise(normal: np.ndarray) -> np.ndarray:
    """[3,H,W] float -> unit vectors, all-zero where (near) zero."""
    norm = np.sqrt((normal.astype(np.float32) ** 2).sum(axis=0))
    bad = ~np.isfinite(norm) | (norm < 0.5)
    out = normal.astype(np.float32) / np.where(bad, 1.0, norm)[None]
    out[:, bad] = 0.0
    return out


def _clean_depth(depth: np.ndarray) -> np.ndarray:
    depth = depth.astype(np.float32)
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth


def _read_png(path: Path) -> tuple[np.ndarray, str]:
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode not in ("L", "P", "RGB", "I", "I;16", "I;16B", "I;16L"):
                im = im.convert("RGB")
                mode = "RGB"
            return np.array(im), mode
    except UnidentifiedImageError as err:
        raise DataFormatError(f"{path}: not a readable image ({err})") from err
    except OSError as err:  # e.g. "image file is truncated": the header read, the pixels did not
        raise DataFormatError(
            f"{path}: the image cannot be decoded ({err}); expected a complete PNG file "
            "(re-copy or re-extract it from the data set archive)"
        ) from err


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:  # a truncated file fails in any of these ways
        raise DataFormatError(f"{path}: not a readable .npy array ({err})") from err


# ------------------------------------------------------------------------------------------------ dataset


class NYUv2(Dataset):
    """NYUv2 frames as ``(x, targets)``; see the module docstring for formats and conventions.

    Args:
        root: data root (the folder holding ``nyu_v2_3task.json`` / ``img/``... or ``train/`` and ``val/``).
        split: "train", "test" or "val" (same split: AdaShare calls it test, MTAN val), or "all"/None for
            every frame.
        format: "adashare" or "mtan".
        tasks: subset of ("seg", "normal", "depth"), in the order the targets dict should have.
        transform: joint ``(x, targets) -> (x, targets)`` callable, e.g.
            ``transforms.paper_train_transform()`` / ``paper_test_transform()``; None returns frames at
            native resolution.
        normal_invalid: "any_255" (code line, default) or "white"; AdaShare format only.
        check_files: verify at construction that every file the split needs exists.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = "train",
        format: str = "adashare",
        tasks: Sequence[str] = NYUV2_TASKS,
        transform: Transform | None = None,
        normal_invalid: str = "any_255",
        check_files: bool = True,
    ) -> None:
        self.root = Path(root).expanduser()
        self.format = format
        self.tasks = select_tasks(tasks, NYUV2_TASKS, "NYUv2")
        self.transform = transform
        if normal_invalid not in ("any_255", "white"):
            raise ValueError(f"normal_invalid must be 'any_255' or 'white', got {normal_invalid!r}")
        self.normal_invalid = normal_invalid
        if format == "adashare":
            self.num_classes = 40
            self.class_names: tuple[str, ...] | None = NYU40_CLASS_NAMES
            self.split, self.samples = self._index_adashare(split)
        elif format == "mtan":
            self.num_classes = 13
            self.class_names = NYU13_CLASS_NAMES
            self.split, self.samples = self._index_mtan(split)
        else:
            raise ValueError(f"format must be 'adashare' or 'mtan', got {format!r}")
        if check_files:
            self._check_files()

    # -- indexing

    def _root_error(self, problem: str) -> DataRootError:
        if self.format == "mtan":
            return DataRootError("NYUv2 (format 'mtan')", self.root, problem, _MTAN_LAYOUT, NYUV2_MTAN_SOURCE)
        return DataRootError(
            "NYUv2 (format 'adashare')", self.root, problem, _ADASHARE_LAYOUT, NYUV2_ADASHARE_SOURCE
        )

    def _check_root(self) -> None:
        if not self.root.exists():
            raise self._root_error("the data root does not exist")
        if not self.root.is_dir():
            raise self._root_error("the data root is not a folder")

    def _index_adashare(self, split: str | None) -> tuple[str, list[dict[str, Path]]]:
        self._check_root()
        if split not in ("train", "test", "val", "all", None):
            raise ValueError(f"split must be 'train', 'test', 'val', 'all' or None, got {split!r}")
        json_path = self.root / ADASHARE_JSON
        if json_path.is_file():
            return self._index_adashare_json(json_path, split)
        if split == "train":
            raise self._root_error(
                f"split='train' needs {ADASHARE_JSON}, which is missing; without it the frames found in "
                "img/ seg/ normal_mask/ depth/ form one split: use split='all' (or 'test'), or add the json"
            )
        return "all", self._index_adashare_folders()

    def _index_adashare_json(self, json_path: Path, split: str | None) -> tuple[str, list[dict[str, Path]]]:
        try:
            info = json.loads(json_path.read_text())
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{json_path}: not valid JSON ({err})") from err
        names = ["train", "test"] if split in ("all", None) else ["train" if split == "train" else "test"]
        samples: list[dict[str, Path]] = []
        for name in names:
            if not isinstance(info, dict) or name not in info:
                raise DataFormatError(
                    f"{json_path}: expected a '{name}' list of [img, seg, normal, depth] entries; "
                    f"found keys {sorted(info) if isinstance(info, dict) else type(info).__name__}"
                )
            for i, entry in enumerate(info[name]):
                if not (isinstance(entry, (list, tuple)) and len(entry) == 4):
                    raise DataFormatError(
                        f"{json_path}: entry {name}[{i}] must be [img, seg, normal, depth], got {entry!r}"
                    )
                samples.append({k: self.root / entry[j] for k, j in _ADASHARE_ENTRY_INDEX.items()})
        resolved = "all" if split in ("all", None) else ("train" if split == "train" else "test")
        return resolved, samples

    def _needed(self) -> tuple[str, ...]:
        return ("img", *self.tasks)

    def _index_adashare_folders(self) -> list[dict[str, Path]]:
        dirs = {k: self.root / _ADASHARE_DIRS[k][0] for k in self._needed()}
        missing = [f"{d.name}/" for d in dirs.values() if not d.is_dir()]
        if missing:
            raise self._root_error(f"{ADASHARE_JSON} is missing and so are the folders {', '.join(missing)}")
        stems = {
            k: {p.stem for p in d.iterdir() if p.suffix == _ADASHARE_DIRS[k][1]} for k, d in dirs.items()
        }
        common = sorted(set.intersection(*stems.values()))
        if not common:
            raise self._root_error(
                f"{ADASHARE_JSON} is missing and no frame has a file in every one of "
                f"{', '.join(d.name + '/' for d in dirs.values())} (files are paired by stem, e.g. "
                "img/0001.png with depth/0001.npy)"
            )
        unpaired = sorted(set.union(*stems.values()) - set(common))
        if unpaired:
            warnings.warn(
                f"NYUv2 at {self.root}: {len(unpaired)} file stem(s) lack a partner in one of the folders "
                f"and are skipped, e.g. {unpaired[:5]}",
                stacklevel=3,
            )
        return [{k: dirs[k] / f"{s}{_ADASHARE_DIRS[k][1]}" for k in dirs} for s in common]

    def _index_mtan(self, split: str | None) -> tuple[str, list[dict[str, Path]]]:
        self._check_root()
        if split not in ("train", "test", "val", "all", None):
            raise ValueError(f"split must be 'train', 'test', 'val', 'all' or None, got {split!r}")
        names = ["train", "val"] if split in ("all", None) else ["train" if split == "train" else "val"]
        samples: list[dict[str, Path]] = []
        for name in names:
            base = self.root / name
            dirs = {k: base / _MTAN_DIRS[k] for k in self._needed()}
            missing = [f"{name}/{d.name}/" for d in dirs.values() if not d.is_dir()]
            if missing:
                raise self._root_error(f"missing folder(s) {', '.join(missing)}")
            ids = sorted(int(p.stem) for p in dirs["img"].glob("*.npy") if p.stem.isdigit())
            if not ids:
                raise self._root_error(f"no {{i}}.npy files in {name}/image/")
            samples.extend({k: d / f"{i}.npy" for k, d in dirs.items()} for i in ids)
        return ("all" if split in ("all", None) else names[0]), samples

    def _check_files(self) -> None:
        missing = [
            (i, k, p) for i, s in enumerate(self.samples) for k in self._needed() if not (p := s[k]).is_file()
        ]
        if missing:
            shown = "; ".join(f"sample {i} ({k}): {p}" for i, k, p in missing[:5])
            source = f"entries of {ADASHARE_JSON}" if (self.root / ADASHARE_JSON).is_file() else "samples"
            raise self._root_error(
                f"{len(missing)} file(s) named by the {source} of split '{self.split}' do not exist, "
                f"e.g. {shown}"
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
        missing = [p for k, p in paths.items() if k in self._needed() and not p.is_file()]
        if missing:
            raise self._root_error(f"sample {index}: file(s) not found: {', '.join(map(str, missing))}")
        if self.format == "adashare":
            x, targets = self._load_adashare(paths)
        else:
            x, targets = self._load_mtan(paths)
        hw = tuple(x.shape[-2:])
        for k, t in targets.items():
            if tuple(t.shape[-2:]) != hw:
                raise DataFormatError(
                    f"NYUv2 sample {index}: {k} is {tuple(t.shape[-2:])} but the image is {hw} "
                    f"(image {paths['img']}, {k} {paths[k]})"
                )
        if self.transform is not None:
            x, targets = self.transform(x, targets)
        return x, targets

    def _load_adashare(self, paths: dict[str, Path]) -> tuple[Tensor, dict[str, Tensor]]:
        img, _ = _read_png(paths["img"])
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        if img.dtype != np.uint8 or img.shape[2] != 3:
            raise DataFormatError(f"{paths['img']}: expected 8-bit RGB, got {img.dtype} {img.shape}")
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)
        targets: dict[str, Tensor] = {}
        for task in self.tasks:
            p = paths[task]
            if task == "seg":
                seg, mode = _read_png(p)
                if seg.ndim != 2:
                    raise DataFormatError(f"{p}: segmentation must be a single-channel PNG, got mode {mode}")
                targets["seg"] = torch.from_numpy(self._check_labels(seg.astype(np.int64), p))
            elif task == "normal":
                rgb, mode = _read_png(p)
                if rgb.ndim != 3 or rgb.dtype != np.uint8:
                    raise DataFormatError(f"{p}: normal map must be 8-bit RGB, got mode {mode}")
                targets["normal"] = torch.from_numpy(decode_adashare_normal(rgb, self.normal_invalid))
            else:
                depth = _read_npy(p)
                depth = depth[..., 0] if depth.ndim == 3 and depth.shape[-1] == 1 else depth
                if depth.ndim != 2:
                    raise DataFormatError(f"{p}: depth must be H x W, got shape {depth.shape}")
                targets["depth"] = torch.from_numpy(_clean_depth(depth))[None]
        return x, targets

    def _load_mtan(self, paths: dict[str, Path]) -> tuple[Tensor, dict[str, Tensor]]:
        img = _read_npy(paths["img"])
        if img.ndim != 3 or img.shape[2] != 3:
            raise DataFormatError(f"{paths['img']}: expected H x W x 3 float RGB, got shape {img.shape}")
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))
        targets: dict[str, Tensor] = {}
        for task in self.tasks:
            p = paths[task]
            arr = _read_npy(p)
            if task == "seg":
                arr = arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr
                if arr.ndim != 2:
                    raise DataFormatError(f"{p}: label must be H x W, got shape {arr.shape}")
                seg = np.rint(np.nan_to_num(arr, nan=-1.0)).astype(np.int64)
                seg[seg < 0] = IGNORE_INDEX
                targets["seg"] = torch.from_numpy(self._check_labels(seg, p))
            elif task == "depth":
                arr = arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr
                if arr.ndim != 2:
                    raise DataFormatError(f"{p}: depth must be H x W x 1 or H x W, got shape {arr.shape}")
                targets["depth"] = torch.from_numpy(_clean_depth(arr))[None]
            else:
                if arr.ndim != 3 or arr.shape[2] != 3:
                    raise DataFormatError(f"{p}: normal must be H x W x 3, got shape {arr.shape}")
                targets["normal"] = torch.from_numpy(_renormalise(arr.transpose(2, 0, 1)))
        return x, targets

    def _check_labels(self, seg: np.ndarray, path: Path) -> np.ndarray:
        bad = (seg >= self.num_classes) & (seg != IGNORE_INDEX)
        if bad.any():
            values = sorted(np.unique(seg[bad]).tolist())[:10]
            raise DataFormatError(
                f"{path}: labels must be 0..{self.num_classes - 1} or {IGNORE_INDEX} (ignore) for format "
                f"'{self.format}', found {values}"
            )
        return seg

    def __repr__(self) -> str:
        return (
            f"NYUv2(root={str(self.root)!r}, split={self.split!r}, format={self.format!r}, "
            f"tasks={self.tasks}, n={len(self)})"
        )
