"""Dataset mapper for semantic segmentation: reads and checks a sample (:mod:`.readers`) and
augments it (:mod:`.augmentations`) into the tensors the meta-architecture expects."""
import copy
import logging

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import transforms as T

from ..config import DEFAULT_MAX_IMAGE_PIXELS, check_pointrend_seg_keys
from .augmentations import build_sem_seg_augmentations
from .readers import (BadInputError, check_image_size, check_label_size, check_label_values,
                      check_resizable, read_image_file, read_label_file, smallest_resizes)

__all__ = ["SemSegDatasetMapper"]

logger = logging.getLogger(__name__)


class SemSegDatasetMapper:
    """Maps a dataset dict with ``file_name`` and optionally ``sem_seg_file_name`` /
    ``sem_seg_label_map`` to ``image`` ((3, H, W) uint8 in ``image_format``) and ``sem_seg``
    ((H, W) int64); ``height``/``width`` are kept so predictions are resized back to them."""

    @configurable
    def __init__(self, is_train: bool, *, augmentations, image_format: str, num_classes: int,
                 ignore_label: int, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
        self.is_train = is_train
        # An image these resizes bring to a 0-pixel side is refused with its name (below).
        self.resizes = smallest_resizes(augmentations)
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.max_image_pixels = max_image_pixels
        logger.info(f"SemSegDatasetMapper ({'train' if is_train else 'test'}): {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        check_pointrend_seg_keys(cfg)
        return {
            "is_train": is_train,
            "augmentations": build_sem_seg_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "ignore_label": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "max_image_pixels": cfg.INPUT.MAX_IMAGE_PIXELS,
        }

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image_path = dataset_dict["file_name"]
        image = read_image_file(image_path, self.image_format, self.max_image_pixels)
        check_image_size(image.shape, dataset_dict)
        check_resizable(image.shape, image_path, self.resizes)
        dataset_dict.setdefault("height", image.shape[0])
        dataset_dict.setdefault("width", image.shape[1])
        label = None
        label_path = dataset_dict.pop("sem_seg_file_name", None)
        label_map = dataset_dict.pop("sem_seg_label_map", None)
        if label_path is not None:
            label = read_label_file(label_path, label_map, self.max_image_pixels)
            check_label_size(label.shape, image.shape, label_path, image_path)
            check_label_values(label, self.num_classes, self.ignore_label, label_path)
            # Resizing uses PIL (nearest) for uint8 maps; wider ids go through float64.
            # The ignore label pads crops, so it must fit the dtype too.
            fits_uint8 = label.min() >= 0 and label.max() < 256 and 0 <= self.ignore_label < 256
            label = label.astype(np.uint8 if fits_uint8 else np.float64)
        elif self.is_train:
            raise BadInputError(f"training sample {image_path} has no 'sem_seg_file_name'",
                                "no label", image_path)
        aug_input = T.AugInput(image, sem_seg=label)
        self.augmentations(aug_input)
        image = np.ascontiguousarray(aug_input.image.transpose(2, 0, 1))
        dataset_dict["image"] = torch.as_tensor(image)
        if label is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(aug_input.sem_seg.astype(np.int64))
        return dataset_dict
