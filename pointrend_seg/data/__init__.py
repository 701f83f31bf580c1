"""Data: reading, checking, augmenting and mapping samples, the whole-dataset check and the
dataset registrations (made on import, :mod:`.datasets`); module map: docs/architecture.md."""
from . import datasets
from .augmentations import build_sem_seg_augmentations, sem_seg_augmentations
from .dataset_check import (DatasetCheckError, DatasetReport, check_dataset, check_dataset_dicts,
                            raise_dataset_problems)
from .dataset_mapper import SemSegDatasetMapper
from .ground_truth import GroundTruthReader
from .label_map import apply_label_map, parse_label_map
from .metadata import NoClassNamesError, class_names_and_colors
from .readers import BadInputError, read_image_file, read_label_file

__all__ = [
    "BadInputError", "DatasetCheckError", "DatasetReport", "GroundTruthReader",
    "NoClassNamesError", "SemSegDatasetMapper", "apply_label_map", "build_sem_seg_augmentations",
    "check_dataset", "check_dataset_dicts", "class_names_and_colors", "datasets", "parse_label_map",
    "raise_dataset_problems", "read_image_file", "read_label_file", "sem_seg_augmentations",
]
