"""Procedurally rendered indoor scenes: the embedded default data set (no download needed).

Each image is a room (an axis-aligned box, 4-8 m by 4-8 m, 2.5-3.2 m high) holding 2-6 objects (yawed
boxes, spheres, vertical cylinders), a picture or two on the walls and maybe a rug, seen from a random camera
inside the room. Every target is computed from the same ray-cast geometry, exactly per pixel, so the tasks
are genuinely related (normals are the derivative of depth, edges are the discontinuities of labels/depth).

Conventions
-----------
World frame: y up, the room spans ``[0, Rx] x [0, Ry] x [0, Rz]``, the floor is ``y = 0``.

Camera frame (OpenGL-like, the project's normal convention): **x right, y up, z towards the viewer**; the
camera looks along ``-z``. Pinhole intrinsics from the horizontal field of view ``fov_deg`` with square
pixels: ``f = (W / 2) / tan(fov / 2)``, principal point ``(cx, cy) = (W / 2, H / 2)``; pixel ``(i, j)``
(row, column) is sampled at its centre ``(j + 0.5, i + 0.5)``. A camera-frame point ``(X, Y, Z)`` appears at
``u = cx + f X / d``, ``v = cy - f Y / d`` with ``d = -Z``.

Targets (as the dataset returns them):

* ``seg``: int64 ``[H, W]``, classes :data:`CLASS_NAMES` (0 floor, 1 wall, 2 ceiling, 3 box, 4 sphere,
  5 cylinder, 6 picture, 7 rug); 255 marks unlabelled pixels (see invalid regions below).
* ``depth``: float32 ``[1, H, W]``, z-depth in metres along the optical axis (like NYUv2), ``d = -Z``;
  0 marks missing depth. :func:`backproject_depth` inverts it to camera-frame points.
* ``normal``: float32 ``[3, H, W]``, unit surface normals in the camera frame above, oriented towards the
  camera (``n . P < 0`` for the surface point ``P``), i.e. the normal of the back-projected depth surface.
* ``keypoints``: float32 ``[1, H, W]`` in [0, 1]: Gaussian blobs (sigma ~ 2% of the image size) at the
  visible projected geometric corners (room corners, box corners, picture and rug corners); a corner hidden
  behind another surface gets no blob.
* ``edges``: float32 ``[1, H, W]`` in {0, 0.5, 1}: 1 on both sides of a boundary between different surfaces
  (occlusion boundaries and semantic boundaries, e.g. box against wall, floor against wall, picture on wall),
  0.5 on creases inside one surface (wall against wall, two faces of a box, side and top of a cylinder).
* ``x``: float32 ``[3, H, W]`` RGB in [0, 1]: procedural textures per class (floor checker, wall stripes,
  plain ceiling, box 3-D checker, sphere bands, cylinder stripes, picture noise, rug stripes), smooth noise,
  Lambertian shading from a point light near the ceiling plus ambient and a weak headlight (no shadows),
  then Gaussian pixel noise, clipped.

Invalid regions (``invalid_regions=True``, the data set's default): like real NYUv2 frames, which carry
10-21 % unlabelled seg pixels and 23-40 % invalid normals, each image gets unlabelled seg pixels (a thin
band on surface boundaries plus 1-3 "clutter" ellipses), missing depth (pictures that act as mirrors,
half the time, and 1-3 windows cut into the walls) and invalid normals (missing depth, a band on every
boundary and crease, and blocky dropout patches). Their layout is drawn from its own random stream, so the
scene itself is the same with or without them. :func:`render_scenes` leaves them off by default (exact
geometry); :func:`invalid_fractions` measures the rates.

Determinism: image ``i`` of a dataset is rendered from ``numpy.random.SeedSequence((seed, split_id, i))``
alone, so it never depends on access order, batch composition or the other items; the scene does not depend
on the resolution either (only the pixel noise does), so one seed gives the same scene at any size.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from mtl_robust.data.common import select_tasks

TASKS: tuple[str, ...] = ("seg", "normal", "depth", "keypoints", "edges")
CLASS_NAMES: tuple[str, ...] = ("floor", "wall", "ceiling", "box", "sphere", "cylinder", "picture", "rug")
FLOOR, WALL, CEILING, BOX, SPHERE, CYLINDER, PICTURE, RUG = range(8)
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}

# Material slots: one colour/texture per slot; the slot is also the instance id used for edges.
_SLOT_FLOOR, _SLOT_WALL, _SLOT_CEILING, _SLOT_RUG, _SLOT_PICTURE0 = 0, 1, 2, 3, 4
_MAX_PICTURES = 2
_SLOT_OBJECT0 = _SLOT_PICTURE0 + _MAX_PICTURES
_MAX_OBJECTS = 6
_NUM_SLOTS = _SLOT_OBJECT0 + _MAX_OBJECTS
_FACES_PER_SLOT = 8  # face key = slot * 8 + face; room walls are faces 2..5 of the wall slot
_NUM_WAVES = 3
_EPS = 1e-4
_CHUNK = 16  # images per vectorised render batch: measured flat from 4 to 64, temporaries stay cache-sized

SeedLike = int | Sequence[int]


@dataclass
class _Scene:
    """All random parameters of one image (independent of the resolution)."""

    room: np.ndarray  # (3,) Rx, Ry, Rz
    cam_pos: np.ndarray  # (3,)
    rot: np.ndarray  # (3, 3) camera-to-world rotation
    light: np.ndarray  # (3,)
    light_int: float
    ambient: float
    colours: np.ndarray  # (_NUM_SLOTS, 2, 3) two tones per material slot
    scales: np.ndarray  # (_NUM_SLOTS,) pattern period in metres
    waves: np.ndarray  # (_NUM_WAVES, 4) direction * frequency (3) and phase, for the albedo noise
    # (centre, half sizes, yaw, slot); boxes rest on the floor
    boxes: list[tuple[np.ndarray, np.ndarray, float, int]] = field(default_factory=list)
    # (centre, radius, slot)
    spheres: list[tuple[np.ndarray, float, int]] = field(default_factory=list)
    # (cx, cz, radius, y0, y1, slot); vertical axis
    cylinders: list[tuple[float, float, float, float, float, int]] = field(default_factory=list)
    # (wall face 2..5, u0, u1, y0, y1) with u along the wall (z for faces 2/3, x for faces 4/5)
    pictures: list[tuple[int, float, float, float, float]] = field(default_factory=list)
    # (x0, x1, z0, z1) on the floor
    rugs: list[tuple[float, float, float, float]] = field(default_factory=list)


def camera_intrinsics(height: int, width: int, fov_deg: float = 60.0) -> tuple[float, float, float, float]:
    """Pinhole intrinsics ``(fx, fy, cx, cy)`` in pixels for a horizontal field of view (square pixels)."""
    _check_size(height, width)
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg must be in (0, 180) degrees, got {fov_deg}")
    f = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return f, f, width / 2.0, height / 2.0


def backproject_depth(depth: np.ndarray, fov_deg: float = 60.0) -> np.ndarray:
    """Camera-frame points ``[H, W, 3]`` (x right, y up, z towards the viewer) from z-depth ``[H, W]``."""
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be a 2-D [H, W] array, got shape {depth.shape}")
    h, w = depth.shape
    fx, fy, cx, cy = camera_intrinsics(h, w, fov_deg)
    u = np.arange(w) + 0.5
    v = np.arange(h) + 0.5
    x = (u[None, :] - cx) / fx * depth
    y = -(v[:, None] - cy) / fy * depth
    return np.stack([x, y, -depth], axis=-1)


def _check_size(height: int, width: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


# --------------------------------------------------------------------------------------------------------
# Scene sampling (per image, from its own generator)
# --------------------------------------------------------------------------------------------------------


def _rot_yaw_pitch(yaw: float, pitch: float) -> np.ndarray:
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    r_yaw = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    r_pitch = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    return r_yaw @ r_pitch


def _free_distance(x: float, z: float, fx: float, fz: float, rx: float, rz: float) -> float:
    """Horizontal distance from (x, z) along (fx, fz) to the room wall."""
    dist = math.inf
    for pos, f, size in ((x, fx, rx), (z, fz, rz)):
        if f > 1e-9:
            dist = min(dist, (size - pos) / f)
        elif f < -1e-9:
            dist = min(dist, -pos / f)
    return dist


def _sample_scene(rng: np.random.Generator, fov_deg: float) -> _Scene:
    room = np.array([rng.uniform(4.0, 8.0), rng.uniform(2.5, 3.2), rng.uniform(4.0, 8.0)])
    rx, ry, rz = room
    for _ in range(20):
        cam = np.array([rng.uniform(0.6, rx - 0.6), rng.uniform(1.1, 1.8), rng.uniform(0.6, rz - 0.6)])
        yaw = rng.uniform(0.0, 2.0 * math.pi)
        # Reject views that stare into a nearby wall: they show one class and little geometry.
        if _free_distance(cam[0], cam[2], -math.sin(yaw), -math.cos(yaw), rx, rz) >= 2.5:
            break
    pitch = math.radians(rng.uniform(-25.0, 8.0))
    rot = _rot_yaw_pitch(yaw, pitch)
    light = np.array([rng.uniform(0.2, 0.8) * rx, ry - 0.15, rng.uniform(0.2, 0.8) * rz])

    colours = rng.uniform(0.1, 0.95, size=(_NUM_SLOTS, 2, 3))
    # Second tone is a darker shade of the first for most surfaces: readable texture, not noise.
    colours[:, 1] = np.clip(colours[:, 0] * rng.uniform(0.45, 0.8, size=(_NUM_SLOTS, 1)), 0.0, 1.0)
    colours[_SLOT_CEILING] = rng.uniform(0.7, 0.95) * np.ones((2, 3)) + rng.uniform(-0.05, 0.05, size=(2, 3))
    colours[_SLOT_PICTURE0:_SLOT_OBJECT0, 1] = rng.uniform(0.05, 0.95, size=(_MAX_PICTURES, 3))
    scales = rng.uniform(0.25, 0.8, size=_NUM_SLOTS)
    directions = rng.normal(size=(_NUM_WAVES, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    waves = np.concatenate(
        [
            directions * rng.uniform(3.0, 12.0, size=(_NUM_WAVES, 1)),
            rng.uniform(0, 2 * math.pi, (_NUM_WAVES, 1)),
        ],
        axis=1,
    )
    scene = _Scene(
        room, cam, rot, light, rng.uniform(0.5, 0.8), rng.uniform(0.3, 0.45), colours, scales, waves
    )

    # Objects: most are placed in the view frustum so that every image shows some of them.
    half_fov = math.radians(fov_deg) / 2.0
    num_objects = int(rng.integers(2, _MAX_OBJECTS + 1))
    for k in range(num_objects):
        slot = _SLOT_OBJECT0 + k
        kind = int(rng.integers(0, 3))
        if kind == 0:
            half = np.array([rng.uniform(0.15, 0.6), rng.uniform(0.15, 0.75), rng.uniform(0.15, 0.6)])
            radius = float(np.hypot(half[0], half[2]))
        elif kind == 1:
            radius = rng.uniform(0.2, 0.55)
            centre_y = radius if rng.random() < 0.6 else rng.uniform(radius + 0.3, ry - radius - 0.2)
        else:
            radius = rng.uniform(0.12, 0.45)
            tall = min(rng.uniform(0.4, 2.0), ry - 0.1)
        for _ in range(10):
            if rng.random() < 0.75:
                angle = yaw + rng.uniform(-0.9, 0.9) * half_fov
                dist = rng.uniform(1.2, 4.5)
                x, z = cam[0] - math.sin(angle) * dist, cam[2] - math.cos(angle) * dist
            else:
                x, z = rng.uniform(0.0, rx), rng.uniform(0.0, rz)
            inside = radius + 0.05 <= x <= rx - radius - 0.05 and radius + 0.05 <= z <= rz - radius - 0.05
            # Keep the camera outside every object (rays then always start outside the convex solids).
            if inside and math.hypot(x - cam[0], z - cam[2]) > radius + 0.4:
                break
        else:
            continue
        if kind == 0:
            scene.boxes.append((np.array([x, half[1], z]), half, rng.uniform(0.0, math.pi), slot))
        elif kind == 1:
            scene.spheres.append((np.array([x, centre_y, z]), radius, slot))
        else:
            scene.cylinders.append((x, z, radius, 0.0, tall, slot))

    num_pictures = int(rng.choice([0, 1, 1, 2]))
    for _ in range(num_pictures):
        face = int(rng.integers(2, 6))
        wall_len = rx if face >= 4 else rz
        size_u = min(rng.uniform(0.6, 1.6), wall_len - 0.4)
        size_y = rng.uniform(0.5, 1.0)
        u0 = rng.uniform(0.2, wall_len - 0.2 - size_u)
        y0 = min(rng.uniform(0.9, 1.5), ry - 0.15 - size_y)
        scene.pictures.append((face, u0, u0 + size_u, y0, y0 + size_y))
    if rng.random() < 0.7:
        sx, sz = rng.uniform(1.2, min(3.0, rx - 0.4)), rng.uniform(1.0, min(2.5, rz - 0.4))
        x0, z0 = rng.uniform(0.2, rx - 0.2 - sx), rng.uniform(0.2, rz - 0.2 - sz)
        scene.rugs.append((x0, x0 + sx, z0, z0 + sz))
    return scene


# --------------------------------------------------------------------------------------------------------
# Vectorised ray casting over a batch of scenes
# --------------------------------------------------------------------------------------------------------


def _pad(rows: list[list], width: int, fill: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Stack ragged per-image lists of parameter vectors into [B, K, width] plus an active mask [B, K]."""
    k = max(1, max(len(r) for r in rows))
    out = np.full((len(rows), k, width), fill, dtype=np.float32)
    active = np.zeros((len(rows), k), dtype=bool)
    for b, r in enumerate(rows):
        for j, v in enumerate(r):
            out[b, j] = v
            active[b, j] = True
    return out, active


