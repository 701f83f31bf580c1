"""Synthetic "shapes" semantic-segmentation dataset for the CPU demo.

Images are 128x128 RGB (8-bit) with a label map of the same size holding one of 5 classes:

    0 background  textured: smooth random colour field plus optional stripes/checker
    1 blob        filled ellipse or smooth blob, radius ~8-30 px
    2 ring        thin curved annulus or arc (150-360 degrees), radius 12-38 px, 3-5 px wide
    3 stroke      thin curvy line (sinusoid or cubic Bezier), 2-4 px wide
    4 polygon     filled triangle or 4-6 point star with sharp corners, radius 14-36 px

Each image holds 3-6 overlapping objects (later ones overwrite earlier ones). Class hues
overlap and backgrounds take random colours, so colour alone does not solve the task: shape,
thickness and boundaries matter. No anti-aliasing: labels match the painted pixels exactly.

Splits ``train`` (240 images) and ``val`` (60) are generated deterministically the first time
``DatasetCatalog.get`` is called on them, and cached as PNGs::

    <root>/<split>/images/0000.png   RGB, uint8, HxWx3
    <root>/<split>/labels/0000.png   single channel, uint8, values 0..4
    <root>/<split>/done.json         manifest, written last

A split is generated into a temporary folder and renamed into place, so concurrent processes
never see a partial split. A split folder without ``done.json``, or made with other settings, is
an error rather than used or overwritten: delete it to regenerate.
"""

import colorsys
import json
import logging
import os
import shutil
import tempfile
import time

import cv2
import numpy as np

from .common import register_sem_seg_dataset

__all__ = ["SYNTHETIC_CLASSES", "SYNTHETIC_COLORS", "IMAGE_SIZE", "NUM_TRAIN_IMAGES",
           "NUM_VAL_IMAGES", "render_sample", "generate_split", "register_synthetic_shapes"]

logger = logging.getLogger(__name__)

SYNTHETIC_CLASSES = ["background", "blob", "ring", "stroke", "polygon"]
# Visualisation colours (RGB), near each class's characteristic hue.
SYNTHETIC_COLORS = [(0, 0, 0), (230, 80, 40), (110, 200, 40), (40, 160, 230), (190, 60, 220)]
IMAGE_SIZE = 128  # pixels, height == width
NUM_TRAIN_IMAGES = 240
NUM_VAL_IMAGES = 60
TRAIN_SEED = 1234
VAL_SEED = 5678
DEFAULT_PREFIX = "synthetic_shapes_sem_seg"
ENV_ROOT = "POINTREND_SEG_SYNTHETIC_DIR"
DEFAULT_ROOT = "~/.cache/pointrend_seg/synthetic_shapes_v1"
IGNORE_LABEL = 255

_FORMAT_VERSION = 1
_MANIFEST = "done.json"
# Hue centre (degrees) per object class and the +- jitter: neighbouring classes overlap.
_CLASS_HUES = {1: 15.0, 2: 105.0, 3: 195.0, 4: 285.0}
_HUE_JITTER = 60.0
_NOISE_STD = 6.0  # per-pixel Gaussian noise, in 8-bit intensity units


def _hsv_rgb(h_deg, s, v):
    """HSV (hue in degrees, s and v in [0, 1]) -> RGB float array of shape (3,) in [0, 255]."""
    return 255.0 * np.array(colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, s, v))


def _background(rng, size):
    """Textured background: float32 array (size, size, 3) in roughly [0, 255]."""
    base = _hsv_rgb(rng.uniform(0, 360), rng.uniform(0.1, 0.8), rng.uniform(0.3, 0.95))
    grid = int(rng.integers(2, 6))
    field = cv2.resize(
        rng.normal(0.0, 45.0, (grid, grid, 3)).astype(np.float32),
        (size, size),
        interpolation=cv2.INTER_CUBIC,
    )
    img = base.astype(np.float32) + field

    kind = rng.random()
    if kind < 0.7:  # stripes or (rotated) checker in a random colour
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        u = xx * np.cos(angle) + yy * np.sin(angle)
        v = -xx * np.sin(angle) + yy * np.cos(angle)
        period = rng.uniform(8, 24)
        if kind < 0.4:
            pattern = (u / period) % 1.0 < rng.uniform(0.3, 0.6)
        else:
            pattern = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
        color = _hsv_rgb(rng.uniform(0, 360), rng.uniform(0.1, 0.9), rng.uniform(0.2, 1.0))
        alpha = rng.uniform(0.25, 0.6)
        img[pattern] = (1 - alpha) * img[pattern] + alpha * color.astype(np.float32)
    return img


