"""mIoU evaluation that says what it averages, the same on every Detectron2 version (why:
docs/dataset_check.md, "Evaluation over absent classes"). :class:`SegmentationEvaluator` computes
the metrics itself from Detectron2's confusion matrix:

* ``IoU-<class>`` = TP / (TP + FP + FN) over the dataset, NaN when that union is empty (the
  class is neither in the ground truth nor predicted); ``mIoU`` is the mean over the other
  classes, so a class predicted without ground truth counts with IoU 0 (as in v0.6, the
  Cityscapes scripts and mmsegmentation); ``fwIoU`` weights by ground-truth pixels;
* ``ACC-<class>`` = TP / ground-truth pixels, NaN exactly for classes absent from the ground
  truth; ``mACC`` the mean over the others; ``pACC`` = TP / all labelled pixels;
* the ground truth is read as training reads it (:class:`pointrend_seg.data.GroundTruthReader`)
  and checked: a value outside the classes or a size other than the prediction's is an error
  naming the file, not a corrupt confusion matrix;
* a warning names the classes absent from the ground truth;
* with an ``output_dir``, ``confusion_matrix.csv`` / ``.png`` (rows = ground truth,
  :mod:`.report`) are written beside Detectron2's files, each whole or not at all.

Gathering over processes is Detectron2's (its ``evaluate`` runs first, without the output
folder). :func:`describe_miou` gives the line that ``Trainer.test`` prints.
"""
import json
import logging
import math
import os
from collections import OrderedDict

import numpy as np
import torch

from detectron2.evaluation import SemSegEvaluator

from ..data import GroundTruthReader
from .report import write_confusion_matrix, write_result_file

__all__ = ["SegmentationEvaluator", "describe_miou", "sem_seg_metrics"]

logger = logging.getLogger(__name__)


class SegmentationEvaluator(SemSegEvaluator):
    """Detectron2's ``SemSegEvaluator`` with checked ground truth and explicit absent classes
    (module docstring); results under ``"sem_seg"`` in percent.

    Args:
        dataset_name, distributed, output_dir: as for Detectron2's ``SemSegEvaluator``.
        ground_truth: callable ``file_name`` -> (H, W) int64 class ids; None:
            :class:`pointrend_seg.data.GroundTruthReader` of the dataset.
    """

    def __init__(self, dataset_name, distributed=True, output_dir=None, *, ground_truth=None):
        super().__init__(dataset_name, distributed=distributed, output_dir=output_dir)
        self._ground_truth = ground_truth or GroundTruthReader(dataset_name)

    def process(self, inputs, outputs):
        """``inputs``: dicts with ``file_name``; ``outputs``: dicts with ``"sem_seg"``, (C, H, W)
        class scores at the label's size."""
        k = self._num_classes
        for input, output in zip(inputs, outputs):
            file_name = input["file_name"]
            pred, gt, valid = _checked_prediction(output, file_name, self._ground_truth, k,
                                                  self._ignore_label)
            # Rows: predicted class, columns: true class; the last row/column (ignored pixels in
            # Detectron2's layout) stays empty.
            counts = np.bincount(pred[valid] * k + gt[valid], minlength=k * k).reshape(k, k)
            self._conf_matrix[:k, :k] += counts
            self._predictions.extend(self.encode_json_sem_seg(pred, file_name))

    def evaluate(self):
        # Detectron2's evaluate() gathers the processes' results; the files are written below,
        # each whole or not at all, so it runs without the output folder.
        output_dir, self._output_dir = self._output_dir, None
        try:
            if super().evaluate() is None:  # not the main process
                return None
        finally:
            self._output_dir = output_dir
        # Detectron2's evaluate() left the confusion matrix summed over processes here.
        res = sem_seg_metrics(self._conf_matrix[:-1, :-1], self._class_names)
        # Rows = ground truth from here on (Detectron2's layout has rows = prediction).
        self.confusion = self._conf_matrix[:-1, :-1].T.astype(np.int64)
        absent = [n for n in self._class_names if math.isnan(res[f"ACC-{n}"])]
        if absent:
            logger.warning(
                f"{self._dataset_name}: {len(absent)} of {len(self._class_names)} classes have no "
                f"ground-truth pixel: {', '.join(absent)}"
            )
        if self._output_dir:
            folder = self._output_dir
            write_result_file(os.path.join(folder, "sem_seg_predictions.json"),
                              lambda f: f.write(json.dumps(self._predictions)))
            write_result_file(os.path.join(folder, "sem_seg_evaluation.pth"),
                              lambda f: torch.save(res, f), binary=True)
            write_confusion_matrix(folder, self.confusion, self._class_names)
        return OrderedDict(sem_seg=res)

    @property
    def class_pixels(self) -> np.ndarray:
        """(K,) ground-truth pixels of each class in the last :meth:`evaluate` (main process)."""
        return self.confusion.sum(axis=1)