def _dot3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # Explicit sum instead of matmul/einsum: elementwise ops give bit-identical results for any batch size.
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _take(params: np.ndarray, idx: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Parameters [M, ...] of the object idx[b, p] of image b, for the M pixels where mask [B, P] holds."""
    return params[np.nonzero(mask)[0], idx[mask]]


def _hit_room(o: np.ndarray, d: np.ndarray, room: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exit point of rays from inside the room box: t [B,P], face [B,P] (0 floor, 1 ceiling, 2..5 walls)."""
    t, face = None, None
    # axis 1 -> floor(0)/ceiling(1); axis 0 -> walls x=0 (2) / x=Rx (3); axis 2 -> z=0 (4) / z=Rz (5)
    for axis, base in ((1, 0), (0, 2), (2, 4)):
        da = d[..., axis]
        positive = da > 0
        bound = np.where(positive, room[:, axis, None], np.float32(0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            ta = np.where(da == 0, np.inf, (bound - o[:, axis, None]) / da)
        fa = base + positive.astype(np.int64)
        if t is None:
            t, face = ta, fa
        else:
            closer = ta < t
            t, face = np.where(closer, ta, t), np.where(closer, fa, face)
    return t, face


_ROOM_NORMALS = np.array([[0, 1, 0], [0, -1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 1], [0, 0, -1]], np.float32)


def _hit_sphere(o: np.ndarray, d: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, None]:
    """One sphere per image. o [n,3], d [n,P,3], params [n,5]: centre(3), radius, slot -> t [n,P]."""
    oc = o - params[:, :3]  # [n,3]
    r = params[:, 3:4]
    a = _dot3(d, d)
    b = _dot3(d, oc[:, None, :])
    c = _dot3(oc, oc)[:, None] - r * r
    disc = b * b - a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    return np.where((disc >= 0) & (t > _EPS), t, np.inf), None


def _hit_box(o: np.ndarray, d: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, None]:
    """One yawed box per image (slab method). params [n,9]: centre(3), half(3), cos/sin yaw, slot."""
    cos, sin = params[:, 6:7], params[:, 7:8]  # [n,1]
    rel = o - params[:, :3]  # [n,3]
    rx, ry, rz = rel[:, 0:1], rel[:, 1:2], rel[:, 2:3]
    dx, dy, dz = d[..., 0], d[..., 1], d[..., 2]  # [n,P]
    # Ray in the box frame (rotate by -yaw about y); y is unrotated.
    origin_local = (cos * rx - sin * rz, ry, sin * rx + cos * rz)
    dir_local = (cos * dx - sin * dz, dy, sin * dx + cos * dz)
    tnear = tfar = None
    for axis in range(3):
        ol, dl, h = origin_local[axis], dir_local[axis], params[:, 3 + axis, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.float32(1.0) / np.where(dl == 0, np.float32(1e-30), dl)
        t1 = (-h - ol) * inv
        t2 = (h - ol) * inv
        lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
        tnear = lo if tnear is None else np.maximum(tnear, lo)
        tfar = hi if tfar is None else np.minimum(tfar, hi)
    return np.where((tnear <= tfar) & (tnear > _EPS), tnear, np.inf), None


def _hit_cylinder(o: np.ndarray, d: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One vertical capped cylinder per image. params [n,6]: cx, cz, r, y0, y1, slot.

    Returns t and face [n,P] (0 side, 1 top, 2 bottom).
    """
    ox = o[:, 0:1] - params[:, 0:1]
    oz = o[:, 2:3] - params[:, 1:2]
    oy = o[:, 1:2]
    r, y0, y1 = params[:, 2:3], params[:, 3:4], params[:, 4:5]
    dx, dy, dz = d[..., 0], d[..., 1], d[..., 2]
    a = np.maximum(dx * dx + dz * dz, np.float32(1e-12))
    b = ox * dx + oz * dz
    c = ox * ox + oz * oz - r * r
    disc = b * b - a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    y_side = oy + t * dy
    t = np.where((disc >= 0) & (t > _EPS) & (y_side >= y0) & (y_side <= y1), t, np.inf)
    face = np.zeros(t.shape, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_dy = np.float32(1.0) / np.where(dy == 0, np.float32(1e-30), dy)
    for face_id, plane, facing in ((1, y1, dy < 0), (2, y0, dy > 0)):
        t_cap = (plane - oy) * inv_dy
        px, pz = ox + t_cap * dx, oz + t_cap * dz
        closer = facing & (t_cap > _EPS) & (px * px + pz * pz <= r * r) & (t_cap < t)
        t = np.where(closer, t_cap, t)
        face = np.where(closer, face_id, face)
    return t, face


def _trace(scenes: list[_Scene], dirs_cam: np.ndarray) -> dict[str, np.ndarray]:
    """Cast one ray per pixel for every scene; returns per-pixel t, point, world normal, label, slot, face."""
    f32 = np.float32
    rot = np.stack([s.rot for s in scenes]).astype(f32)  # [B,3,3]
    o = np.stack([s.cam_pos for s in scenes]).astype(f32)  # [B,3]
    room = np.stack([s.room for s in scenes]).astype(f32)
    # World ray directions with unit forward component, so the ray parameter t is the z-depth.
    dc = dirs_cam.astype(f32)[None]
    d = np.stack([_dot3(dc, rot[:, None, i, :]) for i in range(3)], axis=-1)  # [B,P,3]

    t, face = _hit_room(o, d, room)
    normal = _ROOM_NORMALS[face]
    label = np.select([face == 0, face == 1], [FLOOR, CEILING], WALL)
    slot = np.select([face == 0, face == 1], [_SLOT_FLOOR, _SLOT_CEILING], _SLOT_WALL)

    sph = _pad([[[*c, r, s] for c, r, s in sc.spheres] for sc in scenes], 5)
    box = _pad([[[*c, *h, math.cos(y), math.sin(y), s] for c, h, y, s in sc.boxes] for sc in scenes], 9)
    cyl = _pad([[list(c) for c in sc.cylinders] for sc in scenes], 6)
    which = np.zeros(t.shape, dtype=np.int64)  # 0 room, 1 sphere, 2 box, 3 cylinder
    index = np.zeros(t.shape, dtype=np.int64)  # which object of that kind
    obj_face = np.zeros(t.shape, dtype=np.int64)
    # Loop over object slots, casting only for the images that have an object in that slot: the work is
    # proportional to the number of objects rather than to batch size times the largest object count.
    for kind, (params, active), hit in ((1, sph, _hit_sphere), (2, box, _hit_box), (3, cyl, _hit_cylinder)):
        for j in range(params.shape[1]):
            imgs = np.nonzero(active[:, j])[0]
            if imgs.size == 0:
                continue
            sel = slice(None) if imgs.size == len(scenes) else imgs
            t_obj, f_obj = hit(o[sel], d[sel], params[sel, j])
            closer = t_obj < t[sel]
            t[sel] = np.where(closer, t_obj, t[sel])
            which[sel] = np.where(closer, kind, which[sel])
            index[sel] = np.where(closer, j, index[sel])
            if f_obj is not None:
                obj_face[sel] = np.where(closer, f_obj, obj_face[sel])
    sph, box, cyl = sph[0], box[0], cyl[0]
    point = o[:, None, :] + t[..., None] * d

    m = which == 1
    if m.any():
        sp = _take(sph, index, m)
        normal[m] = (point[m] - sp[:, :3]) / sp[:, 3:4]
        label[m], slot[m], face[m] = SPHERE, sp[:, 4].astype(np.int64), 0
    m = which == 2
    if m.any():
        bp = _take(box, index, m)
        rel = point[m] - bp[:, :3]
        cos, sin = bp[:, 6], bp[:, 7]
        local = np.stack(
            [cos * rel[:, 0] - sin * rel[:, 2], rel[:, 1], sin * rel[:, 0] + cos * rel[:, 2]], -1
        )
        # The entry face is the one the local hit point lies on: the axis closest to its half-size.
        ax = np.argmax(np.abs(local) / bp[:, 3:6], axis=-1)
        rows = np.arange(ax.shape[0])
        n_local = np.zeros_like(local)
        n_local[rows, ax] = np.sign(local[rows, ax])
        normal[m] = np.stack(
            [
                cos * n_local[:, 0] + sin * n_local[:, 2],
                n_local[:, 1],
                -sin * n_local[:, 0] + cos * n_local[:, 2],
            ],
            axis=-1,
        )
        label[m], slot[m] = BOX, bp[:, 8].astype(np.int64)
        face[m] = 2 * ax + (n_local[rows, ax] > 0)
    m = which == 3
    if m.any():
        cp = _take(cyl, index, m)
        fc = obj_face[m]
        zeros = np.zeros(fc.shape[0], dtype=f32)
        side = np.stack(
            [(point[m][:, 0] - cp[:, 0]) / cp[:, 2], zeros, (point[m][:, 2] - cp[:, 1]) / cp[:, 2]], -1
        )
        cap = np.stack([zeros, np.where(fc == 1, f32(1.0), f32(-1.0)), zeros], axis=-1)
        normal[m] = np.where((fc == 0)[:, None], side, cap)
        label[m], slot[m], face[m] = CYLINDER, cp[:, 5].astype(np.int64), fc

    # Decals: coplanar with floor/walls, so they change labels and texture but not depth or normals.
    for b, sc in enumerate(scenes):
        px, py, pz = point[b, :, 0], point[b, :, 1], point[b, :, 2]
        on_room = which[b] == 0
        for x0, x1, z0, z1 in sc.rugs:
            inside = on_room & (face[b] == 0) & (px >= x0) & (px <= x1) & (pz >= z0) & (pz <= z1)
            label[b, inside], slot[b, inside] = RUG, _SLOT_RUG
        for j, (wall, u0, u1, y0, y1) in enumerate(sc.pictures):
            u = px if wall >= 4 else pz
            inside = on_room & (face[b] == wall) & (u >= u0) & (u <= u1) & (py >= y0) & (py <= y1)
            label[b, inside], slot[b, inside] = PICTURE, _SLOT_PICTURE0 + j

    # Orient towards the camera; a no-op for this geometry, but it makes the convention hold by construction.
    normal = np.where((_dot3(normal, d) > 0)[..., None], -normal, normal)
    normal = normal / np.linalg.norm(normal, axis=-1, keepdims=True)
    return {
        "t": t,
        "point": point,
        "dir": d,
        "normal": normal,
        "label": label,
        "slot": slot,
        "face": face,
        "which": which,
        "k": index,
        "box": box,
        "cyl": cyl,
        "sph": sph,
    }


# --------------------------------------------------------------------------------------------------------
# Appearance
# --------------------------------------------------------------------------------------------------------


def _stripes(u: np.ndarray, period: np.ndarray) -> np.ndarray:
    # Soft-edged square wave: sharp enough to read as stripes, smooth enough not to alias at 64 px.
    return np.clip(3.0 * np.sin(2.0 * math.pi * u / period), -1.0, 1.0) * 0.5 + 0.5


def _checker(coords: list[np.ndarray], period: np.ndarray) -> np.ndarray:
    total = sum(np.floor(c / period) for c in coords)
    return np.mod(total, 2.0)


def _shade(scenes: list[_Scene], tr: dict[str, np.ndarray]) -> np.ndarray:
    """Linear-ish RGB [B,P,3] before noise: textured albedo times Lambertian + ambient + headlight."""
    nb = len(scenes)
    label, slot, point, normal = tr["label"], tr["slot"], tr["point"], tr["normal"]
    bidx = np.arange(nb)[:, None]
    scales = np.stack([s.scales for s in scenes]).astype(np.float32)[bidx, slot]  # [B,P]
    colours = np.stack([s.colours for s in scenes]).astype(np.float32)[bidx, slot]  # [B,P,2,3]
    waves = np.stack([s.waves for s in scenes]).astype(np.float32)  # [B,W,4]
    px, pz = point[..., 0], point[..., 2]

    pattern = np.zeros(label.shape, dtype=np.float32)
    m = label == FLOOR
    pattern[m] = _checker([px[m], pz[m]], scales[m] * 1.5)
    m = label == WALL
    along = np.where(tr["face"] >= 4, px, pz)
    pattern[m] = _stripes(along[m], scales[m])
    m = label == RUG
    pattern[m] = _stripes(px[m] + 0.3 * pz[m], scales[m] * 0.5)
    m = (label == BOX) | (label == SPHERE) | (label == CYLINDER) | (label == PICTURE)
    if m.any():
        # Object textures live in object coordinates so that they stick to the object, not the world.
        k = tr["k"]
        mb = label == BOX
        bp = _take(tr["box"], k, mb)
        rel = point[mb] - bp[:, :3]
        cos, sin = bp[:, 6], bp[:, 7]
        lx, lz = cos * rel[:, 0] - sin * rel[:, 2], sin * rel[:, 0] + cos * rel[:, 2]
        pattern[mb] = _checker([lx + 10.0, rel[:, 1] + 10.0, lz + 10.0], scales[mb] * 0.6)
        ms = label == SPHERE
        sp = _take(tr["sph"], k, ms)
        pattern[ms] = _stripes(point[ms][:, 1] - sp[:, 1], scales[ms] * 0.4)
        mc = label == CYLINDER
        cp = _take(tr["cyl"], k, mc)
        angle = np.arctan2(point[mc][:, 2] - cp[:, 1], point[mc][:, 0] - cp[:, 0])
        side = tr["face"][mc] == 0
        pattern[mc] = np.where(side, _stripes(angle, np.full(angle.shape, 2.0 * math.pi / 8.0)), 0.3)
        mp = label == PICTURE
        wv = waves[np.nonzero(mp)[0]]
        q = point[mp]
        art = np.sin(3.0 * _dot3(q, wv[:, 0, :3]) + wv[:, 0, 3]) * np.sin(
            3.0 * _dot3(q, wv[:, 1, :3]) + wv[:, 1, 3]
        )
        pattern[mp] = 0.5 + 0.5 * art

    albedo = colours[..., 0, :] * (1.0 - pattern[..., None]) + colours[..., 1, :] * pattern[..., None]
    noise = (
        sum(
            np.sin(_dot3(point, waves[:, None, j, :3]) + waves[:, None, j, 3:4][..., 0])
            for j in range(_NUM_WAVES)
        )
        / _NUM_WAVES
    )
    albedo = albedo * (1.0 + 0.12 * noise[..., None])

    light = np.stack([s.light for s in scenes]).astype(np.float32)[:, None, :]
    to_light = light - point
    dist = np.linalg.norm(to_light, axis=-1)
    lambert = np.maximum(_dot3(normal, to_light) / dist, 0.0)
    intensity = np.array([s.light_int for s in scenes], dtype=np.float32)[:, None]
    ambient = np.array([s.ambient for s in scenes], dtype=np.float32)[:, None]
    d = tr["dir"]
    head = np.maximum(-_dot3(normal, d) / np.linalg.norm(d, axis=-1), 0.0)
    shading = ambient + intensity * lambert * (4.0 / (3.0 + dist * dist / 4.0)) + 0.15 * head
    return albedo * shading[..., None]


def _corners(scene: _Scene) -> np.ndarray:
    """World positions [C,3] of the geometric corners that get a keypoint blob."""
    rx, ry, rz = scene.room
    pts = [[x, y, z] for x in (0.0, rx) for y in (0.0, ry) for z in (0.0, rz)]
    for centre, half, yaw, _ in scene.boxes:
        c, s = math.cos(yaw), math.sin(yaw)
        for lx in (-half[0], half[0]):
            for ly in (-half[1], half[1]):
                for lz in (-half[2], half[2]):
                    pts.append([centre[0] + c * lx + s * lz, centre[1] + ly, centre[2] - s * lx + c * lz])
    for x0, x1, z0, z1 in scene.rugs:
        pts += [[x, 0.0, z] for x in (x0, x1) for z in (z0, z1)]
    for wall, u0, u1, y0, y1 in scene.pictures:
        fixed = {2: 0.0, 3: rx, 4: 0.0, 5: rz}[wall]
        for u in (u0, u1):
            for y in (y0, y1):
                pts.append([fixed, y, u] if wall < 4 else [u, y, fixed])
    return np.asarray(pts, dtype=np.float64)


def _keypoints(scenes: list[_Scene], depth: np.ndarray, fov_deg: float) -> np.ndarray:
    """Heat maps [B,H,W]: max of Gaussian blobs at visible projected corners."""
    nb, h, w = depth.shape
    fx, fy, cx, cy = camera_intrinsics(h, w, fov_deg)
    sigma = max(1.0, 0.02 * max(h, w))
    heat = np.zeros((nb, h, w))
    cols = np.arange(w) + 0.5
    rows = np.arange(h) + 0.5
    for b, sc in enumerate(scenes):
        cam = (_corners(sc) - sc.cam_pos) @ sc.rot  # world -> camera: R^T (p - o), row-vector form
        z = -cam[:, 2]
        front = z > 0.05
        u = cx + fx * cam[front, 0] / z[front]
        v = cy - fy * cam[front, 1] / z[front]
        z = z[front]
        inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        u, v, z = u[inside], v[inside], z[inside]
        seen = depth[b, v.astype(np.int64), u.astype(np.int64)]
        # A corner lies on the boundary of the surfaces around it, so its pixel sees roughly its depth unless
        # something nearer occludes it.
        visible = seen >= z - (0.05 + 0.03 * z)
        for uu, vv in zip(u[visible], v[visible]):
            gx = np.exp(-((cols - uu) ** 2) / (2 * sigma * sigma))
            gy = np.exp(-((rows - vv) ** 2) / (2 * sigma * sigma))
            np.maximum(heat[b], gy[:, None] * gx[None, :], out=heat[b])
    return heat


def _edges(slot: np.ndarray, face: np.ndarray) -> np.ndarray:
    """[B,H,W]: 1 across surface (instance/class) boundaries, 0.5 across creases within one surface."""
    key = slot * _FACES_PER_SLOT + face
    out = np.zeros(slot.shape)
    for axis in (1, 2):
        a = [slice(None)] * 3
        c = [slice(None)] * 3
        a[axis], c[axis] = slice(None, -1), slice(1, None)
        a, c = tuple(a), tuple(c)
        val = np.where(slot[a] != slot[c], 1.0, np.where(key[a] != key[c], 0.5, 0.0))
        np.maximum(out[a], val, out=out[a])
        np.maximum(out[c], val, out=out[c])
    return out


# --------------------------------------------------------------------------------------------------------
# Public batch renderer and dataset
# --------------------------------------------------------------------------------------------------------


def render_scenes(
    seeds: Sequence[SeedLike],
    height: int = 64,
    width: int = 64,
    tasks: Sequence[str] = TASKS,
    noise_std: float = 0.02,
    fov_deg: float = 60.0,
    invalid_regions: bool = False,
) -> dict[str, np.ndarray]:
    """Render one image per seed, vectorised over the batch.

    Each seed (an int or a sequence of non-negative ints, passed to ``numpy.random.SeedSequence``) fully
    determines its image. Returns numpy arrays with a leading batch axis: ``x`` float32 [B,3,H,W] and the
    requested targets (``seg`` int64 [B,H,W], ``depth`` float32 [B,1,H,W], ``normal`` float32 [B,3,H,W],
    ``keypoints``/``edges`` float32 [B,1,H,W]); conventions in the module docstring.
    """
    _check_size(height, width)
    tasks = select_tasks(tasks, TASKS, "the synthetic scenes")
    if not noise_std >= 0.0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    fx, fy, cx, cy = camera_intrinsics(height, width, fov_deg)
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty: pass one seed per image to render")
    uu, vv = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    dirs_cam = np.stack([(uu - cx) / fx, -(vv - cy) / fy, -np.ones_like(uu)], axis=-1).reshape(-1, 3)

    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(seeds), _CHUNK):
        chunk = seeds[start : start + _CHUNK]
        scenes, noise_rngs, mask_rngs = [], [], []
        for s in chunk:
            # Children are keyed by index: the scene and noise streams are those of a two-way spawn.
            scene_ss, noise_ss, mask_ss = np.random.SeedSequence(s).spawn(3)
            scenes.append(_sample_scene(np.random.default_rng(scene_ss), fov_deg))
            noise_rngs.append(np.random.default_rng(noise_ss))
            mask_rngs.append(np.random.default_rng(mask_ss))
        nb = len(scenes)
        tr = _trace(scenes, dirs_cam)
        rgb = _shade(scenes, tr).reshape(nb, height, width, 3).transpose(0, 3, 1, 2).astype(np.float32)
        if noise_std > 0:
            rgb += noise_std * np.stack(
                [r.standard_normal((3, height, width), dtype=np.float32) for r in noise_rngs]
            )
        out = {"x": np.clip(rgb, 0.0, 1.0)}
        depth = tr["t"].reshape(nb, height, width)
        if "seg" in tasks:
            out["seg"] = tr["label"].reshape(nb, height, width).astype(np.int64)
        if "depth" in tasks:
            out["depth"] = depth[:, None].astype(np.float32)
        if "normal" in tasks:
            # World -> camera: n_cam = R^T n_world, written out to stay elementwise.
            rot = np.stack([s.rot for s in scenes])
            n = tr["normal"]
            n_cam = np.stack([_dot3(n, rot[:, None, :, i]) for i in range(3)], axis=-1)
            n_cam /= np.linalg.norm(n_cam, axis=-1, keepdims=True)
            out["normal"] = n_cam.reshape(nb, height, width, 3).transpose(0, 3, 1, 2).astype(np.float32)
        if "keypoints" in tasks:
            out["keypoints"] = _keypoints(scenes, depth, fov_deg)[:, None].astype(np.float32)
        if "edges" in tasks:
            shape = (nb, height, width)
            out["edges"] = _edges(tr["slot"].reshape(shape), tr["face"].reshape(shape))[:, None].astype(
                np.float32
            )
        if invalid_regions:
            shape = (nb, height, width)
            _apply_invalid_regions(
                out,
                mask_rngs,
                tr["label"].reshape(shape),
                tr["slot"].reshape(shape),
                tr["face"].reshape(shape),
            )
        for key, value in out.items():
            parts.setdefault(key, []).append(np.ascontiguousarray(value))
    return {key: np.concatenate(value) if len(value) > 1 else value[0] for key, value in parts.items()}


def _band(key: np.ndarray) -> np.ndarray:
    """Bool [H,W]: pixels whose key differs from a 4-neighbour's (both sides of every boundary)."""
    band = np.zeros(key.shape, dtype=bool)
    vertical = key[1:] != key[:-1]
    horizontal = key[:, 1:] != key[:, :-1]
    band[1:] |= vertical
    band[:-1] |= vertical
    band[:, 1:] |= horizontal
    band[:, :-1] |= horizontal
    return band


def _ellipses(
    rng: np.random.Generator, count: int, radius: tuple[float, float], h: int, w: int
) -> np.ndarray:
    """Bool [H,W]: union of `count` axis-aligned ellipses placed in normalised image coordinates."""
    yy, xx = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    out = np.zeros((h, w), dtype=bool)
    for _ in range(count):
        cy, cx = rng.uniform(0.0, 1.0, 2)
        ry, rx = rng.uniform(*radius, 2)
        out |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0
    return out


def _invalid_masks(
    rng: np.random.Generator, label: np.ndarray, slot: np.ndarray, face: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seg unlabelled, depth missing, normal invalid) bool [H,W] masks of one image."""
    h, w = label.shape
    boundary = _band(slot)
    seg_ignore = boundary | _ellipses(rng, int(rng.integers(1, 4)), (0.05, 0.13), h, w)
    depth_missing = np.zeros((h, w), dtype=bool)
    if rng.random() < 0.5:
        depth_missing |= label == PICTURE  # mirrors: the sensor sees no surface there
    depth_missing |= _ellipses(rng, int(rng.integers(1, 4)), (0.08, 0.2), h, w) & (label == WALL)
    # Dropout patches on a fixed 8x8 grid of the image (resolution independent), nearest-upsampled.
    coarse = rng.random((8, 8)) < 0.15
    patches = coarse[(np.arange(h) * 8) // h][:, (np.arange(w) * 8) // w]
    normal_invalid = depth_missing | _band(slot * _FACES_PER_SLOT + face) | patches
    return seg_ignore, depth_missing, normal_invalid


def _apply_invalid_regions(
    out: dict[str, np.ndarray],
    rngs: list[np.random.Generator],
    label: np.ndarray,
    slot: np.ndarray,
    face: np.ndarray,
) -> None:
    """Mark invalid pixels in place: seg 255, depth 0, normals all-zero (the data contract's markers)."""
    for b, rng in enumerate(rngs):
        seg_ignore, depth_missing, normal_invalid = _invalid_masks(rng, label[b], slot[b], face[b])
        if "seg" in out:
            out["seg"][b][seg_ignore] = 255
        if "depth" in out:
            out["depth"][b, 0][depth_missing] = 0.0
        if "normal" in out:
            out["normal"][b][:, normal_invalid] = 0.0


def invalid_fractions(data: dict[str, np.ndarray]) -> dict[str, float]:
    """Fraction of invalid pixels per task in rendered arrays (seg 255, depth 0, all-zero normals)."""
    out = {}
    if "seg" in data:
        out["seg"] = float((data["seg"] == 255).mean())
    if "depth" in data:
        out["depth"] = float((data["depth"] <= 0).mean())
    if "normal" in data:
        out["normal"] = float((data["normal"] == 0).all(axis=1).mean())
    return out


class SyntheticScenes(Dataset):
    """Ray-cast indoor scenes with exact seg/depth/normal (and keypoints/edges) targets.

    ``dataset[i] -> (x, targets)`` following the project's data contract; see the module docstring for the
    conventions. With ``cache=True`` (default) the whole set is rendered once at construction in vectorised
    batches (about 600 images/s at 64x64 on one CPU thread, so the default 512 + 128 images take about a
    second) and every epoch reuses it; with ``cache=False`` each item is rendered on every access (a little
    slower per image, no memory held, work repeated each epoch). Both give bit-identical items.
    """

    def __init__(
        self,
        num_images: int = 512,
        height: int = 64,
        width: int = 64,
        tasks: Sequence[str] = ("seg", "normal", "depth"),
        seed: int = 0,
        split: str = "train",
        noise_std: float = 0.02,
        cache: bool = True,
        fov_deg: float = 60.0,
        invalid_regions: bool = True,
    ) -> None:
        if isinstance(num_images, bool) or not isinstance(num_images, int | np.integer) or num_images <= 0:
            raise ValueError(f"num_images must be a positive int, got {num_images!r}")
        _check_size(height, width)
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLITS)}")
        if not noise_std >= 0.0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        camera_intrinsics(height, width, fov_deg)
        self.tasks: tuple[str, ...] = select_tasks(tasks, TASKS, "the synthetic scenes")
        self.num_classes: int = len(CLASS_NAMES)
        self.class_names: tuple[str, ...] = CLASS_NAMES
        self.num_images, self.height, self.width = int(num_images), int(height), int(width)
        self.seed, self.split, self.noise_std, self.fov_deg = (
            int(seed),
            split,
            float(noise_std),
            float(fov_deg),
        )
        self.intrinsics: tuple[float, float, float, float] = camera_intrinsics(height, width, fov_deg)
        self.invalid_regions = bool(invalid_regions)
        self._cache: dict[str, torch.Tensor] | None = None
        if cache:
            self._cache = {k: torch.from_numpy(v) for k, v in self._render(range(self.num_images)).items()}

    def _render(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        seeds = [(self.seed, SPLITS[self.split], int(i)) for i in indices]
        return render_scenes(
            seeds, self.height, self.width, self.tasks, self.noise_std, self.fov_deg, self.invalid_regions
        )

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index = operator.index(index)
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"index {index} out of range for a SyntheticScenes of {self.num_images} images")
        index = index % self.num_images
        if self._cache is not None:
            # Clones so that a caller's in-place edits (augmentation) cannot corrupt the cache.
            item = {k: v[index].clone() for k, v in self._cache.items()}
        else:
            item = {k: torch.from_numpy(v[0]) for k, v in self._render([index]).items()}
        x = item.pop("x")
        return x, {t: item[t] for t in self.tasks}

    def __repr__(self) -> str:
        return (
            f"SyntheticScenes(num_images={self.num_images}, height={self.height}, width={self.width}, "
            f"tasks={self.tasks}, seed={self.seed}, split={self.split!r})"
        )
