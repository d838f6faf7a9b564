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
