"""
Where the evaluators get the ground truth: a ``ground_truth`` callable (``file_name`` -> (H, W)
int64 class ids) given by the caller - the trainer gives
:class:`pointrend_seg.data.GroundTruthReader`, which applies the dataset's label map as
training does - or, by default, the dataset dicts' ``sem_seg_file_name`` read as Detectron2's
``SemSegEvaluator`` reads it (PIL, values as stored), with one change: EXIF orientation is
applied to the label as training applies it to images and labels (Detectron2's ``read_image``
rule; its evaluator alone ignores it). The default refuses datasets whose dicts carry a label
map (``sem_seg_label_map``): their stored values are not the class ids.
"""
import numpy as np
from PIL import Image, ImageOps

from detectron2.data import DatasetCatalog
from detectron2.utils.file_io import PathManager

__all__ = ["stored_ground_truth"]


def stored_ground_truth(dataset_name: str):
    """The default ``ground_truth`` callable of the evaluators for ``dataset_name``."""
    files = {}
    for record in DatasetCatalog.get(dataset_name):
        if record.get("sem_seg_label_map"):
            raise ValueError(
                f"dataset {dataset_name!r} has a label map ({record['sem_seg_label_map']}): "
                "evaluate it with ground_truth=pointrend_seg.data.GroundTruthReader("
                f"{dataset_name!r}), as pointrend_seg's Trainer does"
            )
        files[record["file_name"]] = record["sem_seg_file_name"]

    def read(file_name):
        with PathManager.open(files[file_name], "rb") as f:
            return np.array(ImageOps.exif_transpose(Image.open(f)), dtype=np.int64)

    return read
