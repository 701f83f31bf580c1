"""The image and label readers and the per-sample checks that the mapper, the dataset check and
the evaluators share. Every bad input raises :class:`BadInputError` (docs/bad_inputs.md).
"""
import contextlib
import os
import threading
from typing import List, Tuple

import cv2
import numpy as np
from PIL import Image, ImageOps

from detectron2.data import transforms as T
from detectron2.data.detection_utils import convert_PIL_to_numpy

from ..config import DEFAULT_MAX_IMAGE_PIXELS
from .label_map import apply_label_map, binary_mask_hint

__all__ = ["BadInputError", "LOSSY_EXTENSIONS", "check_image_size", "check_label_size",
           "check_label_values", "check_resizable", "exif_orientation", "image_orientation",
           "read_image_file", "read_label_file", "same_stem_hint", "smallest_resizes",
           "too_large_message"]

_LABEL_MODES = ("P", "L", "1", "I;16", "I;16B", "I;16L", "I")


class BadInputError(ValueError):
    """An image or label file that cannot be used as it is; the message names the file.

    Attributes:
        kind (str): what is wrong, e.g. "missing image", "label values" (the dataset check's
            rows), "video too large" (tools/demo.py), "empty dataset" (a folder dataset).
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
    """PIL's own decompression-bomb limit off: :func:`_open` applies ``max_pixels`` instead."""
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
    """The decoded PIL image of ``path``, turned by its EXIF orientation (Detectron2's rule, for
    labels too); over ``max_pixels`` (0 / None: no limit) it is refused from its header."""
    if os.path.isdir(path):
        raise BadInputError(f"{what} file {path} is a folder, not a file", f"unreadable {what}",
                            path)
    try:
        with open(path, "rb") as f:
            with _pil_size_check_off():
                image = Image.open(f)
            width, height = image.size
            if max_pixels and width * height > max_pixels:
                raise BadInputError(too_large_message(what, path, width, height, max_pixels),
                                    f"{what} too large", path)
            image.load()
            return image if exif_orientation(image) == 1 else ImageOps.exif_transpose(image)
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
    """For a missing file: "; there is X.jpg ..." when a file of the same stem exists beside
    it, else ""."""
    stem, _ = os.path.splitext(path)
    folder = os.path.dirname(path) or "."
    try:
        others = sorted(f for f in os.listdir(folder)  # not the path itself (e.g. a folder)
                        if os.path.splitext(f)[0] == os.path.basename(stem)
                        and f != os.path.basename(path))
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


def read_image_file(path, format="BGR", max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """Read an image as (H, W, 3) uint8 in ``format`` ("BGR" or "RGB"), EXIF orientation applied.

    Grayscale is replicated to 3 channels and alpha dropped. Unlike Detectron2's ``read_image``,
    16-bit images (and mode "I" within 0..65535) are scaled to 8 bits (value >> 8) rather than
    clipped, and the RGB array is copied once, not three times.

    Raises:
        BadInputError: the file is missing or unreadable; its scale is unknown ("image mode":
            floating point, or 32-bit integers beyond 0..65535); it has more than
            ``max_pixels`` pixels ("image too large", from the header; 0 / None: no limit).
    """
    image = _open(path, "image", max_pixels)
    if image.mode == "F":
        array = np.asarray(image)
        raise BadInputError(
            f"image file {path} has mode 'F' (32-bit floating-point pixels, values "
            f"{_value_range(array)}): the file does not say which values are black and white "
            "(0..1 and 0..255 are both common), so it is not guessed; save it as an 8-bit (or "
            "16-bit) image", "image mode", path)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image).astype(np.int64)
        if image.mode == "I" and array.size and (array.min() < 0 or array.max() > 65535):
            raise BadInputError(
                f"image file {path} has mode 'I' (32-bit integer pixels) with values "
                f"{_value_range(array)}, outside the 0..65535 of a 16-bit image: their scale is "
                "not known, so it is not guessed; save it as an 8-bit (or 16-bit) image",
                "image mode", path)
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


def _value_range(array) -> str:
    """"MIN to MAX" of a numeric array, for a message."""
    if not array.size:
        return "none"
    return f"{array.min():g} to {array.max():g}"


# Label modes that are refused and why (RGB / RGBA: "colour label", with its own advice).
_LABEL_MODE_PROBLEMS = {
    "LA": "grayscale with an alpha channel",
    "La": "grayscale with an alpha channel",
    "PA": "palette with an alpha channel",
    "F": "32-bit floating-point values: class ids are integers",
}