def _checked_prediction(output, file_name, ground_truth, num_classes, ignore_label):
    """``(pred, gt, valid)``: the argmax of ``output["sem_seg"]`` and ``ground_truth(file_name)``,
    (H, W) int64 class ids, and the (H, W) bool mask of the pixels not ``ignore_label``.

    Raises:
        ValueError: the two sizes differ, or the ground truth has a value outside
            ``[0, num_classes)`` that is not ``ignore_label`` (the message names the file).
    """
    pred = output["sem_seg"].argmax(dim=0).cpu().numpy().astype(np.int64)
    gt = ground_truth(file_name)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth of {file_name} is {'x'.join(map(str, gt.shape[::-1]))} "
                         f"(WxH), its prediction {pred.shape[1]}x{pred.shape[0]}")
    valid = gt != ignore_label
    bad = valid & ((gt < 0) | (gt >= num_classes))
    if bad.any():
        raise ValueError(
            f"ground truth of {file_name} has values {np.unique(gt[bad])[:10].tolist()} "
            f"outside [0, {num_classes}) that are not the ignore label {ignore_label}"
        )
    return pred, gt, valid


def sem_seg_metrics(confusion: np.ndarray, class_names) -> dict:
    """The ``"sem_seg"`` results (percent, module docstring) of a (K, K) confusion matrix of
    pixel counts, rows = predicted class, columns = true class."""
    confusion = confusion.astype(np.float64)
    tp = confusion.diagonal()
    gt_pixels, pred_pixels = confusion.sum(axis=0), confusion.sum(axis=1)
    union = gt_pixels + pred_pixels - tp
    present = gt_pixels > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(present, tp / gt_pixels, np.nan)
    total = gt_pixels.sum()
    res = {
        "mIoU": 100 * float(np.nanmean(iou)) if (union > 0).any() else float("nan"),
        "fwIoU": 100 * float((iou[present] * gt_pixels[present]).sum() / total)
        if total else float("nan"),
    }
    res.update((f"IoU-{n}", 100 * float(v)) for n, v in zip(class_names, iou))
    res["mACC"] = 100 * float(acc[present].mean()) if present.any() else float("nan")
    res["pACC"] = 100 * float(tp.sum() / total) if total else float("nan")
    res.update((f"ACC-{n}", 100 * float(v)) for n, v in zip(class_names, acc))
    return res


def describe_miou(sem_seg_results: dict, class_names) -> str:
    """``"mIoU = X over N of K classes"`` from :class:`SegmentationEvaluator`'s results, plus the
    classes absent from the ground truth and whether each is in the mean (predicted: IoU 0)."""
    absent, in_mean = [], 0
    for name in class_names:
        iou, acc = sem_seg_results[f"IoU-{name}"], sem_seg_results[f"ACC-{name}"]
        in_mean += not math.isnan(iou)
        if math.isnan(acc):
            how = "not in the mean" if math.isnan(iou) else "predicted: IoU 0 in the mean"
            absent.append(f"{name} ({how})")
    line = f"mIoU = {sem_seg_results['mIoU']:.2f} over {in_mean} of {len(class_names)} classes"
    if absent:
        line += "; absent from the ground truth: " + ", ".join(absent)
    return line
