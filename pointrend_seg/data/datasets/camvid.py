"""CamVid in the SegNet layout (11 classes, 360x480 images).

Layout under ``$DETECTRON2_DATASETS`` (``camvid/``, or ``CamVid/`` as SegNet names it)::

    camvid/train/*.png    camvid/trainannot/*.png    367 images
    camvid/val/*.png      camvid/valannot/*.png      101 images
    camvid/test/*.png     camvid/testannot/*.png     233 images

Paired by file stem; annotations are one-channel PNGs of class ids 0..10 and 11 = void.
Registered names: ``camvid_sem_seg_{train,val,test}``. Void (11) is the ignore label, kept on
disk: train and evaluate with ``MODEL.SEM_SEG_HEAD.NUM_CLASSES 11
MODEL.SEM_SEG_HEAD.IGNORE_VALUE 11`` (docs/bad_inputs.md).
"""
import logging
import os

from .common import find_dataset_dir, register_sem_seg_dataset
from .folder import load_folder_pairs

__all__ = ["CAMVID_CLASSES", "CAMVID_COLORS", "CAMVID_IGNORE_LABEL", "load_camvid",
           "register_camvid"]

logger = logging.getLogger(__name__)

CAMVID_CLASSES = [
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
    "Pedestrian", "Bicyclist",
]
# The SegNet tutorial's colours of the 11 classes (RGB).
CAMVID_COLORS = [
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
]
CAMVID_IGNORE_LABEL = 11  # "void"
DEFAULT_PREFIX = "camvid_sem_seg"
CAMVID_DIRNAMES = ("camvid", "CamVid")  # ours, and the SegNet download's
SPLIT_SIZES = {"train": 367, "val": 101, "test": 233}


def load_camvid(camvid_dir, split, dataset_name=None):
    """Dataset dicts of a CamVid split, sorted by stem; a warning if its size is not SegNet's."""
    name = dataset_name or f"{DEFAULT_PREFIX}_{split}"
    dicts = load_folder_pairs(
        os.path.join(camvid_dir, split), os.path.join(camvid_dir, split + "annot"),
        image_ext=".png", mask_ext=".png", dataset_name=name,
    )
    if len(dicts) != SPLIT_SIZES[split]:
        logger.warning(
            "dataset %r has %d images; the SegNet CamVid %s split has %d",
            name, len(dicts), split, SPLIT_SIZES[split],
        )
    return dicts


def register_camvid(root, prefix=DEFAULT_PREFIX):
    """Register ``<prefix>_{train,val,test}`` for ``<root>/camvid`` or ``<root>/CamVid`` (looked
    for when a split is loaded); return the names."""
    camvid_dir = find_dataset_dir(root, CAMVID_DIRNAMES, "CamVid", must_exist=False)
    return [register_sem_seg_dataset(
        f"{prefix}_{split}",
        lambda s=split: load_camvid(find_dataset_dir(root, CAMVID_DIRNAMES, "CamVid"), s,
                                    f"{prefix}_{s}"),
        stuff_classes=CAMVID_CLASSES, stuff_colors=CAMVID_COLORS, ignore_label=CAMVID_IGNORE_LABEL,
        image_root=os.path.join(camvid_dir, split),
        sem_seg_root=os.path.join(camvid_dir, split + "annot"),
    ) for split in SPLIT_SIZES]
