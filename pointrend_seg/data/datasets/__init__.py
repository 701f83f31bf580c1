"""
Dataset registrations; importing this module registers the built-in datasets.

Besides the synthetic shapes, PASCAL VOC 2012 (``voc_2012_sem_seg_{train,val,train_aug}``) and
CamVid (``camvid_sem_seg_{train,val,test}``) are registered under ``$DETECTRON2_DATASETS``
(default ``datasets``, read at import time as Detectron2 does); nothing is read until
``DatasetCatalog.get``. Cityscapes (``cityscapes_fine_sem_seg_{train,val}``) and ADE20K
(``ade20k_sem_seg_{train,val}``) are Detectron2's own registrations. Other datasets given as an
image folder and a mask folder: :func:`register_folder_dataset`.
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
