"""Data: dataset registrations (on import), the semantic-segmentation mapper, label maps, the
whole-dataset check, class names of a model, and image / video inputs of a predictor."""
from . import datasets
from .dataset_check import (
    DatasetCheckError,
    DatasetReport,
    check_dataset,
    check_dataset_dicts,
    raise_dataset_problems,
)
from .dataset_mapper import (
    BadInputError,
    SemSegDatasetMapper,
    build_sem_seg_augmentations,
    read_image_file,
    read_label_file,
)
from .ground_truth import GroundTruthReader
from .label_map import apply_label_map, parse_label_map
from .media import (
    VIDEO_EXTENSIONS,
    MediaSource,
    VideoReader,
    VideoWriter,
    expand_inputs,
    write_label_png,
)
from .metadata import class_names_and_colors
