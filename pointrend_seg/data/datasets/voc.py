"""PASCAL VOC 2012 semantic segmentation (21 classes, 255 = object boundaries / ignored).

Layout under ``$DETECTRON2_DATASETS`` (``VOC2012/`` may also be ``VOCdevkit/VOC2012/``)::

    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClass/<id>.png             palette PNG: indices 0..20 and 255
    VOC2012/ImageSets/Segmentation/train.txt       1,464 ids
    VOC2012/ImageSets/Segmentation/val.txt         1,449 ids
    # optional, for voc_2012_sem_seg_train_aug (SBD-augmented training set):
    VOC2012/SegmentationClassAug/<id>.png          one channel: 0..20 and 255
    VOC2012/ImageSets/Segmentation/train_aug.txt   usually 10,582 ids

Registered names: ``voc_2012_sem_seg_{train,val,train_aug}``. A split file holds one id per
line; a line with several fields (as in some train_aug.txt copies) uses the stem of the first.
Nothing is read until ``DatasetCatalog.get``; then missing files raise FileNotFoundError naming
them.
"""
import os

from .common import find_dataset_dir, register_sem_seg_dataset

__all__ = ["VOC_CLASSES", "VOC_COLORS", "load_voc_sem_seg", "register_voc_sem_seg", "voc_colormap"]

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]
IGNORE_LABEL = 255
DEFAULT_PREFIX = "voc_2012_sem_seg"
VOC_DIRNAMES = ("VOC2012", os.path.join("VOCdevkit", "VOC2012"))  # ours, the official archive's
# split -> (split file stem, mask folder)
SPLITS = {
    "train": ("train", "SegmentationClass"),
    "val": ("val", "SegmentationClass"),
    "train_aug": ("train_aug", "SegmentationClassAug"),
}


def voc_colormap(n=256):
    """The standard VOC palette: colour of index i from the bits of i spread over R, G, B."""
    colors = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return colors


VOC_COLORS = voc_colormap(len(VOC_CLASSES))


def load_voc_sem_seg(voc_dir, split, dataset_name=None):
    """Dataset dicts (``image_id``: the VOC id) of the split "train", "val" or "train_aug" of the
    ``VOC2012`` folder ``voc_dir``, in split-file order; ``dataset_name`` is for messages."""
    split_stem, mask_dirname = SPLITS[split]
    name = dataset_name or f"{DEFAULT_PREFIX}_{split}"
    image_dir = os.path.join(voc_dir, "JPEGImages")
    mask_dir = os.path.join(voc_dir, mask_dirname)
    split_file = os.path.join(voc_dir, "ImageSets", "Segmentation", split_stem + ".txt")
    hint = ""
    if split == "train_aug":
        hint = (" (the SBD-augmented set: put the SBD masks converted to PNG class ids in "
                f"{mask_dir} and their ids, usually 10,582, one per line in {split_file})")
    for what, path, exists in (("image folder", image_dir, os.path.isdir),
                               ("mask folder", mask_dir, os.path.isdir),
                               ("split file", split_file, os.path.isfile)):
        if not exists(path):
            raise FileNotFoundError(f"dataset {name!r}: {what} not found: {path}{hint}")
    with open(split_file, encoding="utf-8") as f:  # the stem of each line's first field
        ids = [os.path.splitext(os.path.basename(line.split()[0]))[0] for line in f
               if line.split()]
    if not ids:
        raise ValueError(f"dataset {name!r} is empty: no ids in {split_file}")
    images, masks = set(os.listdir(image_dir)), set(os.listdir(mask_dir))
    for folder, present, ext in ((image_dir, images, ".jpg"), (mask_dir, masks, ".png")):
        missing = [i for i in ids if i + ext not in present]
        if missing:
            raise FileNotFoundError(
                f"dataset {name!r}: {len(missing)} of the {len(ids)} ids in {split_file} have no "
                f"file in {folder}; first: {os.path.join(folder, missing[0] + ext)}{hint}"
            )
    return [
        {
            "file_name": os.path.join(image_dir, i + ".jpg"),
            "sem_seg_file_name": os.path.join(mask_dir, i + ".png"),
            "image_id": i,
        }
        for i in ids
    ]


def register_voc_sem_seg(root, prefix=DEFAULT_PREFIX):
    """Register ``<prefix>_{train,val,train_aug}`` for ``<root>/VOC2012`` or
    ``<root>/VOCdevkit/VOC2012`` (looked for when a split is loaded); return the names."""
    voc_dir = find_dataset_dir(root, VOC_DIRNAMES, "PASCAL VOC 2012", must_exist=False)
    return [register_sem_seg_dataset(
        f"{prefix}_{split}",
        lambda s=split: load_voc_sem_seg(
            find_dataset_dir(root, VOC_DIRNAMES, "PASCAL VOC 2012"), s, f"{prefix}_{s}"),
        stuff_classes=VOC_CLASSES, stuff_colors=VOC_COLORS, ignore_label=IGNORE_LABEL,
        image_root=os.path.join(voc_dir, "JPEGImages"),
        sem_seg_root=os.path.join(voc_dir, mask_dirname),
    ) for split, (_, mask_dirname) in SPLITS.items()]
