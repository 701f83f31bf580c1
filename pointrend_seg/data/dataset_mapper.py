"""
Dataset mapper for semantic segmentation: reads and checks an image and its label map, applies
Detectron2 augmentations to both, and returns the tensors the meta-architecture expects.

Every bad input raises :class:`BadInputError` naming the file (see the table in
docs/bad_inputs.md).
"""
import copy
import logging

import numpy as np
import torch
from PIL import Image, ImageOps

from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.data.detection_utils import convert_PIL_to_numpy

from ..config import check_pointrend_seg_keys
from .label_map import apply_label_map, binary_mask_hint
from .transforms import PadToMinSize

__all__ = ["BadInputError", "SemSegDatasetMapper", "build_sem_seg_augmentations",
           "check_image_size", "check_label_size", "check_label_values", "crop_pad_size",
           "read_image_file", "read_label_file"]

logger = logging.getLogger(__name__)

_LABEL_MODES = ("P", "L", "I;16", "I;16B", "I;16L", "I")


class BadInputError(ValueError):
    """
    An image or label file that cannot be used as it is; the message names the file.

    Attributes:
        kind (str): what is wrong, one of "missing image", "unreadable image", "image size",
            "missing label", "unreadable label", "colour label", "size mismatch",
            "label values", "no label" (the rows of the dataset check's table).
        path (str or None): the file the message is about.
    """

    def __init__(self, message, kind="bad input", path=None):
        super().__init__(message)
        self.kind = kind
        self.path = path

    def __reduce__(self):  # keep kind and path through pickling (DataLoader workers, pools)
        return type(self), (str(self), self.kind, self.path)


def _open(path, what):
    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            image.load()
        return image
    except FileNotFoundError:
        raise BadInputError(f"{what} file not found: {path}", f"missing {what}", path) from None
    except Exception as e:  # PIL's decoders raise OSError, SyntaxError, ValueError, ...
        raise BadInputError(
            f"cannot read {what} file {path}: {type(e).__name__}: {e}", f"unreadable {what}", path
        ) from None


def read_image_file(path, format="BGR"):
    """
    Read an image as (H, W, 3) uint8 in ``format`` ("BGR" or "RGB"), EXIF orientation applied.

    Grayscale images are replicated to 3 channels, the alpha channel of RGBA/LA images is dropped,
    and 16-bit images are scaled to 8 bits (value >> 8).

    Differs on purpose from Detectron2's ``detection_utils.read_image`` (whose EXIF handling and
    conversion, ``convert_PIL_to_numpy``, it reuses): there a 16-bit image is clipped to 255
    (measured: 99.6% of the pixels of a 0..65520 ramp saturate; here it keeps its 256 levels),
    and a missing or broken file raises PIL's or Python's error; here every failure is a
    :class:`BadInputError` naming the file and whether it is the image or the label.
    """
    image = ImageOps.exif_transpose(_open(path, "image"))
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image).astype(np.int64)
        bits = 16 if image.mode.startswith("I;16") or array.max() > 255 else 8
        image = Image.fromarray((array >> (bits - 8)).clip(0, 255).astype(np.uint8))
    return np.ascontiguousarray(convert_PIL_to_numpy(image, format))


def read_label_file(path, label_map=None):
    """
    Read a label map as (H, W) int64 class ids. Palette ("P") PNGs give their palette indices;
    8- and 16-bit single-channel images their values. Colour (RGB) label images are rejected.
    ``label_map`` ({stored value: class id}, see :mod:`.label_map`) is applied to the values.
    """
    label = _open(path, "label")
    if label.mode not in _LABEL_MODES:
        detail = ""
        if label.mode in ("RGB", "RGBA"):
            rgb = np.asarray(label)[..., :3]
            if (rgb == rgb[..., :1]).all():
                detail = (" (its channels are equal: save it as one channel, e.g. with PIL's "
                          "Image.convert('L'))")
            else:
                detail = " (colour-coded classes: convert each colour to its class id)"
        raise BadInputError(
            f"label file {path} has mode {label.mode!r}: expected one channel of class ids "
            f"(8/16-bit grayscale or palette PNG), not colours{detail}", "colour label", path
        )
    return apply_label_map(np.asarray(label).astype(np.int64), label_map)


def check_image_size(image_shape, dataset_dict):
    """
    Raise :class:`BadInputError` if ``image_shape`` (H, W, ...) differs from the dataset dict's
    ``height``/``width`` (when it has them): predictions would be resized to the wrong size.

    The same test as Detectron2's ``detection_utils.check_image_size``, which raises a generic
    ``SizeMismatchError``; ours is a :class:`BadInputError`, which ``--skip-bad`` and the dataset
    check handle like every other bad sample, and it does not fill in missing sizes (the mapper
    reads them from the image).
    """
    expected = (dataset_dict.get("height", image_shape[0]),
                dataset_dict.get("width", image_shape[1]))
    if tuple(expected) != tuple(image_shape[:2]):
        path = dataset_dict["file_name"]
        raise BadInputError(
            f"image file {path} is {image_shape[1]}x{image_shape[0]} (WxH) but its "
            f"dataset dict says {expected[1]}x{expected[0]}", "image size", path
        )


