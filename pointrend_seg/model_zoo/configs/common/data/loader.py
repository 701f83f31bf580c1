"""``sem_seg_dataloader``: the ``dataloader`` of our semantic-segmentation LazyConfigs (each
``common/data/*.py`` calls it)."""
from typing import Sequence

from omegaconf import OmegaConf

from detectron2.config import LazyCall as L
from detectron2.data import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)

from pointrend_seg.data import SemSegDatasetMapper, sem_seg_augmentations
from pointrend_seg.evaluation import BoundaryEvaluator, SegmentationEvaluator


def sem_seg_dataloader(
    train: Sequence[str], test: Sequence[str], *, num_classes: int, ignore_label: int = 255,
    min_size_train: Sequence[int], max_size_train: int, min_size_test: int, max_size_test: int,
    crop_type=None, crop_size=(512, 512), color_aug_ssd: bool = False, batch_size: int = 16,
    num_workers: int = 4, image_format: str = "RGB", boundary_eval: bool = True,
    output_dir: str = "${train.output_dir}",
):
    """
    ``dataloader`` of a semantic-segmentation LazyConfig (Detectron2's layout: ``train``,
    ``test``, ``evaluator``): Detectron2's loaders with our mapper and augmentations
    (:func:`~pointrend_seg.data.sem_seg_augmentations`, the same as the YAML configs'), and our
    evaluators on the first test set (results under ``output_dir/inference``). Every field is a
    LazyCall node a config can override (``dataloader.train.total_batch_size = 8``, ...).
    """
    def mapper(is_train):
        return L(SemSegDatasetMapper)(
            is_train=is_train,
            augmentations=L(sem_seg_augmentations)(
                is_train=is_train, min_size_train=list(min_size_train),
                max_size_train=max_size_train, min_size_test=min_size_test,
                max_size_test=max_size_test, crop_type=crop_type, crop_size=list(crop_size),
                ignore_label=ignore_label, color_aug_ssd=color_aug_ssd, image_format=image_format,
            ),
            image_format=image_format, num_classes=num_classes, ignore_label=ignore_label,
        )

    dataloader = OmegaConf.create()
    dataloader.train = L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names=list(train), filter_empty=False),
        mapper=mapper(True), total_batch_size=batch_size, num_workers=num_workers,
    )
    dataloader.test = L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names=list(test)[:1], filter_empty=False),
        mapper=mapper(False), num_workers=num_workers,
    )
    evaluator_dir = f"{output_dir}/inference/{list(test)[0]}"
    dataloader.evaluator = [L(SegmentationEvaluator)(dataset_name=list(test)[0],
                                                     output_dir=evaluator_dir)]
    if boundary_eval:
        dataloader.evaluator.append(L(BoundaryEvaluator)(
            dataset_name=list(test)[0], output_dir=evaluator_dir, bf_tolerance=0.0075,
            biou_dilation=0.02))
    return dataloader
