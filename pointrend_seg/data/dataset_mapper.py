"""
Dataset mapper for semantic segmentation: reads and checks an image and its label map, applies
Detectron2 augmentations to both, and returns the tensors the meta-architecture expects.

Every bad input raises :class:`BadInputError` naming the file (see the table in
docs/bad_inputs.md).
"""
import contextlib
import copy
import logging
import os
import threading

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps

from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.data.detection_utils import convert_PIL_to_numpy

from ..config import DEFAULT_MAX_IMAGE_PIXELS, check_pointrend_seg_keys, raise_config_problems
from .label_map import apply_label_map, binary_mask_hint
from .transforms import PadToMinSize

__all__ = ["BadInputError", "SemSegDatasetMapper", "apply_exif_orientation",
           "build_sem_seg_augmentations", "check_image_size", "check_label_size",
           "check_label_values", "crop_pad_size", "crop_problems", "exif_orientation", "image_orientation",
           "read_image_file", "read_label_file", "same_stem_hint", "too_large_message"]

logger = logging.getLogger(__name__)

_LABEL_MODES = ("P", "L", "I;16", "I;16B", "I;16L", "I")


class BadInputError(ValueError):
    """
    An image or label file that cannot be used as it is; the message names the file.

    Attributes:
        kind (str): what is wrong, one of "missing image", "unreadable image", "image too large",
            "image size", "missing label", "unreadable label", "label too large",
            "colour label", "size mismatch", "label values", "no label" (the rows of the dataset
            check's table).
        path (str or None): the file the message is about.
    """

    def __init__(self, message, kind="bad input", path=None):
        super().__init__(message)
        self.kind = kind
        self.path = path

    def __reduce__(self):  # keep kind and path through pickling (DataLoader workers, pools)
        return type(self), (str(self), self.kind, self.path)


_EXIF_ORIENTATION = 0x0112
_PIL_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _pil_size_check_off():
    """PIL's own decompression-bomb limit (a warning above 89 MP, an error above 179 MP) off:
    :func:`_open` applies ``max_pixels`` instead, one documented limit for every reader."""
    with _PIL_LIMIT_LOCK:
        before = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = before


def too_large_message(what, path, width, height, max_pixels):
    """The message of a file over the pixel limit (also used by the dataset check)."""
    return (
        f"{what} file {path} is {width}x{height} (WxH) = {width * height / 1e6:.1f} megapixels, "
        f"over the limit of {max_pixels / 1e6:g} megapixels (INPUT.MAX_IMAGE_PIXELS="
        f"{max_pixels}, tools/demo.py --max-image-pixels); decoding it would take about "
        f"{3 * width * height / 2**30:.1f} GiB. Resize or tile the file, or raise the limit "
        "(0: none) if this machine has the memory"
    )


def _open(path, what, max_pixels=None):
    """
    The decoded image of ``path``, EXIF orientation applied; its size is checked against
    ``max_pixels`` (0 / None: no limit) from the header, before any pixel is decoded.
    """
    try:
        with open(path, "rb") as f:
            with _pil_size_check_off():
                image = Image.open(f)
            width, height = image.size
            if max_pixels and width * height > max_pixels:
                raise BadInputError(too_large_message(what, path, width, height, max_pixels),
                                    f"{what} too large", path)
            image.load()
            return apply_exif_orientation(image)
    except BadInputError:
        raise
    except FileNotFoundError:
        raise BadInputError(f"{what} file not found: {path}" + same_stem_hint(path, what),
                            f"missing {what}", path) from None
    except Exception as e:  # PIL's decoders raise OSError, SyntaxError, ValueError, ...
        raise BadInputError(
            f"cannot read {what} file {path}: {type(e).__name__}: {e}", f"unreadable {what}", path
        ) from None


# Formats that change pixel values when saving: no good for masks of class ids.
LOSSY_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".webp")


