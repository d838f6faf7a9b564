"""PASCAL-Context multi-task reader for the folder format of the MTI-Net / ATRC / InvPT data loaders.

On-disk layout (the ``PASCAL_MT`` archive those code bases download; 4998 train / 5105 val images)::

    <root>/ImageSets/Context/{train,val}.txt    one image id per line (e.g. 2008_000002)
    <root>/JPEGImages/<id>.jpg                  RGB image (about 500 x 375, sizes vary)
    <root>/semseg/pascal-context/<id>.png       8-bit labels 0..20 (background + the 20 VOC classes),
                                                255 = ignore; semseg/VOC12/<id>.png is used when present
    <root>/human_parts/<id>.mat                 PASCAL-Part annotation: struct 'anno' with 'objects'
                                                (class, class_ind, mask, parts(part_name, mask))
    <root>/sal_distill/<id>.png                 8-bit distilled saliency, 0..255
    <root>/normals_distill/<id>.png             8-bit RGB distilled normals, n = 2 v / 255 - 1
    <root>/pascal-context/trainval/<id>.mat     'LabelMap': the full PASCAL-Context labels (459 classes),
                                                the source of the edges and of the normals' validity
    <root>/json/nyu_classes.json                class names of NYUv2, and
    <root>/json/context_classes.json            {PASCAL-Context class name: id}: normals count only on
                                                classes NYUv2 also has (plus tvmonitor), as those loaders do

Targets in the project convention (``mtl_robust.data.transforms``):

* ``seg`` int64 [H,W], 21 classes, 255 = ignore.
* ``human_parts`` int64 [H,W], 7 labels (background, head, torso, upper arm, lower arm, upper leg, lower
  leg; PASCAL-Part's part names merged as those loaders merge them); pixels outside every person are
  background. An image whose target holds no part label (no person, or only persons without part
  annotations) is 255 (ignored) everywhere, as those loaders' ``AddIgnoreRegions`` makes it: MTI-Net's
  when every pixel is 0, InvPT's when every pixel is 0 or 255 (its padding is 255). The rule is applied
  to the target after ``transform``, as those loaders apply it after their resizing and cropping, so a
  transform that loses every part pixel also makes the image ignored. Such an image adds nothing to the
  loss or to the mIoU, as their evaluation skips it. (With ``human_parts`` as the only task MTI-Net
  drops these images from the data set; here they stay, ignored, and count in ``len``.)
* ``saliency`` float32 [1,H,W] in {0, 1}: the distilled map thresholded at 0.5.
* ``normal`` float32 [3,H,W] in the stored channel order (channel 0 horizontal: those loaders negate it
  on a flip), ``2 v / 255 - 1`` scaled to unit length, all-zero (invalid) exactly outside the
  NYUv2-compatible classes. Those loaders zero the vectors outside those classes and ignore the pixels of
  norm 0; a decoded vector is never zero inside them (each channel is an odd multiple of 1/255), so a
  stored (128, 128, 128) is valid there and here, with direction (1, 1, 1) / sqrt(3) once normalised
  (MTI-Net renormalises after resizing; InvPT's evaluation normalises the target, while its L1 training
  loss compares against the unnormalised vector, near zero for such a pixel). The signs of the other axes
  were not verified here.
* ``edge`` float32 [1,H,W] in {0, 1}: the boundaries between different ``LabelMap`` labels. The original
  loaders mark every pixel whose 4-neighbour Laplacian of the label map is non-zero (both sides of a
  boundary) and thin that to one pixel with scikit-image; this reader, which does not depend on
  scikit-image, marks the pixels that have a 4-neighbour with a smaller label (one side of every
  boundary: also one pixel wide, but not always the pixel that thinning keeps).

Transforms differ from the originals (see ``pascal_train_transform``): MTI-Net resizes image and normals
bicubically to 512 x 512 (so along class boundaries the zeroed normals blend into valid ones), this
reader's resize keeps every target nearest; InvPT does not resize test images but pads them to 512 x 512.

Losses and metrics: see ``mtl_robust.tasks`` (``seg`` / ``human_parts``: CE, mIoU; ``saliency``:
balanced BCE, maxF and mIoU; ``normal``: mean angle; ``edge``: weighted BCE and a pixel-exact F-measure
that differs from the BSDS odsF protocol, see ``tasks/edge.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from mtl_robust.data.common import select_tasks
from mtl_robust.data.errors import DataFormatError, DataRootError
from mtl_robust.data.transforms import Compose, RandomHorizontalFlip, Resize

__all__ = [
    "PascalContext",
    "PASCAL_CONTEXT_SOURCE",
    "PASCAL_SEG_CLASS_NAMES",
    "HUMAN_PART_LABELS",
    "context_edges",
    "ignore_without_parts",
    "pascal_train_transform",
    "pascal_test_transform",
]

Transform = Callable[[Tensor, dict[str, Tensor]], tuple[Tensor, dict[str, Tensor]]]

PASCAL_TASKS = ("seg", "human_parts", "saliency", "normal", "edge")
PASCAL_SIZE = (512, 512)
IGNORE_INDEX = 255
PERSON_CLASS = 15  # PASCAL VOC's class index of "person" in the PASCAL-Part annotation
PASCAL_CONTEXT_SOURCE = (
    "the PASCAL_MT archive that the MTI-Net and ATRC code downloads (https://github.com/SimonVandenhende/"
    "Multi-Task-Learning-PyTorch, data/pascal_context.py, or https://github.com/prismformore/"
    "Multi-Task-Transformer, section 'Data'); unpack it so that the folder holding JPEGImages/ is the root"
)
PASCAL_SEG_CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
# PASCAL-Part's part names of a person -> the 6 part labels (0 = background).
HUMAN_PART_LABELS = {
    **dict.fromkeys(("hair", "head", "lear", "rear", "lebrow", "rebrow", "leye", "reye", "mouth", "nose"), 1),
    **dict.fromkeys(("neck", "torso"), 2),
    **dict.fromkeys(("luarm", "ruarm"), 3),
    **dict.fromkeys(("llarm", "rlarm", "lhand", "rhand"), 4),
    **dict.fromkeys(("luleg", "ruleg"), 5),
    **dict.fromkeys(("llleg", "rlleg", "lfoot", "rfoot"), 6),
}
_LAYOUT = (
    "ImageSets/Context/train.txt, val.txt   image ids, one per line",
    "JPEGImages/<id>.jpg                    RGB image",
    "semseg/pascal-context/<id>.png         8-bit labels 0..20, 255 = ignore (seg)",
    "human_parts/<id>.mat                   PASCAL-Part 'anno' struct (human_parts)",
    "sal_distill/<id>.png                   8-bit saliency 0..255 (saliency)",
    "normals_distill/<id>.png               8-bit RGB normals (normal)",
    "pascal-context/trainval/<id>.mat       'LabelMap' (edge, normal)",
    "json/nyu_classes.json, json/context_classes.json  (normal)",
)
# task -> (folder, suffix) of the files it reads besides the image
_FILES: dict[str, tuple[tuple[str, str], ...]] = {
    "seg": (("semseg/pascal-context", ".png"),),
    "human_parts": (("human_parts", ".mat"),),
    "saliency": (("sal_distill", ".png"),),
    "normal": (("normals_distill", ".png"), ("pascal-context/trainval", ".mat")),
    "edge": (("pascal-context/trainval", ".mat"),),
}


def pascal_train_transform(size: Sequence[int] = PASCAL_SIZE, flip_p: float = 0.5) -> Compose:
    """Horizontal flip (normals' channel 0 negated) and a resize to ``size`` (image bilinear, targets
    nearest). MTI-Net also flips and resizes to 512 x 512 (image and normals bicubic), after a random
    scale (0.75-1.25) and rotation (+-20 degrees) left out here; InvPT/ATRC instead scale by 0.5-2, crop
    and pad to 512 x 512 and distort colours."""
    return Compose([RandomHorizontalFlip(flip_p), Resize(size)])


def pascal_test_transform(size: Sequence[int] = PASCAL_SIZE) -> Compose:
    """Resize to ``size`` (image bilinear, targets nearest), as MTI-Net's test resize to 512 x 512 (image
    and normals bicubic there); InvPT pads test images to 512 x 512 without resizing."""
    return Compose([Resize(size)])


def ignore_without_parts(target: Tensor) -> Tensor:
    """The human-parts target, or 255 everywhere when no pixel holds a part label (every pixel is
    background or already ignored): the originals' rule for images without an annotated person."""
    if bool(((target == 0) | (target == IGNORE_INDEX)).all()):
        return torch.full_like(target, IGNORE_INDEX)
    return target


