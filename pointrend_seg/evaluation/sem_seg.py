"""
mIoU evaluation that says what it averages.

Detectron2's ``SemSegEvaluator`` averages the IoU over the classes that occur in the ground
truth or the predictions. A class with no ground-truth pixel is reported with IoU NaN, even
when it is predicted (and then counted as 0 in the mean), and nothing says how many classes
the mean covers: a dataset whose masks lost a class (e.g. 0/255 masks whose 255 is the ignore
label) scores ``mIoU = 100`` over the one class left. :class:`SegmentationEvaluator` keeps
Detectron2's numbers (same mIoU, fwIoU, mACC, pACC) and:

* reads the ground truth through a ``ground_truth`` callable (the trainer's applies the
  dataset's label map, :class:`pointrend_seg.data.GroundTruthReader`; default:
  :func:`~.ground_truth.stored_ground_truth`) and checks it: a value outside the classes or a
  size other than the prediction's raises an error naming the file, instead of silently
  corrupting the confusion matrix;
* reports ``IoU-<class>`` = 0 for a class that is predicted but absent from the ground truth
  (the value the mean already uses), NaN only for classes that are neither; ``ACC-<class>`` is
  NaN exactly for classes absent from the ground truth;
* logs a warning naming the classes absent from the ground truth.

:func:`describe_miou` turns the results into the line that ``Trainer.test`` prints, e.g.
``mIoU = 100.00 over 1 of 2 classes; absent from the ground truth: disc (not in the mean)``.
"""
import inspect
import logging
import math
import os

import numpy as np
import torch

from detectron2.evaluation import SemSegEvaluator
from detectron2.utils.file_io import PathManager

from .ground_truth import stored_ground_truth

__all__ = ["SegmentationEvaluator", "describe_miou"]

logger = logging.getLogger(__name__)


class SegmentationEvaluator(SemSegEvaluator):
    """
    Detectron2's ``SemSegEvaluator`` with checked ground truth from ``ground_truth`` and
    explicit absent classes (module docstring); results under ``"sem_seg"`` in percent.

    Args:
        dataset_name, distributed, output_dir: as for Detectron2's ``SemSegEvaluator``.
        ground_truth: callable ``file_name`` -> (H, W) int64 class ids; None:
            :func:`~.ground_truth.stored_ground_truth`.
    """

    def __init__(self, dataset_name, distributed=True, output_dir=None, *, ground_truth=None):
        kwargs = {}
        if "compute_boundary_iou" in inspect.signature(SemSegEvaluator.__init__).parameters:
            # Later Detectron2 versions: its boundary IoU needs ground truth that this process()
            # does not collect; BoundaryEvaluator measures boundaries.
            kwargs["compute_boundary_iou"] = False
        super().__init__(dataset_name, distributed=distributed, output_dir=output_dir, **kwargs)
        self._ground_truth = ground_truth or stored_ground_truth(dataset_name)

    def process(self, inputs, outputs):
        """
        Args:
            inputs: dicts with ``file_name``.
            outputs: dicts with ``"sem_seg"``, (C, H, W) class scores at the label's size.
        """
        k = self._num_classes
        for input, output in zip(inputs, outputs):
            pred = output["sem_seg"].argmax(dim=0).to(self._cpu_device).numpy().astype(np.int64)
            file_name = input["file_name"]
            gt = self._ground_truth(file_name)
            if gt.shape != pred.shape:
                raise ValueError(f"ground truth of {file_name} is {gt.shape[1]}x{gt.shape[0]} "
                                 f"(WxH), its prediction {pred.shape[1]}x{pred.shape[0]}")
            valid = gt != self._ignore_label
            bad = valid & ((gt < 0) | (gt >= k))
            if bad.any():
                raise ValueError(
                    f"ground truth of {file_name} has values {np.unique(gt[bad])[:10].tolist()} "
                    f"outside [0, {k}) that are not the ignore label {self._ignore_label}"
                )
            # Rows: predicted class, columns: true class; the last row/column (ignored pixels in
            # Detectron2's layout) stays empty.
            counts = np.bincount(pred[valid] * k + gt[valid], minlength=k * k).reshape(k, k)
            self._conf_matrix[:k, :k] += counts
            self._predictions.extend(self.encode_json_sem_seg(pred, file_name))

    def evaluate(self):
        results = super().evaluate()
        if results is None:  # not the main process
            return None
        res = results["sem_seg"]
        conf = self._conf_matrix[:-1, :-1]
        gt_pixels, pred_pixels = conf.sum(axis=0), conf.sum(axis=1)
        absent = []
        for i, name in enumerate(self._class_names):
            if gt_pixels[i] == 0:
                absent.append(name)
                # Counted as 0 in Detectron2's mean when predicted; say so here too.
                res[f"IoU-{name}"] = 0.0 if pred_pixels[i] > 0 else float("nan")
        if absent:
            logger.warning(
                f"{self._dataset_name}: {len(absent)} of {len(self._class_names)} classes have no "
                f"ground-truth pixel and are absent from the evaluation: {', '.join(absent)}"
            )
        if self._output_dir:
            with PathManager.open(os.path.join(self._output_dir, "sem_seg_evaluation.pth"),
                                  "wb") as f:
                torch.save(res, f)
        return results


def describe_miou(sem_seg_results: dict, class_names) -> str:
    """
    ``"mIoU = X over N of K classes"`` plus, if any, the classes absent from the ground truth
    and whether each is in the mean (predicted: IoU 0) or not, from the ``"sem_seg"`` results of
    :class:`SegmentationEvaluator` (``mIoU``, ``IoU-<class>``, ``ACC-<class>``).
    """
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
