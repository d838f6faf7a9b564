"""Write tiny, format-faithful dataset folders for tests of every layer.

Each ``write_*`` function creates the on-disk layout the real download has (file names, folders, json,
dtypes, PNG bit depths), filled with seeded random content, and returns the root. Content is plausible
rather than meaningful: seg labels cover the class range plus some 255, normals are unit vectors with
some invalid pixels, depth has some invalid pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from mtl_robust.data.nyuv2 import ADASHARE_JSON, encode_adashare_normal

__all__ = [
    "write_png",
    "write_png16",
    "random_unit_normals",
    "write_nyuv2_adashare",
    "write_nyuv2_mtan",
    "write_taskonomy_adashare",
    "write_cityscapes",
    "write_pascal_part_mat",
    "write_pascal_context",
]


def write_png(path: str | Path, array: np.ndarray) -> Path:
    """8-bit PNG: H x W (gray) or H x W x 3 (RGB)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def write_png16(path: str | Path, array: np.ndarray) -> Path:
    """16-bit single-channel PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint16)).save(path)
    return path


def random_unit_normals(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """[3,H,W] float32 unit vectors facing the camera (z > 0)."""
    v = rng.normal(size=(3, height, width))
    v[2] = np.abs(v[2]) + 0.2
    return (v / np.linalg.norm(v, axis=0, keepdims=True)).astype(np.float32)


def _labels(rng: np.random.Generator, height: int, width: int, num_classes: int, ignore: int) -> np.ndarray:
    seg = rng.integers(0, num_classes, size=(height, width))
    seg[rng.random((height, width)) < 0.1] = ignore
    return seg


def write_nyuv2_adashare(
    root: str | Path,
    n_train: int,
    n_test: int,
    height: int = 48,
    width: int = 64,
    with_json: bool = True,
    seed: int = 0,
) -> Path:
    """AdaShare NYUv2: img/ seg/ normal_mask/ depth/ with frames 0000.. (train first, then test) and,
    if ``with_json``, nyu_v2_3task.json listing them."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    entries: dict[str, list[list[str]]] = {"train": [], "test": []}
    for i in range(n_train + n_test):
        stem = f"{i:04d}"
        rel = [f"img/{stem}.png", f"seg/{stem}.png", f"normal_mask/{stem}.png", f"depth/{stem}.npy"]
        write_png(root / rel[0], rng.integers(0, 256, size=(height, width, 3)))
        write_png(root / rel[1], _labels(rng, height, width, 40, 255))
        normal = random_unit_normals(rng, height, width)
        normal[:, rng.random((height, width)) < 0.2] = 0.0  # invalid -> white
        write_png(root / rel[2], encode_adashare_normal(normal))
        depth = rng.uniform(0.7, 7.0, size=(height, width)).astype(np.float32)
        depth[rng.random((height, width)) < 0.05] = 0.0
        (root / "depth").mkdir(parents=True, exist_ok=True)
        np.save(root / rel[3], depth)
        entries["train" if i < n_train else "test"].append(rel)
    if with_json:
        (root / ADASHARE_JSON).write_text(json.dumps(entries))
    return root


