"""Training and evaluation on Detectron2's ``DefaultTrainer``, with our mapper and evaluators."""
import contextlib
import json
import logging
import os

import torch

from detectron2.config import get_cfg
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer
from detectron2.engine import defaults as d2_defaults
from detectron2.evaluation import DatasetEvaluators, SemSegEvaluator
from detectron2.projects.deeplab import build_lr_scheduler as build_deeplab_lr_scheduler
from detectron2.utils import comm

from ..config import add_pointrend_seg_config
from ..data import SemSegDatasetMapper
from ..evaluation import BoundaryEvaluator

__all__ = ["Trainer", "build_config"]

logger = logging.getLogger(__name__)


def build_config(config_file: str = "", opts=()):
    """
    Detectron2 defaults + :func:`add_pointrend_seg_config` + a YAML file (``_BASE_`` supported)
    + ``KEY VALUE`` overrides. Raises if the config asks for CUDA on a machine without it.
    """
    cfg = get_cfg()
    add_pointrend_seg_config(cfg)
    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"config file not found: {config_file}")
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"MODEL.DEVICE={cfg.MODEL.DEVICE!r} but no CUDA device is available; "
            "add 'MODEL.DEVICE cpu' to the command line"
        )
    return cfg


@contextlib.contextmanager
def _cpu_capable_ddp():
    """
    Detectron2's ``create_ddp_model`` passes ``device_ids=[local_rank]``, which torch rejects for
    a CPU model. While active, CPU models are wrapped with ``device_ids=None`` instead.
    """
    original = d2_defaults.create_ddp_model

    def create_ddp_model(model, **kwargs):
        if comm.get_world_size() > 1 and not next(model.parameters()).is_cuda:
            kwargs.setdefault("device_ids", None)
        return original(model, **kwargs)

    d2_defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = original


class Trainer(DefaultTrainer):
    """
    ``DefaultTrainer`` with the semantic-segmentation mapper, evaluators chosen from the dataset
    metadata (``evaluator_type``), DeepLab's poly learning-rate schedule, and DDP on CPU.
    """

    def __init__(self, cfg):
        with _cpu_capable_ddp():
            super().__init__(cfg)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        # Detectron2 registers Cityscapes' trainId semantic labels as "cityscapes_sem_seg"; they are
        # ordinary label maps for SemSegEvaluator (its CityscapesSemSegEvaluator needs cityscapesscripts).
        if evaluator_type not in ("sem_seg", "cityscapes_sem_seg"):
            raise ValueError(
                f"dataset {dataset_name!r} has evaluator_type={evaluator_type!r} in its metadata; "
                "pointrend_seg evaluates 'sem_seg' and 'cityscapes_sem_seg' datasets"
            )
        evaluators = [SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder)]
        boundary = cfg.TEST.BOUNDARY_EVAL
        if boundary.ENABLED:
            evaluators.append(
                BoundaryEvaluator(
                    dataset_name, distributed=True, output_dir=output_folder,
                    bf_tolerance=boundary.BF_TOLERANCE, biou_dilation=boundary.BIOU_DILATION,
                )
            )
        return DatasetEvaluators(evaluators)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=SemSegDatasetMapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=SemSegDatasetMapper(cfg, False))

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        # Knows "WarmupPolyLR" and falls back to Detectron2's schedulers for the other names.
        return build_deeplab_lr_scheduler(cfg, optimizer)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Detectron2's evaluation; the results also go to ``OUTPUT_DIR/eval_results.json``."""
        results = super().test(cfg, model, evaluators)
        if comm.is_main_process() and results:
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            with open(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), "w") as f:
                json.dump(results, f, indent=1)
            # DefaultTrainer.test un-nests the results of a single dataset.
            per_dataset = results if len(cfg.DATASETS.TEST) > 1 else {cfg.DATASETS.TEST[0]: results}
            for name, res in per_dataset.items():
                line = f"{name}: mIoU = {res['sem_seg']['mIoU']:.2f}"
                if "sem_seg_boundary" in res:
                    b = res["sem_seg_boundary"]
                    line += f", boundary F = {b['mBF']:.2f}, boundary IoU = {b['mBIoU']:.2f}"
                logger.info(line)
        return results