def same_stem_hint(path, what="label") -> str:
    """
    For a missing file: "; there is X.jpg ..." when a file of the same stem with another
    extension exists beside it (e.g. masks saved as JPEG), else "".
    """
    stem, _ = os.path.splitext(path)
    folder = os.path.dirname(path) or "."
    try:
        others = sorted(f for f in os.listdir(folder)
                        if os.path.splitext(f)[0] == os.path.basename(stem))
    except OSError:
        return ""
    if not others:
        return ""
    hint = f"; there is {os.path.join(folder, others[0])}"
    if what == "label" and os.path.splitext(others[0])[1].lower() in LOSSY_EXTENSIONS:
        hint += (": masks must be lossless (PNG): JPEG / WebP compression changes the class ids "
                 "along every edge. Save the masks as PNG from their source (converting the "
                 "JPEG keeps its damage)")
    else:
        hint += f", but {what}s are looked for with the extension {os.path.splitext(path)[1]!r}"
    return hint


def exif_orientation(image) -> int:
    """The EXIF orientation tag of a PIL image (1, the identity, when it has none)."""
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # a damaged EXIF block: treated as no orientation
        return 1


def apply_exif_orientation(image):
    """
    ``image`` turned as its EXIF orientation says - Detectron2's ``read_image`` rule, applied to
    images and label maps alike (a label map is drawn on the image as it is displayed). Images
    without an orientation (or with 1, the identity) are returned as they are, without a copy.
    """
    if exif_orientation(image) == 1:
        return image
    return ImageOps.exif_transpose(image)


def read_image_file(path, format="BGR", max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """
    Read an image as (H, W, 3) uint8 in ``format`` ("BGR" or "RGB"), EXIF orientation applied.

    Grayscale images are replicated to 3 channels, the alpha channel of RGBA/LA images is dropped,
    and 16-bit images are scaled to 8 bits (value >> 8). A file of more than ``max_pixels``
    pixels (``INPUT.MAX_IMAGE_PIXELS``; 0 or None: no limit) is refused from its header, before
    decoding ("image too large").

    Differs on purpose from Detectron2's ``detection_utils.read_image`` (EXIF orientation is
    applied the same way, and other formats than RGB / BGR go through its
    ``convert_PIL_to_numpy``): there a 16-bit image is clipped to 255 (measured: 99.6% of the
    pixels of a 0..65520 ramp saturate; here it keeps its 256 levels), a missing or broken file
    raises PIL's or Python's error (here every failure is a :class:`BadInputError` naming the
    file and whether it is the image or the label), and an RGB image is copied three times
    (PIL ``convert``, ``np.asarray``, the channel flip); here once, the channels swapped in
    place (a 12000 x 12000 PNG: 1.0 GB at the peak instead of 2.0 GB).
    """
    image = _open(path, "image", max_pixels)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image).astype(np.int64)
        bits = 16 if image.mode.startswith("I;16") or array.max() > 255 else 8
        image = Image.fromarray((array >> (bits - 8)).clip(0, 255).astype(np.uint8))
    if format not in ("RGB", "BGR"):
        return np.ascontiguousarray(convert_PIL_to_numpy(image, format))
    if image.mode != "RGB":  # grayscale, palette, alpha, CMYK, ...: as PIL converts them
        image = image.convert("RGB")
    array = np.array(image)  # one writable copy
    del image
    if format == "BGR":
        cv2.cvtColor(array, cv2.COLOR_RGB2BGR, dst=array)
    return array


