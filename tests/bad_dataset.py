"""
Folder datasets for the dataset-check tests: a learnable binary task (a bright disc on a noisy,
darker background; class 1 = disc), written with one sample of each problem the check reports,
or as binary masks saved as 0/255.
"""
import os

import numpy as np
from PIL import Image

CLASSES = "background,disc"
# Bad samples and the problem kind the check reports for each (the file is the image for
# "unreadable image", the mask otherwise).
BAD_KINDS = {
    "truncated": "unreadable image",
    "no_mask": "missing label",
    "corrupt_mask": "unreadable label",
    "small_mask": "size mismatch",
    "value_7": "label values",
    "rgb_mask": "colour label",
}


def disc_sample(rng, size):
    """(image (size, size, 3) uint8, label (size, size) uint8 in {0, 1}): one disc per image."""
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = rng.uniform(0.3 * size, 0.7 * size, 2)
    radius = rng.uniform(0.15 * size, 0.3 * size)
    label = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2).astype(np.uint8)
    background = rng.uniform(20, 110, 3)
    foreground = rng.uniform(150, 240, 3)
    image = np.where(label[..., None] == 1, foreground, background)
    image = image + rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def _save(path, array):
    Image.fromarray(array).save(path)
    return path


def write_binary_folder(root, num, size=32, seed=0, foreground_value=255):
    """``root/img/NNN.png`` and ``root/mask/NNN.png`` with masks of 0 and ``foreground_value``."""
    images, masks = os.path.join(root, "img"), os.path.join(root, "mask")
    os.makedirs(images, exist_ok=True)
    os.makedirs(masks, exist_ok=True)
    for i in range(num):
        image, label = disc_sample(np.random.default_rng([seed, i]), size)
        _save(os.path.join(images, f"{i:03d}.png"), image)
        _save(os.path.join(masks, f"{i:03d}.png"), label * np.uint8(foreground_value))
    return images, masks


def write_bad_folder(root, num_good=8, size=32, seed=0):
    """
    A folder dataset of ``num_good`` good samples (masks 0/1) plus one sample per entry of
    ``BAD_KINDS``. Returns (image folder, mask folder, {bad stem: file the problem is about}).
    """
    images, masks = write_binary_folder(root, num_good, size, seed, foreground_value=1)
    rng = np.random.default_rng([seed, 10_000])
    bad_files = {}
    for stem in BAD_KINDS:
        image, label = disc_sample(rng, size)
        image_path = _save(os.path.join(images, f"{stem}.png"), image)
        mask_path = os.path.join(masks, f"{stem}.png")
        bad_files[stem] = mask_path
        if stem == "truncated":
            _save(mask_path, label)
            with open(image_path, "rb") as f:
                data = f.read()
            with open(image_path, "wb") as f:
                f.write(data[: len(data) // 2])
            bad_files[stem] = image_path
        elif stem == "corrupt_mask":
            with open(mask_path, "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n not really a png")
        elif stem == "small_mask":
            _save(mask_path, label[:-2, :-2])
        elif stem == "value_7":
            label[0, 0] = 7
            _save(mask_path, label)
        elif stem == "rgb_mask":
            _save(mask_path, np.stack([label * 200, label * 30, label * 90], -1))
        # "no_mask": no mask file at all
    return images, masks, bad_files