def read_label_file(path, label_map=None, max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """Read a label map as (H, W) int64 class ids, EXIF orientation applied, ``label_map``
    ({stored value: class id}) applied. Palette PNGs give their indices, single-channel images
    their values, 1-bit images 0 and 1.

    Raises:
        BadInputError: as :func:`read_image_file` ("label too large", ...); a colour image
            ("colour label"); another mode, e.g. with alpha or floating point ("label mode").
    """
    label = _open(path, "label", max_pixels)
    if label.mode in _LABEL_MODES:
        return apply_label_map(np.asarray(label).astype(np.int64), label_map)
    expected = "expected one channel of class ids (8/16-bit grayscale, 1-bit or palette PNG)"
    if label.mode in ("RGB", "RGBA"):
        rgb = np.asarray(label)[..., :3]
        if (rgb == rgb[..., :1]).all():
            detail = (" (its channels are equal: save it as one channel, e.g. with PIL's "
                      "Image.convert('L'))")
        else:
            detail = " (colour-coded classes: convert each colour to its class id)"
        raise BadInputError(f"label file {path} has mode {label.mode!r}: {expected}, not "
                            f"colours{detail}", "colour label", path)
    what = _LABEL_MODE_PROBLEMS.get(label.mode, "not one channel of class ids")
    fix = ("save it without the alpha channel (e.g. with PIL's Image.convert('L'), or 'P' for a "
           "palette): transparency is not read as the ignore label" if "alpha" in what
           else "save the class ids as such a PNG")
    raise BadInputError(f"label file {path} has mode {label.mode!r} ({what}): {expected}; {fix}",
                        "label mode", path)


def check_image_size(image_shape, dataset_dict):
    """Raise :class:`BadInputError` if ``image_shape`` (H, W, ...) differs from the dataset
    dict's ``height``/``width`` (when it has them), as Detectron2's ``check_image_size`` does
    with a ``SizeMismatchError``."""
    expected = (dataset_dict.get("height", image_shape[0]),
                dataset_dict.get("width", image_shape[1]))
    if tuple(expected) != tuple(image_shape[:2]):
        path = dataset_dict["file_name"]
        raise BadInputError(
            f"image file {path} is {image_shape[1]}x{image_shape[0]} (WxH) but its "
            f"dataset dict says {expected[1]}x{expected[0]}", "image size", path
        )


def smallest_resizes(augmentations) -> List[Tuple[int, int]]:
    """``(short_edge_length, max_size)`` of each ``ResizeShortestEdge`` among ``augmentations``,
    with the smallest non-zero short edge it may draw: an image that survives it survives all."""
    resizes = []
    for aug in augmentations:
        if not isinstance(aug, T.ResizeShortestEdge):
            continue
        if aug.is_range:  # drawn from [low, high]
            low, high = (int(v) for v in aug.short_edge_length)
            smallest = max(1, low) if high > 0 else None
        else:  # drawn from a list
            smallest = min((int(v) for v in aug.short_edge_length if int(v) > 0), default=None)
        if smallest is not None:
            resizes.append((smallest, int(aug.max_size)))
    return resizes


def check_resizable(image_shape, path, resizes) -> None:
    """Raise :class:`BadInputError` ("degenerate image") if a resize of ``resizes``
    (:func:`smallest_resizes`) brings a side of an image of ``image_shape`` (H, W, ...) to 0
    pixels (a thin image whose long side ``max_size`` caps); one pixel is enough for the model."""
    height, width = int(image_shape[0]), int(image_shape[1])
    for short_edge, max_size in resizes:
        new_h, new_w = T.ResizeShortestEdge.get_output_shape(height, width, short_edge, max_size)
        if min(new_h, new_w) < 1:
            raise BadInputError(
                f"image file {path} is {width}x{height} (WxH): resized to a short side of "
                f"{short_edge} with a long side of at most {max_size} pixels (INPUT.MIN_SIZE_* "
                f"/ MAX_SIZE_*) it would be {new_w}x{new_h}; crop it to a less elongated shape "
                "or tile it", "degenerate image", path)


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
    """Raise :class:`BadInputError` if the label and image sizes (H, W, ...) differ (EXIF
    orientation applied); the message says when the label fits the stored, unturned image
    (``orientation``: the image's, read from ``image_path`` if None)."""
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
    """Raise :class:`BadInputError` if ``label`` (class ids, any shape) has values outside
    [0, K) other than ignore."""
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