def context_edges(label_map: np.ndarray) -> np.ndarray:
    """{0, 1} float32 map of the pixels with a 4-neighbour of smaller label (see the module docstring)."""
    lab = np.asarray(label_map).astype(np.int64)
    padded = np.pad(lab, 1, mode="reflect") if min(lab.shape) > 1 else np.pad(lab, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    neighbours = (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:])
    edge = np.zeros(lab.shape, dtype=bool)
    for n in neighbours:
        edge |= n < centre
    return edge.astype(np.float32)


def _read_image(path: Path, mode: str | None = None) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.array(im.convert(mode) if mode else im)
    except UnidentifiedImageError as err:
        raise DataFormatError(f"{path}: not a readable image ({err})") from err
    except OSError as err:
        raise DataFormatError(f"{path}: the image cannot be decoded ({err})") from err


def _read_mat(path: Path) -> dict[str, Any]:
    try:
        return scipy.io.loadmat(path)
    except (scipy.io.matlab.MatReadError, ValueError, OSError, TypeError) as err:
        raise DataFormatError(f"{path}: not a readable MATLAB .mat file ({err})") from err


class PascalContext(Dataset):
    """PASCAL-Context images as ``(x, targets)``; see the module docstring for the format and conventions.

    Args:
        root: the folder holding ``JPEGImages/`` and ``ImageSets/``.
        split: "train" or "val" ("test" reads val: the benchmark has no separate test labels).
        tasks: subset of ("seg", "human_parts", "saliency", "normal", "edge"), in target order.
        transform: joint ``(x, targets) -> (x, targets)`` callable; the images vary in size, so batching
            needs one that resizes (``pascal_train_transform`` / ``pascal_test_transform``).
        check_files: verify at construction that every file the split needs exists.
    """

    num_classes = len(PASCAL_SEG_CLASS_NAMES)
    class_names = PASCAL_SEG_CLASS_NAMES

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] = PASCAL_TASKS,
        transform: Transform | None = None,
        check_files: bool = True,
    ) -> None:
        self.root = Path(root).expanduser()
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        self.split = "train" if split == "train" else "val"
        self.tasks = select_tasks(tasks, PASCAL_TASKS, "PASCAL-Context")
        self.transform = transform
        if not self.root.is_dir():
            raise self._root_error(
                "the data root does not exist" if not self.root.exists() else "not a folder"
            )
        split_file = self.root / "ImageSets" / "Context" / f"{self.split}.txt"
        if not split_file.is_file():
            raise self._root_error(f"the split file ImageSets/Context/{self.split}.txt is missing")
        self.ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        if not self.ids:
            raise DataFormatError(f"{split_file}: lists no image ids")
        self._normal_classes = self._load_normal_classes() if "normal" in self.tasks else None
        if check_files:
            self._check_files()

    # -- indexing

    def _root_error(self, problem: str) -> DataRootError:
        return DataRootError("PASCAL-Context", self.root, problem, _LAYOUT, PASCAL_CONTEXT_SOURCE)

    def _path(self, folder: str, image_id: str, suffix: str) -> Path:
        if folder == "semseg/pascal-context":
            voc = self.root / "semseg" / "VOC12" / f"{image_id}{suffix}"
            if voc.is_file():
                return voc
        return self.root / folder / f"{image_id}{suffix}"

    def _needed(self, image_id: str) -> list[Path]:
        paths = [self.root / "JPEGImages" / f"{image_id}.jpg"]
        for task in self.tasks:
            paths.extend(self._path(folder, image_id, suffix) for folder, suffix in _FILES[task])
        return paths

    def _check_files(self) -> None:
        missing = [p for image_id in self.ids for p in self._needed(image_id) if not p.is_file()]
        if missing:
            shown = ", ".join(str(p.relative_to(self.root)) for p in missing[:5])
            raise self._root_error(
                f"{len(missing)} file(s) of split '{self.split}' for tasks {self.tasks} do not exist, "
                f"e.g. {shown}"
            )

    def _load_normal_classes(self) -> np.ndarray:
        files = [self.root / "json" / "nyu_classes.json", self.root / "json" / "context_classes.json"]
        missing = [f"json/{f.name}" for f in files if not f.is_file()]
        if missing:
            raise self._root_error(f"the task 'normal' needs {', '.join(missing)}, which is missing")
        try:
            nyu, context = (json.loads(f.read_text()) for f in files)
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{files[0].parent}: a class list is not valid JSON ({err})") from err
        if not isinstance(context, dict):
            raise DataFormatError(f"{files[1]}: expected {{class name: id}}, got {type(context).__name__}")
        valid = [context[name] for name in nyu if name in context and name != "unknown"]
        if "tvmonitor" in context:  # NYUv2's "television" under its PASCAL name, as those loaders add it
            valid.append(context["tvmonitor"])
        return np.array(sorted({int(v) for v in valid}), dtype=np.int64)

    # -- access

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def names(self) -> list[str]:
        return list(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image_id = self.ids[index]
        img = _read_image(self.root / "JPEGImages" / f"{image_id}.jpg", "RGB")
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)
        hw = img.shape[:2]
        targets: dict[str, Tensor] = {}
        label_map = None
        if "edge" in self.tasks or "normal" in self.tasks:
            label_map = self._label_map(image_id, hw)
        for task in self.tasks:
            if task == "seg":
                targets["seg"] = torch.from_numpy(self._seg(image_id, hw))
            elif task == "human_parts":
                targets["human_parts"] = torch.from_numpy(self._human_parts(image_id, hw))
            elif task == "saliency":
                sal = self._gray(self._path("sal_distill", image_id, ".png"), hw)
                targets["saliency"] = torch.from_numpy((sal / 255.0 > 0.5).astype(np.float32))[None]
            elif task == "normal":
                targets["normal"] = torch.from_numpy(self._normal(image_id, hw, label_map))
            else:
                targets["edge"] = torch.from_numpy(context_edges(label_map))[None]
        if self.transform is not None:
            x, targets = self.transform(x, targets)
        if "human_parts" in targets:  # after the transform, as in the originals (see the module docstring)
            targets["human_parts"] = ignore_without_parts(targets["human_parts"])
        return x, targets

    def _gray(self, path: Path, hw: tuple[int, ...]) -> np.ndarray:
        arr = _read_image(path)
        if arr.ndim != 2 or arr.shape != hw:
            raise DataFormatError(f"{path}: expected a single-channel {hw} PNG, got shape {arr.shape}")
        return arr

    def _seg(self, image_id: str, hw: tuple[int, ...]) -> np.ndarray:
        path = self._path("semseg/pascal-context", image_id, ".png")
        seg = self._gray(path, hw).astype(np.int64)
        bad = (seg >= self.num_classes) & (seg != IGNORE_INDEX)
        if bad.any():
            raise DataFormatError(
                f"{path}: labels must be 0..{self.num_classes - 1} or {IGNORE_INDEX}, found "
                f"{sorted(np.unique(seg[bad]).tolist())[:10]}"
            )
        return seg

    def _label_map(self, image_id: str, hw: tuple[int, ...]) -> np.ndarray:
        path = self._path("pascal-context/trainval", image_id, ".mat")
        mat = _read_mat(path)
        if "LabelMap" not in mat or np.shape(mat["LabelMap"]) != hw:
            found = (
                np.shape(mat["LabelMap"])
                if "LabelMap" in mat
                else sorted(k for k in mat if not k.startswith("__"))
            )
            raise DataFormatError(f"{path}: expected a 'LabelMap' of shape {hw}, found {found}")
        return np.asarray(mat["LabelMap"]).astype(np.int64)

    def _normal(self, image_id: str, hw: tuple[int, ...], label_map: np.ndarray | None) -> np.ndarray:
        path = self._path("normals_distill", image_id, ".png")
        rgb = _read_image(path)
        if rgb.ndim != 3 or rgb.shape[:2] != hw or rgb.shape[2] != 3:
            raise DataFormatError(f"{path}: expected an RGB {hw} PNG, got shape {rgb.shape}")
        # never zero: each channel of 2 v / 255 - 1 is an odd multiple of 1/255
        normal = (2.0 * rgb.astype(np.float32) / 255.0 - 1.0).transpose(2, 0, 1)
        normal /= np.sqrt((normal**2).sum(axis=0, keepdims=True))
        assert label_map is not None and self._normal_classes is not None
        normal[:, ~np.isin(label_map, self._normal_classes)] = 0.0
        return np.ascontiguousarray(normal)

    def _human_parts(self, image_id: str, hw: tuple[int, ...]) -> np.ndarray:
        path = self._path("human_parts", image_id, ".mat")
        target = np.zeros(hw, dtype=np.int64)
        try:
            objects = _read_mat(path)["anno"][0, 0]["objects"]
        except (KeyError, IndexError, ValueError) as err:
            raise DataFormatError(f"{path}: expected a PASCAL-Part struct anno.objects ({err})") from err
        for obj in np.asarray(objects).ravel():
            if int(np.asarray(obj["class_ind"]).ravel()[0]) != PERSON_CLASS:
                continue
            for part in np.asarray(obj["parts"]).ravel():
                name = str(np.asarray(part["part_name"]).ravel()[0])
                if name not in HUMAN_PART_LABELS:
                    raise DataFormatError(
                        f"{path}: unknown person part {name!r}; expected one of {sorted(HUMAN_PART_LABELS)}"
                    )
                mask = np.asarray(part["mask"]).astype(bool)
                if mask.shape != hw:
                    raise DataFormatError(f"{path}: part mask {mask.shape} does not match the image {hw}")
                target[mask] = HUMAN_PART_LABELS[name]
        return target

    def __repr__(self) -> str:
        return (
            f"PascalContext(root={str(self.root)!r}, split={self.split!r}, tasks={self.tasks}, n={len(self)})"
        )
