"""scenes: procedural, clearly synthetic 3D scenes with the NYUv2 task triple.

Each scene puts a few spheres and boxes (random size, yaw and colour) on a checkered ground
plane under a directional light with hard shadows, seen by a pinhole camera at a random
position looking at the middle. Rays are cast analytically per pixel, so the RGB image, the
semantic map (sky, ground, sphere, box), the depth (distance along the camera axis) and the
normals (unit vectors in camera coordinates, x right, y up, z towards the camera) agree
exactly. Sky pixels have depth 0 and normal 0 (no ground truth), as NYUv2's holes do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from onnxmtl.data.base import MultiTaskDataset, normalize_image
from onnxmtl.io_utils import atomic_write, default_cache
from onnxmtl.tasks import Task

CLASSES = ("sky", "ground", "sphere", "box")
SKY, GROUND, SPHERE, BOX = range(4)
FOV_DEGREES = 60.0
VERSION = 1
MAX_DISTANCE = 20.0  # the ground ends here; beyond is sky


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _sphere_hits(origin, dirs, center, radius):
    oc = origin - center
    b = dirs @ oc
    c = oc @ oc - radius * radius
    disc = b * b - c
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    t = np.where((disc > 0) & (t > 1e-4), t, np.inf)
    hit = np.where(np.isfinite(t), t, 0.0)
    return t, _normalize(origin + hit[:, None] * dirs - center)


def _box_hits(origin, dirs, center, half, yaw):
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])  # world -> box frame
    o = rot @ (origin - center)
    d = dirs @ rot.T
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1, t2 = (-half - o) * inv, (half - o) * inv
    tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
    near, far = tmin.max(axis=1), tmax.min(axis=1)
    t = np.where((near <= far) & (near > 1e-4), near, np.inf)
    axis = tmin.argmax(axis=1)
    local = np.zeros_like(d)
    local[np.arange(len(d)), axis] = -np.sign(d[np.arange(len(d)), axis])
    return t, local @ rot  # box frame -> world


def render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, ...]:
    """One scene: rgb (H, W, 3) uint8, seg (H, W) uint8, depth (H, W), normals (H, W, 3)."""
    # (shape, centre, radius or half sizes, rotation, colour)
    objects: list[tuple[int, np.ndarray, float | np.ndarray, float, np.ndarray]] = []
    for _ in range(rng.integers(2, 5)):
        x, z = rng.uniform(-2.5, 2.5, 2)
        colour = rng.uniform(0.15, 0.95, 3)
        if rng.random() < 0.5:
            r = rng.uniform(0.4, 1.0)
            objects.append((SPHERE, np.array([x, r, z]), r, 0.0, colour))
        else:
            half = rng.uniform(0.3, 0.9, 3)
            objects.append((BOX, np.array([x, half[1], z]), half, rng.uniform(0, np.pi), colour))

    azimuth, distance, height = rng.uniform(0, 2 * np.pi), rng.uniform(4, 6.5), rng.uniform(1.2, 3)
    eye = np.array([distance * np.cos(azimuth), height, distance * np.sin(azimuth)])
    target = np.array([*rng.uniform(-0.5, 0.5, 1), 0.5, *rng.uniform(-0.5, 0.5, 1)])
    forward = _normalize(target - eye)
    right = _normalize(np.cross(forward, [0.0, 1.0, 0.0]))
    up = np.cross(right, forward)
    half_width = np.tan(np.radians(FOV_DEGREES) / 2)
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    v, u = np.meshgrid(-coords, coords, indexing="ij")
    dirs = _normalize(forward + (u.reshape(-1, 1) * right + v.reshape(-1, 1) * up) * half_width)

    n = size * size
    t = np.full(n, np.inf)
    seg = np.full(n, SKY, np.uint8)
    normal = np.zeros((n, 3))
    albedo = np.zeros((n, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(dirs[:, 1] < -1e-6, -eye[1] / dirs[:, 1], np.inf)
    t_ground[t_ground > MAX_DISTANCE] = np.inf
    hit = t_ground < t
    t[hit], seg[hit], normal[hit] = t_ground[hit], GROUND, (0.0, 1.0, 0.0)
    point = eye + np.where(hit, t_ground, 0)[:, None] * dirs
    checker = (np.floor(point[:, 0]) + np.floor(point[:, 2])) % 2
    albedo[hit] = np.where(checker[hit, None] > 0, 0.75, 0.45) * np.array([0.9, 0.85, 0.7])
    hitters = []
    for cls, centre, extent, yaw, colour in objects:
        if cls == SPHERE:
            t_obj, n_obj = _sphere_hits(eye, dirs, centre, extent)
        else:
            t_obj, n_obj = _box_hits(eye, dirs, centre, extent, yaw)
        hitters.append((cls, centre, extent, yaw))
        hit = t_obj < t
        if hit.any():
            t[hit], seg[hit], normal[hit], albedo[hit] = t_obj[hit], cls, n_obj[hit], colour

    light = _normalize(np.array([rng.uniform(-1, 1), rng.uniform(0.6, 1.5), rng.uniform(-1, 1)]))
    found = np.isfinite(t)
    points = eye + np.where(found, t, 0)[:, None] * dirs + 1e-3 * normal
    shadow = np.zeros(n, bool)
    for cls, centre, extent, yaw in hitters:
        shadow |= _occluded(points, light, cls, centre, extent, yaw) & found
    lambert = np.clip(normal @ light, 0, 1) * ~shadow
    sky = np.array([0.55, 0.7, 0.95]) * (0.8 + 0.2 * dirs[:, 1:2])
    rgb = np.where(found[:, None], albedo * (0.3 + 0.7 * lambert[:, None]), sky)
    rgb = np.clip(rgb + rng.normal(0, 0.02, rgb.shape), 0, 1)

    depth = np.where(found, t * (dirs @ forward), 0.0)
    camera = np.stack([normal @ right, normal @ up, -(normal @ forward)], axis=1)
    camera[~found] = 0
    shape = (size, size)
    return (
        (rgb.reshape(*shape, 3) * 255).round().astype(np.uint8),
        seg.reshape(shape),
        depth.reshape(shape).astype(np.float32),
        camera.reshape(*shape, 3).astype(np.float32),
    )


def _occluded(points, light, cls, centre, extent, yaw) -> np.ndarray:
    if cls == SPHERE:
        oc = points - centre
        b = oc @ light
        c = (oc * oc).sum(1) - extent * extent
        disc = b * b - c
        return (disc > 0) & (c > 0) & (b < 0)
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
    o = (points - centre) @ rot.T
    d = rot @ light
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-extent - o) / d, (extent - o) / d
    near = np.minimum(t1, t2).max(1)
    far = np.maximum(t1, t2).min(1)
    return (near <= far) & (far > 1e-4)


def generate(count: int, size: int, seed: int) -> dict[str, np.ndarray]:
    """`count` scenes of `size` x `size` pixels, deterministic for `seed`."""
    rngs = np.random.default_rng(seed).spawn(count)
    parts = [render(rng, size) for rng in rngs]
    return {k: np.stack([p[i] for p in parts]) for i, k in enumerate(_KEYS)}


_KEYS = ("rgb", "seg", "depth", "normal")


class Scenes(MultiTaskDataset):
    """The scenes set for one split ('train' or 'test', disjoint seeds), cached as .npz."""

    name = "scenes"

    def __init__(
        self,
        split: str = "train",
        count: int | None = None,
        size: int = 64,
        seed: int = 0,
        cache_dir: str | Path | None = None,
    ) -> None:
        count = count if count is not None else (2000 if split == "train" else 500)
        seed = seed * 2 + (split == "test")
        folder = Path(cache_dir) if cache_dir is not None else default_cache()
        path = folder / f"scenes-v{VERSION}-{split}-{count}-{size}-{seed}.npz"
        if path.exists():
            with np.load(path) as data:
                arrays = {k: data[k] for k in _KEYS}
        else:
            arrays = generate(count, size, seed)
            # numpy's stub reads **arrays as its allow_pickle keyword
            atomic_write(path, lambda tmp: np.savez(tmp.open("wb"), **arrays))  # type: ignore[arg-type]
        self.rgb, self.seg = arrays["rgb"], arrays["seg"]
        self.depth, self.normal = arrays["depth"], arrays["normal"]
        self.size = size

    def tasks(self) -> list[Task]:
        return [
            Task("seg", "segmentation", len(CLASSES)),
            Task("depth", "depth"),
            Task("normal", "normals"),
        ]

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.size, self.size)

    def __len__(self) -> int:
        return len(self.rgb)

    def arrays(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self.rgb, {"seg": self.seg, "depth": self.depth, "normal": self.normal}

    def __getitem__(self, index: int):
        image = normalize_image(self.rgb[index].astype(np.float32) / 255.0)
        return image, {
            "seg": torch.from_numpy(self.seg[index].astype(np.int64)),
            "depth": torch.from_numpy(self.depth[index]).unsqueeze(0),
            "normal": torch.from_numpy(np.ascontiguousarray(self.normal[index].transpose(2, 0, 1))),
        }
