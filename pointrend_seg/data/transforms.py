"""
Padding for crops larger than the (resized) image.

Detectron2's ``RandomCrop("absolute", (h, w))`` silently shrinks the crop to the image when the
image is smaller, so batches get images of different sizes and small images never fill the crop.
:class:`PadToMinSize` pads the image (with 0) and the label map (with the ignore label) at the
bottom and right up to the crop size first, with fvcore's ``PadTransform``; padded pixels are
ignored by the loss.
"""
from detectron2.data import transforms as T

__all__ = ["PadToMinSize"]


class PadToMinSize(T.Augmentation):
    """
    Pad images smaller than ``min_size`` = (height, width) to at least that size (bottom/right):
    the image with ``pad_value``, the label map with ``seg_pad_value`` (the ignore label).
    Images that are already large enough are left untouched.
    """

    def __init__(self, min_size, pad_value=0, seg_pad_value=255):
        super().__init__()
        min_h, min_w = min_size = tuple(int(s) for s in min_size)
        self._init(locals())  # also Detectron2's __repr__ (the mapper's log line) from these

    def get_transform(self, image):
        h, w = image.shape[:2]
        pad_h, pad_w = max(0, self.min_h - h), max(0, self.min_w - w)
        if pad_h == 0 and pad_w == 0:
            return T.NoOpTransform()
        # x0, y0 (left, top) = 0: coordinates do not move.
        return T.PadTransform(0, 0, pad_w, pad_h, orig_w=w, orig_h=h, pad_value=self.pad_value,
                              seg_pad_value=self.seg_pad_value)
