"""Ground truth of a registered dataset read the way training reads it (label map included),
for the evaluators.
"""
from typing import Optional

import numpy as np

from ..config import DEFAULT_MAX_IMAGE_PIXELS
from .readers import check_label_values, read_label_file

__all__ = ["GroundTruthReader"]


class GroundTruthReader:
    """``reader(file_name)``: the (H, W) int64 class ids of the image ``file_name`` of dataset
    ``dataset_name`` (:func:`~.readers.read_label_file`). Raises ``BadInputError`` naming the
    label file for one over ``max_pixels`` pixels or, with ``num_classes``, with values outside
    [0, num_classes) other than ``ignore_label`` (:func:`~.readers.check_label_values`)."""

    def __init__(self, dataset_name: str, num_classes: Optional[int] = None,
                 ignore_label: int = 255, max_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS):
        from detectron2.data import DatasetCatalog

        self.num_classes, self.ignore_label, self.max_pixels = num_classes, ignore_label, max_pixels
        self._labels = {
            record["file_name"]: (record["sem_seg_file_name"], record.get("sem_seg_label_map"))
            for record in DatasetCatalog.get(dataset_name)
        }

    def __call__(self, file_name: str) -> np.ndarray:
        path, label_map = self._labels[file_name]
        label = read_label_file(path, label_map, self.max_pixels)
        if self.num_classes is not None:
            check_label_values(label, self.num_classes, self.ignore_label, path)
        return label