def check_label_size(label_shape, image_shape, label_path, image_path):
    """Raise :class:`BadInputError` if the label and image sizes (H, W, ...) differ."""
    if tuple(label_shape[:2]) != tuple(image_shape[:2]):
        raise BadInputError(
            f"label file {label_path} is {label_shape[1]}x{label_shape[0]} (WxH) but image "
            f"{image_path} is {image_shape[1]}x{image_shape[0]}", "size mismatch", label_path
        )


def check_label_values(label, num_classes, ignore_label, path):
    """
    Raise :class:`BadInputError` if ``label`` (class ids, any shape: a label map or the values
    present in one) has values outside [0, K) other than ignore.
    """
    label = np.asarray(label)
    bad = ((label < 0) | (label >= num_classes)) & (label != ignore_label)
    if bad.any():
        values = np.unique(label[bad])
        hint = binary_mask_hint(label, num_classes, ignore_label)
        raise BadInputError(
            f"label file {path} has values {values[:10].tolist()} outside [0, {num_classes}) that "
            f"are not the ignore label {ignore_label} "
            f"(MODEL.SEM_SEG_HEAD.NUM_CLASSES={num_classes}, "
            f"MODEL.SEM_SEG_HEAD.IGNORE_VALUE={ignore_label})" + (f": {hint}" if hint else ""),
            "label values", path,
        )


def crop_pad_size(cfg):
    """
    (height, width) that images are padded to before the training crop, or None: INPUT.CROP.SIZE
    for crop type "absolute", (SIZE[0], SIZE[0]) (the smallest crop) for "absolute_range", and
    None for the relative types, whose crops never exceed the image.
    """
    if not cfg.INPUT.CROP.ENABLED:
        return None
    crop_type, size = cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE
    if crop_type == "absolute":
        return int(size[0]), int(size[1])
    if crop_type == "absolute_range":
        return int(size[0]), int(size[0])
    return None


def build_sem_seg_augmentations(cfg, is_train):
    """
    Training: ResizeShortestEdge (INPUT.MIN_SIZE_TRAIN, "choice" or "range"), optional random
    crop that retries while one category covers more than INPUT.CROP.SINGLE_CATEGORY_MAX_AREA
    (images smaller than the crop are first padded to it, see :func:`crop_pad_size`: image with
    0, label with MODEL.SEM_SEG_HEAD.IGNORE_VALUE), horizontal flip, optional SSD colour
    augmentation. Test: ResizeShortestEdge(MIN_SIZE_TEST).
    """
    if not is_train:
        if cfg.INPUT.MIN_SIZE_TEST <= 0:
            return []
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    augs = [
        T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    ]
    if cfg.INPUT.CROP.ENABLED:
        pad_size = crop_pad_size(cfg)
        if pad_size is not None:
            augs.append(
                PadToMinSize(pad_size, pad_value=0,
                             seg_pad_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
            )
        augs.append(
            T.RandomCrop_CategoryAreaConstraint(
                cfg.INPUT.CROP.TYPE,
                cfg.INPUT.CROP.SIZE,
                cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            )
        )
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(
            T.RandomFlip(
                horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
            )
        )
    if cfg.INPUT.COLOR_AUG_SSD:
        from detectron2.projects.point_rend import ColorAugSSDTransform

        augs.append(ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT))
    return augs


class SemSegDatasetMapper:
    """
    Maps a dataset dict with ``file_name`` and (optionally) ``sem_seg_file_name`` and
    ``sem_seg_label_map`` (applied to the label values, :mod:`.label_map`) to a dict with
    ``image`` (3, H, W) uint8 tensor in ``image_format`` and ``sem_seg`` (H, W) int64 tensor; the
    original ``height``/``width`` are kept so predictions are resized back to them.
    """

    @configurable
    def __init__(self, is_train: bool, *, augmentations, image_format: str, num_classes: int,
                 ignore_label: int):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        logger.info(f"SemSegDatasetMapper ({'train' if is_train else 'test'}): {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        check_pointrend_seg_keys(cfg)
        return {
            "is_train": is_train,
            "augmentations": build_sem_seg_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "ignore_label": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        }

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image_path = dataset_dict["file_name"]
        image = read_image_file(image_path, self.image_format)
        check_image_size(image.shape, dataset_dict)
        dataset_dict.setdefault("height", image.shape[0])
        dataset_dict.setdefault("width", image.shape[1])
        label = None
        label_path = dataset_dict.pop("sem_seg_file_name", None)
        label_map = dataset_dict.pop("sem_seg_label_map", None)
        if label_path is not None:
            label = read_label_file(label_path, label_map)
            check_label_size(label.shape, image.shape, label_path, image_path)
            check_label_values(label, self.num_classes, self.ignore_label, label_path)
        elif self.is_train:
            raise BadInputError(f"training sample {image_path} has no 'sem_seg_file_name'",
                                "no label", image_path)

        if label is not None:
            # Resizing uses PIL (nearest) for uint8 maps; wider ids go through float64.
            # The ignore label pads crops, so it must fit the dtype too.
            fits_uint8 = label.min() >= 0 and label.max() < 256 and 0 <= self.ignore_label < 256
            label = label.astype(np.uint8 if fits_uint8 else np.float64)
        aug_input = T.AugInput(image, sem_seg=label)
        self.augmentations(aug_input)
        dataset_dict["image"] = torch.as_tensor(
            np.ascontiguousarray(aug_input.image.transpose(2, 0, 1))
        )
        if label is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(aug_input.sem_seg.astype(np.int64))
        return dataset_dict