def read_label_file(path, label_map=None, max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """
    Read a label map as (H, W) int64 class ids. Palette ("P") PNGs give their palette indices;
    8- and 16-bit single-channel images their values. Colour (RGB) label images are rejected.
    ``label_map`` ({stored value: class id}, see :mod:`.label_map`) is applied to the values.
    EXIF orientation is applied as to images (:func:`apply_exif_orientation`), and files of
    more than ``max_pixels`` pixels are refused before decoding ("label too large").
    """
    label = _open(path, "label", max_pixels)
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


def image_orientation(path) -> int:
    """The EXIF orientation of the image file ``path`` from its header (1 if none or unreadable)."""
    try:
        with open(path, "rb") as f, _pil_size_check_off():
            return exif_orientation(Image.open(f))
    except Exception:
        return 1


# EXIF orientations 5-8 turn an image by 90 degrees (width and height swap).
_TURNED_90 = (5, 6, 7, 8)


def check_label_size(label_shape, image_shape, label_path, image_path, orientation=None):
    """
    Raise :class:`BadInputError` if the label and image sizes (H, W, ...) differ (both as used:
    EXIF orientation applied). When the image's EXIF orientation (``orientation``, read from
    ``image_path`` if None) turns it by 90 degrees and the label has the stored image's size, the
    message says so: the label was drawn on the stored pixels, not on the image as displayed.
    """
    if tuple(label_shape[:2]) == tuple(image_shape[:2]):
        return
    message = (f"label file {label_path} is {label_shape[1]}x{label_shape[0]} (WxH) but image "
               f"{image_path} is {image_shape[1]}x{image_shape[0]}")
    if tuple(label_shape[:2]) == tuple(image_shape[:2])[::-1]:
        if orientation is None:
            orientation = image_orientation(image_path)
        if orientation in _TURNED_90:
            message += (
                f" as displayed: its EXIF orientation {orientation} turns it by 90 degrees "
                "(stored, it has the label's size). Images and labels are used as displayed "
                "(Detectron2's rule): if the label was drawn on the stored pixels, remove the "
                "image's orientation tag (e.g. exiftool -Orientation=1 -n FILE)")
    raise BadInputError(message, "size mismatch", label_path)


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


def crop_problems(cfg):
    """
    What is wrong with ``INPUT.CROP`` (when enabled), one message per problem: ``TYPE`` one of
    Detectron2's four; ``SIZE`` two fractions in (0, 1] for "relative" / "relative_range",
    two positive integers for "absolute", a positive integer range (min <= max) for
    "absolute_range"; ``SINGLE_CATEGORY_MAX_AREA`` in (0, 1].
    """
    crop = cfg.INPUT.CROP
    if not crop.ENABLED:
        return []
    size = list(crop.SIZE)
    where = f"INPUT.CROP.SIZE={size} (INPUT.CROP.TYPE {crop.TYPE!r})"
    two_numbers = len(size) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                      for v in size)
    problems = []
    if crop.TYPE in ("relative", "relative_range"):
        if not two_numbers or not all(0.0 < v <= 1.0 for v in size):
            problems.append(f"{where} must be two fractions of the image in (0, 1], e.g. "
                            "[0.5, 0.5]")
    elif crop.TYPE in ("absolute", "absolute_range"):
        if not two_numbers or not all(isinstance(v, int) and v > 0 for v in size):
            problems.append(f"{where} must be two positive integers (pixels)")
        elif crop.TYPE == "absolute_range" and size[0] > size[1]:
            problems.append(f"{where} is a range [min, max] of crop sides: min > max")
    else:
        problems.append(f"INPUT.CROP.TYPE={crop.TYPE!r} must be 'relative', 'relative_range', "
                        "'absolute' or 'absolute_range'")
    area = crop.SINGLE_CATEGORY_MAX_AREA
    if not isinstance(area, (int, float)) or not 0.0 < area <= 1.0:
        problems.append(f"INPUT.CROP.SINGLE_CATEGORY_MAX_AREA={area!r} must be in (0, 1] "
                        "(1.0: no constraint)")
    return problems


def build_sem_seg_augmentations(cfg, is_train):
    """
    Training (``INPUT.CROP`` checked first, :func:`crop_problems`): ResizeShortestEdge
    (INPUT.MIN_SIZE_TRAIN, "choice" or "range"), optional random crop that retries while one category covers more than INPUT.CROP.SINGLE_CATEGORY_MAX_AREA
    (images smaller than the crop are first padded to it, see :func:`crop_pad_size`: image with
    0, label with MODEL.SEM_SEG_HEAD.IGNORE_VALUE), horizontal flip, optional SSD colour
    augmentation. Test: ResizeShortestEdge(MIN_SIZE_TEST).
    """
    if not is_train:
        if cfg.INPUT.MIN_SIZE_TEST <= 0:
            return []
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    raise_config_problems(crop_problems(cfg))
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
                 ignore_label: int, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.max_image_pixels = max_image_pixels
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
            "max_image_pixels": cfg.INPUT.MAX_IMAGE_PIXELS,
        }

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image_path = dataset_dict["file_name"]
        image = read_image_file(image_path, self.image_format, self.max_image_pixels)
        check_image_size(image.shape, dataset_dict)
        dataset_dict.setdefault("height", image.shape[0])
        dataset_dict.setdefault("width", image.shape[1])
        label = None
        label_path = dataset_dict.pop("sem_seg_file_name", None)
        label_map = dataset_dict.pop("sem_seg_label_map", None)
        if label_path is not None:
            label = read_label_file(label_path, label_map, self.max_image_pixels)
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
