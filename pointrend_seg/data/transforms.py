"""
Padding for crops larger than the (resized) image.

Detectron2's ``RandomCrop("absolute", (h, w))`` silently shrinks the crop to the image when the
image is smaller, so batches get images of different sizes and small images never fill the crop.
:class:`PadToMinSize` pads the image (with 0) and the label map (with the ignore label) at the
bottom and right up to the crop size first; padded pixels are ignored by the loss.
"""
import numpy as np

from detectron2.data import transforms as T

__all__ = ["PadBottomRightTransform", "PadToMinSize"]


class PadBottomRightTransform(T.Transform):
    """
    Pad ``pad_h`` rows at the bottom and ``pad_w`` columns on the right: the image with
    ``pad_value`` and segmentation maps with ``seg_pad_value``. Coordinates do not move.
    """

    def __init__(self, pad_h: int, pad_w: int, orig_h: int, orig_w: int, pad_value=0,
                 seg_pad_value=255):
        super().__init__()
        if pad_h < 0 or pad_w < 0:
            raise ValueError(f"padding must be >= 0, got pad_h={pad_h}, pad_w={pad_w}")
        self._set_attributes(locals())

    def _pad(self, array, value):
        if array.shape[:2] != (self.orig_h, self.orig_w):
            raise ValueError(
                f"{type(self).__name__} expects {self.orig_h}x{self.orig_w} (HxW) inputs, "
                f"got {array.shape[0]}x{array.shape[1]}"
            )
        widths = [(0, self.pad_h), (0, self.pad_w)] + [(0, 0)] * (array.ndim - 2)
        return np.pad(array, widths, mode="constant", constant_values=value)

    def apply_image(self, img):
        return self._pad(img, self.pad_value)

    def apply_segmentation(self, segmentation):
        return self._pad(segmentation, self.seg_pad_value)

    def apply_coords(self, coords):
        return coords

    def inverse(self):
        return T.CropTransform(0, 0, self.orig_w, self.orig_h)


class PadToMinSize(T.Augmentation):
    """
    Pad images smaller than ``min_size`` = (height, width) to at least that size (bottom/right):
    the image with ``pad_value``, the label map with ``seg_pad_value`` (the ignore label).
    Images that are already large enough are left untouched.
    """

    def __init__(self, min_size, pad_value=0, seg_pad_value=255):
        super().__init__()
        min_h, min_w = (int(s) for s in min_size)
        self._init({"min_h": min_h, "min_w": min_w, "pad_value": pad_value,
                    "seg_pad_value": seg_pad_value})

    def get_transform(self, image):
        h, w = image.shape[:2]
        pad_h, pad_w = max(0, self.min_h - h), max(0, self.min_w - w)
        if pad_h == 0 and pad_w == 0:
            return T.NoOpTransform()
        return PadBottomRightTransform(pad_h, pad_w, h, w, self.pad_value, self.seg_pad_value)

    def __repr__(self):
        return (f"PadToMinSize(min_size=({self.min_h}, {self.min_w}), pad_value={self.pad_value}, "
                f"seg_pad_value={self.seg_pad_value})")