def _draw_blob(rng, mask, size):
    c = rng.uniform(0.1 * size, 0.9 * size, 2)
    if rng.random() < 0.5:
        axes = tuple(int(a) for a in rng.uniform(8, 30, 2))
        center = tuple(int(x) for x in c)
        cv2.ellipse(mask, center, axes, rng.uniform(0, 180), 0, 360, 1, -1, cv2.LINE_8)
    else:
        theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        r = rng.uniform(10, 28) * np.ones_like(theta)
        for k in (2, 3):
            r *= 1 + rng.uniform(0, 0.2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        pts = c + np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1, cv2.LINE_8)


def _draw_ring(rng, mask, size):
    radius = rng.uniform(12, 38)
    axes = (int(radius), int(radius * rng.uniform(0.6, 1.0)))
    center = tuple(int(x) for x in rng.uniform(0.15 * size, 0.85 * size, 2))
    span = rng.uniform(150, 420)  # > 360 means a closed annulus
    start = rng.uniform(0, 360)
    end = start + min(span, 360.0)
    thickness = int(rng.integers(3, 6))
    cv2.ellipse(mask, center, axes, rng.uniform(0, 180), start, end, 1, thickness, cv2.LINE_8)


def _draw_stroke(rng, mask, size):
    t = np.linspace(0, 1, 40)[:, None]
    c = rng.uniform(0.2 * size, 0.8 * size, 2)
    if rng.random() < 0.5:  # sinusoid along a random direction
        length = rng.uniform(50, 120)
        amp = rng.uniform(4, 14)
        phase = rng.uniform(0, 2 * np.pi)
        local = np.concatenate(
            [(t - 0.5) * length, amp * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t + phase)],
            axis=1,
        )
        a = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        pts = c + local @ rot.T
    else:  # cubic Bezier through 4 random control points around c
        p = c + rng.uniform(-0.35 * size, 0.35 * size, (4, 2))
        pts = ((1 - t) ** 3) * p[0] + 3 * ((1 - t) ** 2) * t * p[1]
        pts = pts + 3 * (1 - t) * t**2 * p[2] + t**3 * p[3]
    thickness = int(rng.integers(2, 5))
    cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, 1, thickness, cv2.LINE_8)


def _draw_polygon(rng, mask, size):
    c = rng.uniform(0.1 * size, 0.9 * size, 2)
    radius = rng.uniform(14, 36)
    if rng.random() < 0.5:  # triangle
        theta = rng.uniform(0, 2 * np.pi) + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.4, 0.4, 3)
        r = radius * rng.uniform(0.7, 1.0, 3)
    else:  # star with 4-6 spikes
        n = int(rng.integers(4, 7))
        theta = rng.uniform(0, 2 * np.pi) + np.arange(2 * n) * np.pi / n
        r = np.where(np.arange(2 * n) % 2 == 0, radius, radius * rng.uniform(0.35, 0.55))
    pts = c + np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1, cv2.LINE_8)


_DRAWERS = {1: _draw_blob, 2: _draw_ring, 3: _draw_stroke, 4: _draw_polygon}


def render_sample(rng, size=IMAGE_SIZE):
    """Render one sample from ``rng`` (np.random.Generator, the only randomness used).

    Returns:
        (image, label): uint8 (size, size, 3) RGB and uint8 (size, size) class ids.
    """
    img = _background(rng, size)
    label = np.zeros((size, size), dtype=np.uint8)
    mask = np.empty((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(3, 7))):
        cls = int(rng.integers(1, len(SYNTHETIC_CLASSES)))
        mask.fill(0)
        _DRAWERS[cls](rng, mask, size)
        hue = _CLASS_HUES[cls] + rng.uniform(-_HUE_JITTER, _HUE_JITTER)
        color = _hsv_rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))
        on = mask.astype(bool)
        img[on] = color.astype(np.float32)
        label[on] = cls
    img += rng.normal(0.0, _NOISE_STD, img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), label


