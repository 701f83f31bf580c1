"""
Ground truth for the evaluators, read the way training reads it: the mapper's
:func:`~pointrend_seg.data.dataset_mapper.read_label_file` with each dataset dict's
``sem_seg_label_map``, so a dataset registered with a label map (e.g. 0/255 masks with
``{255: 1}``) is evaluated on the same class ids it was trained on.
"""
import numpy as np

from detectron2.data import DatasetCatalog

from ..data.dataset_mapper import read_label_file

__all__ = ["GroundTruthReader"]


class GroundTruthReader:
    """``reader(file_name)``: the (H, W) int64 class ids of the image ``file_name``."""

    def __init__(self, dataset_name: str):
        self.dataset_name = dataset_name
        self._labels = {
            record["file_name"]: (record["sem_seg_file_name"], record.get("sem_seg_label_map"))
            for record in DatasetCatalog.get(dataset_name)
        }

    def label_file(self, file_name: str) -> str:
        """The label file of the image ``file_name``."""
        return self._labels[file_name][0]

    def __call__(self, file_name: str) -> np.ndarray:
        path, label_map = self._labels[file_name]
        return read_label_file(path, label_map)
