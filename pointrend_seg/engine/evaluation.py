"""Evaluation of a model on a config's test sets, as ``Trainer.test`` runs it: Detectron2's
``inference_on_dataset`` with our evaluators on the model prepared for inference, the results
written and reported per class."""
import json
import logging
import os
from collections import OrderedDict

from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.evaluation import DatasetEvaluators, inference_on_dataset, print_csv_format
from detectron2.utils import comm

from ..config import ConfigError
from ..data import GroundTruthReader
from ..evaluation import (BoundaryEvaluator, SegmentationEvaluator, describe_miou,
                          format_per_class_table, per_class_rows, write_per_class_bars,
                          write_result_file)
from ..modeling import prepare_for_inference
from .data_checks import without_images

__all__ = ["build_sem_seg_evaluators", "build_test_loader", "evaluate", "report_results"]

logger = logging.getLogger(__name__)


def build_sem_seg_evaluators(cfg, dataset_name, output_folder=None) -> DatasetEvaluators:
    """:class:`SegmentationEvaluator` (+ :class:`BoundaryEvaluator` with
    ``TEST.BOUNDARY_EVAL.ENABLED``) of a "sem_seg" / "cityscapes_sem_seg" dataset, reading the
    ground truth as training does, results in ``output_folder`` (default
    ``OUTPUT_DIR/inference/<dataset>``): a ``DatasetEvaluators`` with attributes ``segmentation``
    and ``output_folder``."""
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    # Cityscapes' trainId labels ("cityscapes_sem_seg") are plain label maps; Detectron2's own
    # CityscapesSemSegEvaluator needs cityscapesscripts.
    if evaluator_type not in ("sem_seg", "cityscapes_sem_seg"):
        raise ConfigError(
            f"dataset {dataset_name!r} has evaluator_type={evaluator_type!r} in its metadata; "
            "pointrend_seg evaluates 'sem_seg' and 'cityscapes_sem_seg' datasets")
    ground_truth = GroundTruthReader(dataset_name, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
                                     cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
                                     cfg.INPUT.MAX_IMAGE_PIXELS)
    evaluators = [SegmentationEvaluator(dataset_name, distributed=True,
                                        output_dir=output_folder, ground_truth=ground_truth)]
    boundary = cfg.TEST.BOUNDARY_EVAL
    if boundary.ENABLED:
        evaluators.append(BoundaryEvaluator(
            dataset_name, distributed=True, output_dir=output_folder,
            bf_tolerance=boundary.BF_TOLERANCE, biou_dilation=boundary.BIOU_DILATION,
            ground_truth=ground_truth))
    ret = DatasetEvaluators(evaluators)
    ret.segmentation, ret.output_folder = evaluators[0], output_folder
    return ret


def build_test_loader(cfg, dataset_name, mapper, skipped=frozenset()):
    """Detectron2's test loader of ``dataset_name`` with the run's test ``mapper``, without the
    samples whose image is in ``skipped`` (``DATASETS.CHECK.SKIP_BAD``)."""
    if not skipped:
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)
    dicts = without_images(DatasetCatalog.get(dataset_name), skipped)
    logger.warning(f"Evaluating {dataset_name} without {len(skipped)} skipped samples")
    return build_detection_test_loader(dicts, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS)


def evaluate(cfg, model, evaluators, test_loaders):
    """Evaluate ``model`` on each of ``cfg.DATASETS.TEST`` (one evaluator and test loader each),
    prepared for inference and restored after; the main process writes
    ``OUTPUT_DIR/eval_results.json`` and reports each dataset (:func:`report_results`). Returns
    Detectron2's layout: ``{dataset: results}``, or the results alone for one dataset."""
    was_training = model.training
    model.eval()
    results = OrderedDict()
    try:
        with prepare_for_inference(model, cfg):
            for name, evaluator, loader in zip(cfg.DATASETS.TEST, evaluators, test_loaders):
                results[name] = inference_on_dataset(model, loader, evaluator)
    finally:
        model.train(was_training)
    single = results if len(results) != 1 else next(iter(results.values()))
    if comm.is_main_process() and results:
        for name, evaluator in zip(cfg.DATASETS.TEST, evaluators):
            logger.info(f"Evaluation results for {name} in csv format:")
            print_csv_format(results[name])
            report_results(name, results[name], evaluator)
        write_result_file(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"),
                          lambda f: json.dump(single, f, indent=1))
    return single


def report_results(name, res, evaluator):
    """Log the mIoU line of dataset ``name``'s results ``res`` and, for our evaluators, the
    per-class table, and write ``per_class.png`` beside the confusion matrix."""
    if "sem_seg" not in res:
        return
    classes = MetadataCatalog.get(name).stuff_classes
    line = f"{name}: " + describe_miou(res["sem_seg"], classes)
    if "sem_seg_boundary" in res:
        b = res["sem_seg_boundary"]
        line += f"; boundary F = {b['mBF']:.2f}, boundary IoU = {b['mBIoU']:.2f}"
    logger.info(line)
    segmentation = getattr(evaluator, "segmentation", None)
    if getattr(segmentation, "confusion", None) is None:
        return
    rows = per_class_rows(res["sem_seg"], classes, segmentation.class_pixels,
                          res.get("sem_seg_boundary"))
    logger.info(format_per_class_table(rows, title=f"{name}, per class (%):"))
    folder = getattr(evaluator, "output_folder", None)
    if folder:
        path = write_per_class_bars(folder, rows, title=name)
        logger.info(f"{name}: confusion_matrix.csv / .png and {os.path.basename(path)} in {folder}")