def write_nyuv2_mtan(
    root: str | Path, n_train: int, n_val: int, height: int = 36, width: int = 48, seed: int = 0
) -> Path:
    """MTAN NYUv2: {train,val}/{image,label,depth,normal}/{i}.npy."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for sub in ("image", "label", "depth", "normal"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            np.save(root / split / "image" / f"{i}.npy", rng.random((height, width, 3)).astype(np.float32))
            np.save(
                root / split / "label" / f"{i}.npy", _labels(rng, height, width, 13, -1).astype(np.float32)
            )
            depth = rng.uniform(0.5, 10.0, size=(height, width, 1)).astype(np.float32)
            depth[rng.random((height, width)) < 0.05] = 0.0
            np.save(root / split / "depth" / f"{i}.npy", depth)
            normal = random_unit_normals(rng, height, width)
            normal[:, rng.random((height, width)) < 0.2] = 0.0
            np.save(root / split / "normal" / f"{i}.npy", normal.transpose(1, 2, 0).copy())
    return root


_TASKONOMY_DOMAINS = (
    ("rgb", "rgb"),
    ("segment_semantic", "segmentsemantic"),
    ("normal", "normal"),
    ("depth_zbuffer", "depth_zbuffer"),
    ("keypoints2d", "keypoints2d"),
    ("edge_texture", "edge_texture"),
)


def write_taskonomy_adashare(
    root: str | Path, n_train: int, n_test: int, n_test_small: int, size: int = 64, seed: int = 0
) -> Path:
    """AdaShare/TreeMTL Tiny-Taskonomy: taskonomy.json, semseg_prior_factor.npy, and files under
    train/<building>/<domain>/ and test/<building>/<domain>/; test_small lists the first ``n_test_small``
    test entries."""
    if n_test_small > n_test:
        raise ValueError(f"test_small is a subset of test: n_test_small={n_test_small} > n_test={n_test}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    info: dict[str, list[list[str]]] = {"train": [], "test": []}
    for split, n, building in (("train", n_train, "allensville"), ("test", n_test, "collierville")):
        for i in range(n):
            rel = [f"{building}/{d}/point_{i}_view_0_domain_{suffix}.png" for d, suffix in _TASKONOMY_DOMAINS]
            base = root / split
            write_png(base / rel[0], rng.integers(0, 256, size=(size, size, 3)))
            write_png(base / rel[1], rng.integers(0, 18, size=(size, size)))
            normal = random_unit_normals(rng, size, size)
            write_png(base / rel[2], np.round((normal.transpose(1, 2, 0) + 1.0) / 2.0 * 255.0))
            depth = rng.integers(256, 20000, size=(size, size))
            depth[rng.random((size, size)) < 0.1] = 65535
            write_png16(base / rel[3], depth)
            write_png16(base / rel[4], rng.integers(0, 600, size=(size, size)))
            write_png16(base / rel[5], rng.integers(0, 7000, size=(size, size)))
            info[split].append(rel)
    info["test_small"] = info["test"][:n_test_small]
    root.mkdir(parents=True, exist_ok=True)
    (root / "taskonomy.json").write_text(json.dumps(info))
    np.save(root / "semseg_prior_factor.npy", np.linspace(0.5, 2.0, 17).astype(np.float32))
    return root


def _cityscapes_frame(rng: np.random.Generator, height: int, width: int) -> dict[str, np.ndarray]:
    """One frame's arrays as the MTAN/AdaShare archives store them (labels -1 = ignore, depth 0 = invalid;
    the first 4 pixels of the first row hold positive depths at or below AdaShare's 3e-5 threshold)."""
    depth = rng.uniform(0.005, 0.3, size=(height, width, 1)).astype(np.float32)
    depth[rng.random((height, width)) < 0.15] = 0.0
    depth[0, :4, 0] = (1e-6, 1e-5, 2e-5, 3e-5)
    return {
        "image": rng.random((height, width, 3)).astype(np.float32),
        "label_2": _labels(rng, height, width, 2, -1).astype(np.float32),
        "label_7": _labels(rng, height, width, 7, -1).astype(np.float32),
        "label_19": _labels(rng, height, width, 19, -1).astype(np.float32),
        "depth": depth,
    }


