"""Padding for crops larger than the (resized) image: Detectron2's ``RandomCrop("absolute")``
silently shrinks the crop to a smaller image, so batches would mix sizes.
"""
from detectron2.data import transforms as T

__all__ = ["PadToMinSize"]


class PadToMinSize(T.Augmentation):
    """Pad images smaller than ``min_size`` = (height, width) to that size (bottom/right): the
    image with ``pad_value``, the label map with ``seg_pad_value`` (the ignore label)."""

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