def _manifest(split, num_images, seed):
    return {
        "format_version": _FORMAT_VERSION,
        "split": split,
        "num_images": int(num_images),
        "seed": int(seed),
        "image_size": IMAGE_SIZE,
        "classes": SYNTHETIC_CLASSES,
    }


def _is_complete(split_dir, expected):
    """True if ``split_dir`` holds a finished split matching the ``expected`` manifest; a
    RuntimeError if it exists but is incomplete or was made differently."""
    if not os.path.isdir(split_dir):
        return False
    path = os.path.join(split_dir, _MANIFEST)
    if not os.path.isfile(path):
        raise RuntimeError(
            f"{split_dir} exists but has no {_MANIFEST}: it is not a complete synthetic split. "
            "Delete it to have it regenerated."
        )
    with open(path) as f:
        found = json.load(f)
    if found != expected:
        raise RuntimeError(
            f"{split_dir} was generated with {found}, expected {expected}. "
            "Delete it or use another root."
        )
    return True


def _write_split(out_dir, split, num_images, seed):
    """Render ``num_images`` samples and write them plus the manifest into ``out_dir``."""
    os.makedirs(os.path.join(out_dir, "images"))
    os.makedirs(os.path.join(out_dir, "labels"))
    for i in range(num_images):
        image, label = render_sample(np.random.default_rng([seed, i]))
        name = f"{i:04d}.png"
        ok = cv2.imwrite(os.path.join(out_dir, "images", name), image[:, :, ::-1].copy())
        ok &= cv2.imwrite(os.path.join(out_dir, "labels", name), label)
        if not ok:
            raise OSError(f"Could not write {name} into {out_dir}")
    with open(os.path.join(out_dir, _MANIFEST), "w") as f:
        json.dump(_manifest(split, num_images, seed), f)


def generate_split(root, split, num_images, seed):
    """Generate ``<root>/<split>`` unless complete (safe from several processes at once) and
    return its dataset dicts (absolute paths); image i is drawn from
    ``np.random.default_rng([seed, i])``."""
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    split_dir = os.path.join(root, split)
    expected = _manifest(split, num_images, seed)
    if not _is_complete(split_dir, expected):
        os.makedirs(root, exist_ok=True)
        tmp_dir = tempfile.mkdtemp(prefix=f".{split}.tmp-", dir=root)
        try:
            start = time.perf_counter()
            _write_split(tmp_dir, split, num_images, seed)
            try:
                os.rename(tmp_dir, split_dir)
                logger.info(
                    "Generated %d synthetic images in %s (%.1f s)",
                    num_images, split_dir, time.perf_counter() - start,
                )
            except OSError:
                # Another process renamed its copy into place first: use that one.
                if not _is_complete(split_dir, expected):
                    raise
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

    return [
        {
            "file_name": os.path.join(split_dir, "images", f"{i:04d}.png"),
            "sem_seg_file_name": os.path.join(split_dir, "labels", f"{i:04d}.png"),
            "height": IMAGE_SIZE,
            "width": IMAGE_SIZE,
            "image_id": i,
        }
        for i in range(num_images)
    ]


def register_synthetic_shapes(root=None, prefix=DEFAULT_PREFIX):
    """Register ``<prefix>_train`` and ``<prefix>_val`` (generated on first
    ``DatasetCatalog.get``); names already registered are skipped. ``root`` defaults to
    ``$POINTREND_SEG_SYNTHETIC_DIR``, else ``~/.cache/pointrend_seg/synthetic_shapes_v1``.
    Returns the two names."""
    root = os.path.abspath(os.path.expanduser(os.fspath(
        (os.environ.get(ENV_ROOT) or DEFAULT_ROOT) if root is None else root)))
    splits = {"train": (NUM_TRAIN_IMAGES, TRAIN_SEED), "val": (NUM_VAL_IMAGES, VAL_SEED)}
    return [register_sem_seg_dataset(
        f"{prefix}_{split}",
        lambda s=split, n=num_images, sd=seed: generate_split(root, s, n, sd),
        stuff_classes=SYNTHETIC_CLASSES, stuff_colors=SYNTHETIC_COLORS, ignore_label=IGNORE_LABEL,
        image_root=os.path.join(root, split, "images"),
        sem_seg_root=os.path.join(root, split, "labels"),
    ) for split, (num_images, seed) in splits.items()]