def write_cityscapes(
    root: str | Path,
    n_train: int,
    n_val: int,
    format: str = "mtan",
    height: int = 32,
    width: int = 64,
    seed: int = 0,
) -> Path:
    """Cityscapes: MTAN {train,val}/{image,label_7,label_19,depth}/{i}.npy, LibMTL's
    {train,val}/{image,label,depth}/{i}.npy (label: the 7 classes), or AdaShare's cityscape.json listing
    [image, depth, label_2, label_7, label_19] .npy files per frame under train/ and test/."""
    if format not in ("mtan", "libmtl", "adashare"):
        raise ValueError(f"format must be 'mtan', 'libmtl' or 'adashare', got {format!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    entries: dict[str, list[list[str]]] = {"train": [], "test": []}
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            frame = _cityscapes_frame(rng, height, width)
            if format in ("mtan", "libmtl"):
                frame.pop("label_2")
                if format == "libmtl":
                    frame.pop("label_19")
                    frame["label"] = frame.pop("label_7")
                for key, array in frame.items():
                    (root / split / key).mkdir(parents=True, exist_ok=True)
                    np.save(root / split / key / f"{i}.npy", array)
                continue
            folder = "train" if split == "train" else "test"
            rel = [
                f"{folder}/{key}/frame_{i:04d}.npy"
                for key in ("image", "depth", "label_2", "label_7", "label_19")
            ]
            for key, r in zip(("image", "depth", "label_2", "label_7", "label_19"), rel):
                (root / r).parent.mkdir(parents=True, exist_ok=True)
                np.save(root / r, frame[key])
            entries[folder].append(rel)
    if format == "adashare":
        (root / "cityscape.json").write_text(json.dumps(entries))
    return root


# PASCAL-Context class ids used by the fake context label maps: ids listed in nyu_classes.json have normals.
_CONTEXT_CLASSES = {"wall": 1, "floor": 2, "sky": 3, "tvmonitor": 4, "grass": 5}
_NYU_CLASSES = ["unknown", "wall", "floor", "television"]


def write_pascal_part_mat(
    path: str | Path, objects: list[tuple[int, np.ndarray, dict[str, np.ndarray]]]
) -> Path:
    """A PASCAL-Part annotation .mat: struct anno with imname and objects(class, class_ind, mask, parts),
    parts(part_name, mask); ``objects`` lists (class index, object mask, {part name: part mask})."""
    import scipy.io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj_dtype = [("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]
    part_dtype = [("part_name", "O"), ("mask", "O")]
    records = np.zeros((1, len(objects)), dtype=obj_dtype)
    for j, (class_ind, mask, parts) in enumerate(objects):
        part_records = np.zeros((1, len(parts)), dtype=part_dtype) if parts else np.zeros((0, 0))
        for k, (name, part_mask) in enumerate(parts.items()):
            part_records[0, k] = (name, part_mask.astype(np.uint8))
        records[0, j] = (
            "person" if class_ind == 15 else "other",
            np.array([[class_ind]]),
            mask.astype(np.uint8),
            part_records,
        )
    anno = np.zeros((1, 1), dtype=[("imname", "O"), ("objects", "O")])
    anno[0, 0] = (path.stem, records)
    scipy.io.savemat(path, {"anno": anno})
    return path


def write_pascal_context(
    root: str | Path, n_train: int, n_val: int, height: int = 30, width: int = 40, seed: int = 0
) -> Path:
    """PASCAL_MT folder: ImageSets/Context/{train,val}.txt, JPEGImages/*.jpg, semseg/pascal-context/*.png,
    human_parts/*.mat (the even images of a split have a person with head and torso parts, image 3 mod 4
    a person without parts, the others no person), sal_distill/*.png, normals_distill/*.png (random, with
    the first row (128, 128, 128) and the last (127, 128, 127)), pascal-context/trainval/*.mat (LabelMap)
    and json/{nyu,context}_classes.json."""
    import scipy.io

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n, offset in (("train", n_train, 0), ("val", n_val, n_train)):
        ids = [f"2008_{offset + i:06d}" for i in range(n)]
        (root / "ImageSets" / "Context").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Context" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for i, image_id in enumerate(ids):
            (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
                root / "JPEGImages" / f"{image_id}.jpg", quality=95
            )
            write_png(
                root / "semseg" / "pascal-context" / f"{image_id}.png", _labels(rng, height, width, 21, 255)
            )
            write_png(root / "sal_distill" / f"{image_id}.png", rng.integers(0, 256, (height, width)))
            normals = rng.integers(0, 256, (height, width, 3))
            # mid-grey rows decode to (near-)zero vectors: 2 v / 255 - 1 = +-1/255 per channel
            normals[0] = 128
            normals[-1] = (127, 128, 127)
            write_png(root / "normals_distill" / f"{image_id}.png", normals)
            label_map = np.ones((height, width), dtype=np.uint16)  # wall, with floor / sky / grass blocks
            label_map[height // 2 :, : width // 2] = 2
            label_map[: height // 3, width // 2 :] = 3
            label_map[height // 2 :, width // 2 :] = 5
            (root / "pascal-context" / "trainval").mkdir(parents=True, exist_ok=True)
            scipy.io.savemat(
                root / "pascal-context" / "trainval" / f"{image_id}.mat", {"LabelMap": label_map}
            )
            objects = [(7, np.zeros((height, width), bool), {})]  # a non-person object comes first
            if i % 4 == 3:  # a person without part annotations
                person = np.zeros((height, width), bool)
                person[1:5, 1:5] = True
                objects.append((15, person, {}))
            if i % 2 == 0:
                head = np.zeros((height, width), bool)
                head[2:6, 3:8] = True
                torso = np.zeros((height, width), bool)
                torso[6:14, 2:9] = True
                objects.append(
                    (15, head | torso, {"head": head, "torso": torso, "luarm": np.zeros_like(head)})
                )
            write_pascal_part_mat(root / "human_parts" / f"{image_id}.mat", objects)
    (root / "json").mkdir(parents=True, exist_ok=True)
    (root / "json" / "context_classes.json").write_text(json.dumps(_CONTEXT_CLASSES))
    (root / "json" / "nyu_classes.json").write_text(json.dumps(_NYU_CLASSES))
    return root
