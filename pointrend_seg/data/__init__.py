"""Data: dataset registrations (on import) and the semantic-segmentation mapper."""
from . import datasets
from .dataset_mapper import (
    BadInputError,
    SemSegDatasetMapper,
    build_sem_seg_augmentations,
    read_image_file,
    read_label_file,
)
