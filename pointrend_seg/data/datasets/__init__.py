"""Dataset registrations; importing this module registers the synthetic shapes, and PASCAL VOC
2012 and CamVid under ``$DETECTRON2_DATASETS`` (default ``datasets``, read at import as
Detectron2 does). Cityscapes and ADE20K are Detectron2's registrations; image and mask folders:
:func:`register_folder_dataset`.
"""
import os as _os

from .camvid import CAMVID_CLASSES, CAMVID_IGNORE_LABEL, register_camvid
from .folder import parse_class_names, register_folder_dataset, register_folder_datasets
from .synthetic import SYNTHETIC_CLASSES, register_synthetic_shapes
from .voc import VOC_CLASSES, register_voc_sem_seg

register_synthetic_shapes()
_root = _os.path.expanduser(_os.getenv("DETECTRON2_DATASETS", "datasets"))
register_voc_sem_seg(_root)
register_camvid(_root)

__all__ = ["CAMVID_CLASSES", "CAMVID_IGNORE_LABEL", "SYNTHETIC_CLASSES", "VOC_CLASSES",
           "parse_class_names", "register_camvid", "register_folder_dataset",
           "register_folder_datasets", "register_synthetic_shapes", "register_voc_sem_seg"]
