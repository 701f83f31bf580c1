"""Boundary-quality metrics for semantic segmentation, and :class:`BoundaryEvaluator`.

mIoU is dominated by the interior of large segments and barely sees wrong contours, which is
what PointRend is meant to fix.

Conventions: masks are 2-D (H, W) bool arrays; distances are Euclidean distances between pixel
centres, in pixels.  The **boundary pixels** of a mask ``M`` (:func:`mask_boundary`) are the
pixels of ``M`` with a 4-neighbour that is a *valid* pixel outside ``M``: neither the image
border nor the edge of an ignore region is a boundary.  Pixels whose ground truth is the ignore
label are invalid; both masks are restricted to the valid pixels before anything is computed, so
predictions inside the ignore region change no number.

**Boundary F-score (BF)**, Csurka, Larlus and Perronnin, BMVC 2013 (the "BF" of SegNet, TPAMI
2017).  With ``B_p``, ``B_g`` the boundary pixels of the predicted and ground-truth masks of one
class in one image and ``theta`` the tolerance (``bf_tolerance * sqrt(H**2 + W**2)``, 0.75 % of
the diagonal by default, as in SegNet)::

    precision = |{x in B_p : dist(x, B_g) <= theta}| / |B_p|
    recall    = |{y in B_g : dist(y, B_p) <= theta}| / |B_g|
    F         = 2 * precision * recall / (precision + recall)       (0 if both are 0)

F is NaN (skipped) if both boundaries are empty, 0 if one is.  A class's BF is the mean F over
the images where it occurs in the ground truth or the prediction; ``mBF`` is the mean over the
classes with at least one defined F.

**Boundary IoU (BIoU)**, Cheng, Girshick, Dollar, Berg and Kirillov, CVPR 2021.  The inner band
of a mask ``M`` is ``M_d = {x in M : dist(x, C(M)) <= d}`` (``C(M)``: its boundary pixels; the
paper's ``G_d ∩ G``) and ``BIoU = |G_d ∩ P_d| / |G_d ∪ P_d|``, with
``d = max(1, biou_dilation * sqrt(H**2 + W**2))`` (2 % of the diagonal by default, as in the
paper).  Intersections and unions are summed per class over the dataset before dividing;
classes with a zero union are not evaluated.  Unlike the paper's code (3x3 erosions, image
border as contour) the band uses the exact Euclidean distance and the border is no contour.

Distances come from ``cv2.distanceTransform`` (``DIST_L2``, ``DIST_MASK_PRECISE``), one per
boundary map on the bounding box of the two masks, shared by both metrics; :func:`_le` decides
``dist <= theta`` exactly.
"""
import json
import math
import os
from collections import OrderedDict

import cv2
import numpy as np

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..config import check_arguments, is_number
from ..data import GroundTruthReader
from ..data.metadata import dataset_class_names
from .report import write_result_file
from .sem_seg import _checked_prediction

__all__ = [
    "BoundaryEvaluator",
    "check_boundary_options",
    "mask_boundary",
    "boundary_precision_recall",
    "boundary_f_score",
    "boundary_iou_counts",
]


def check_boundary_options(bf_tolerance, biou_dilation) -> None:
    """Check the two widths of :class:`BoundaryEvaluator` (fractions of the image diagonal).

    Raises:
        ConfigError: naming the keys, unless both are numbers >= 0.
    """
    check_arguments("BoundaryEvaluator", [
        (f"TEST.BOUNDARY_EVAL.{key}", name, value,
         is_number(value) and math.isfinite(value) and value >= 0,
         "a number >= 0 (a fraction of the image diagonal)")
        for key, name, value in (("BF_TOLERANCE", "bf_tolerance", bf_tolerance),
                                 ("BIOU_DILATION", "biou_dilation", biou_dilation))])


def _as_bool_2d(array, name):
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {array.shape}")
    return array.astype(bool, copy=False)


def mask_boundary(mask, valid=None):
    """Boundary pixels of a binary mask, as defined in the module docstring.

    Args:
        mask: (H, W) array, non-zero = inside the mask.
        valid: optional (H, W) array, non-zero = evaluated pixel; ``None``: all pixels.

    Returns:
        (H, W) bool array, True on boundary pixels (a subset of ``mask & valid``).

    Raises:
        ValueError: if an array is not 2-D or the shapes differ.
    """
    mask = _as_bool_2d(mask, "mask")
    if valid is None:
        valid = np.ones_like(mask)
    else:
        valid = _as_bool_2d(valid, "valid")
        if valid.shape != mask.shape:
            raise ValueError(f"valid {valid.shape} and mask {mask.shape} differ in shape")
    inside = mask & valid
    outside = valid & ~mask
    near_outside = np.zeros_like(mask)
    near_outside[1:, :] |= outside[:-1, :]
    near_outside[:-1, :] |= outside[1:, :]
    near_outside[:, 1:] |= outside[:, :-1]
    near_outside[:, :-1] |= outside[:, 1:]
    return inside & near_outside


def _bbox(a, b):
    """Slices of the smallest box holding every True pixel of ``a`` and ``b`` (None if none)."""
    union = a | b
    rows = np.flatnonzero(union.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(union.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _distance_to(targets):
    """(H, W) float32 Euclidean distance of every pixel to the nearest True pixel of
    ``targets`` (a non-empty (H, W) bool array)."""
    return cv2.distanceTransform(
        np.where(targets, 0, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
    )


def _le(dist, radius_px):
    """(H, W) bool: ``dist <= radius_px``, decided exactly.

    A squared distance between pixel centres is an integer ``n``, so ``dist <= r`` iff
    ``dist <= sqrt(floor(r**2) + 0.5)``; the half-integer margin dwarfs the float32 error of
    ``dist`` below ~2000 px.
    """
    n_max = np.floor(float(radius_px) ** 2 + 1e-9)
    return dist <= np.float32(np.sqrt(n_max + 0.5))


def _class_counts(pred, gt, pred_b, gt_b, tolerance_px, dilation_px):
    """BF and Boundary IoU counts of one class in one image.

    Args:
        pred, gt: (H, W) bool masks, already restricted to the valid pixels.
        pred_b, gt_b: their boundaries (:func:`mask_boundary` with the same ``valid``).
        tolerance_px: BF tolerance in pixels, or None to skip BF.
        dilation_px: Boundary IoU band width in pixels, or None to skip BIoU.

    Returns:
        ((n_pred_b, n_pred_b_matched, n_gt_b, n_gt_b_matched), (intersection, union)).
    """
    for name, value in (("tolerance_px", tolerance_px), ("dilation_px", dilation_px)):
        if value is not None and not value >= 0:
            raise ValueError(f"{name} must be a non-negative number of pixels, got {value}")
    n_pred, n_gt = int(pred_b.sum()), int(gt_b.sum())
    # Masks and boundaries all lie in this box, so distances computed inside it are exact.
    box = _bbox(pred, gt)
    if box is None:
        return (0, 0, 0, 0), (0, 0)
    pred, gt, pred_b, gt_b = pred[box], gt[box], pred_b[box], gt_b[box]
    dist_to_pred = _distance_to(pred_b) if n_pred else None
    dist_to_gt = _distance_to(gt_b) if n_gt else None

    pred_matched = gt_matched = 0
    if tolerance_px is not None and n_pred and n_gt:
        pred_matched = int(np.count_nonzero(pred_b & _le(dist_to_gt, tolerance_px)))
        gt_matched = int(np.count_nonzero(gt_b & _le(dist_to_pred, tolerance_px)))

    inter = union = 0
    if dilation_px is not None:
        # Inner bands M_d = {x in M : dist(x, contour(M)) <= d}; empty without a contour.
        gt_band = gt & _le(dist_to_gt, dilation_px) if n_gt else np.zeros_like(gt)
        pred_band = pred & _le(dist_to_pred, dilation_px) if n_pred else np.zeros_like(pred)
        inter = int(np.count_nonzero(gt_band & pred_band))
        union = int(np.count_nonzero(gt_band | pred_band))
    return (n_pred, pred_matched, n_gt, gt_matched), (inter, union)


def _f_from_counts(n_pred, pred_matched, n_gt, gt_matched):
    if n_pred == 0 and n_gt == 0:
        return float("nan")
    if n_pred == 0 or n_gt == 0:
        return 0.0
    precision = pred_matched / n_pred
    recall = gt_matched / n_gt
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def _counts(pred_mask, gt_mask, valid, tolerance_px=None, dilation_px=None):
    """:func:`_class_counts` of the masks given to a public function, both restricted to
    ``valid`` (the three checked: 2-D, of one shape)."""
    pred = _as_bool_2d(pred_mask, "pred_mask")
    gt = _as_bool_2d(gt_mask, "gt_mask")
    if pred.shape != gt.shape:
        raise ValueError(f"pred_mask {pred.shape} and gt_mask {gt.shape} differ in shape")
    pred_b, gt_b = mask_boundary(pred, valid), mask_boundary(gt, valid)  # valid checked there
    if valid is not None:
        valid = _as_bool_2d(valid, "valid")
        pred, gt = pred & valid, gt & valid
    return _class_counts(pred, gt, pred_b, gt_b, tolerance_px, dilation_px)


def boundary_precision_recall(pred_mask, gt_mask, tolerance_px, valid=None):
    """Boundary precision and recall of one binary prediction (BF's, module docstring).

    Args:
        pred_mask, gt_mask: (H, W) arrays, non-zero = inside the mask.
        tolerance_px (float): distance tolerance theta in pixels.
        valid: optional (H, W) array, non-zero = evaluated pixel (see :func:`mask_boundary`).

    Returns:
        (precision, recall), floats in [0, 1]; NaN where that boundary is empty.
    """
    (n_pred, pred_matched, n_gt, gt_matched), _ = _counts(pred_mask, gt_mask, valid, tolerance_px)
    precision = pred_matched / n_pred if n_pred else float("nan")
    recall = gt_matched / n_gt if n_gt else float("nan")
    return precision, recall


def boundary_f_score(pred_mask, gt_mask, tolerance_px, valid=None):
    """Boundary F-score (BF) of one binary prediction; arguments as in
    :func:`boundary_precision_recall`.

    Returns:
        float in [0, 1]; 0.0 if one boundary is empty or ``P + R == 0``; NaN if both are empty.
    """
    return _f_from_counts(*_counts(pred_mask, gt_mask, valid, tolerance_px)[0])


def boundary_iou_counts(pred_mask, gt_mask, dilation_px, valid=None):
    """Intersection and union of the inner boundary bands (Boundary IoU, module docstring).

    Args:
        pred_mask, gt_mask: (H, W) arrays, non-zero = inside the mask.
        dilation_px (float): band width d in pixels.
        valid: optional (H, W) array, non-zero = evaluated pixel (see :func:`mask_boundary`).

    Returns:
        (intersection, union), ints: pixels of ``G_d ∩ P_d`` and ``G_d ∪ P_d``.
    """
    return _counts(pred_mask, gt_mask, valid, dilation_px=dilation_px)[1]


class BoundaryEvaluator(DatasetEvaluator):
    """Boundary F-score and Boundary IoU of a dataset (see the module docstring).

    Inputs are those of :class:`detectron2.evaluation.SemSegEvaluator`: an input's ``file_name``
    names the ground truth; an output's ``"sem_seg"`` is a (C, H, W) score tensor at the ground
    truth's resolution, whose argmax over C is the prediction.  Only per-class sums are kept.
    The result is ``{"sem_seg_boundary": {"mBF", "mBIoU", "BF-<class>", "BIoU-<class>"}}`` in
    percent; a class that could not be evaluated is NaN and left out of the means.  Cost: two
    distance transforms per class present in an image, on the bounding box of its two masks.
    """

    def __init__(
        self,
        dataset_name,
        distributed=True,
        output_dir=None,
        *,
        num_classes=None,
        ignore_label=None,
        bf_tolerance=0.0075,
        biou_dilation=0.02,
        ground_truth=None,
    ):
        """
        Args:
            dataset_name (str): registered dataset; its dicts need ``file_name`` and
                ``sem_seg_file_name``.
            distributed (bool): gather all ranks' sums in :meth:`evaluate` and return results
                on the main process only.
            output_dir (str): if given, also write ``sem_seg_boundary_evaluation.json`` there.
            num_classes (int): must match the metadata's ``stuff_classes`` when set, else needed.
            ignore_label (int): overrides the metadata's ``ignore_label`` (default 255).
            bf_tolerance, biou_dilation (float): BF tolerance and BIoU band width (at least
                1 px), fractions of the image diagonal.
            ground_truth: callable ``file_name`` -> (H, W) int64 class ids; None: the dataset's
                :class:`pointrend_seg.data.GroundTruthReader` (labels read as in training).
        """
        self._distributed = distributed
        self._output_dir = output_dir
        check_boundary_options(bf_tolerance, biou_dilation)
        self._bf_tolerance = float(bf_tolerance)
        self._biou_dilation = float(biou_dilation)

        self._ground_truth = ground_truth or GroundTruthReader(dataset_name)

        meta = MetadataCatalog.get(dataset_name)
        self._class_names = dataset_class_names(dataset_name, num_classes)
        self._num_classes = len(self._class_names)
        self._ignore_label = int(meta.get("ignore_label", 255) if ignore_label is None
                                 else ignore_label)
        self.reset()

    def reset(self):
        k = self._num_classes
        self._bf_sum = np.zeros(k, dtype=np.float64)  # sum of per-image F per class
        self._bf_count = np.zeros(k, dtype=np.int64)  # number of per-image F per class
        self._biou_inter = np.zeros(k, dtype=np.int64)  # sum of |G_d ∩ P_d| per class
        self._biou_union = np.zeros(k, dtype=np.int64)  # sum of |G_d ∪ P_d| per class

    def process(self, inputs, outputs):
        for input, output in zip(inputs, outputs):
            pred, gt, valid = _checked_prediction(output, input["file_name"], self._ground_truth,
                                                  self._num_classes, self._ignore_label)
            diagonal = float(np.hypot(*gt.shape))
            tolerance_px = self._bf_tolerance * diagonal
            dilation_px = max(1.0, self._biou_dilation * diagonal)

            present = np.union1d(np.unique(gt[valid]), np.unique(pred[valid]))
            present = present[(present >= 0) & (present < self._num_classes)]
            for c in present:
                gt_c = (gt == c) & valid
                pred_c = (pred == c) & valid
                gt_b = mask_boundary(gt_c, valid)
                pred_b = mask_boundary(pred_c, valid)

                bf_counts, (inter, union) = _class_counts(pred_c, gt_c, pred_b, gt_b,
                                                          tolerance_px, dilation_px)
                f = _f_from_counts(*bf_counts)
                if not np.isnan(f):
                    self._bf_sum[c] += f
                    self._bf_count[c] += 1
                self._biou_inter[c] += inter
                self._biou_union[c] += union

    def evaluate(self):
        """Return ``{"sem_seg_boundary": {...}}`` in percent (None on non-main processes)."""
        stats = {"bf_sum": self._bf_sum, "bf_count": self._bf_count,
                 "biou_inter": self._biou_inter, "biou_union": self._biou_union}
        if self._distributed:
            comm.synchronize()
            gathered = comm.all_gather(stats)
            if not comm.is_main_process():
                return None
            stats = {key: sum(s[key] for s in gathered) for key in stats}

        with np.errstate(divide="ignore", invalid="ignore"):
            bf = np.where(stats["bf_count"] > 0, stats["bf_sum"] / stats["bf_count"], np.nan)
            biou = np.where(
                stats["biou_union"] > 0, stats["biou_inter"] / stats["biou_union"], np.nan
            )
        bf_valid = ~np.isnan(bf)
        biou_valid = ~np.isnan(biou)

        res = OrderedDict()
        res["mBF"] = 100.0 * float(bf[bf_valid].mean()) if bf_valid.any() else float("nan")
        res["mBIoU"] = 100.0 * float(biou[biou_valid].mean()) if biou_valid.any() else float("nan")
        res.update((f"BF-{name}", 100.0 * float(v)) for name, v in zip(self._class_names, bf))
        res.update((f"BIoU-{name}", 100.0 * float(v)) for name, v in zip(self._class_names, biou))

        if self._output_dir:
            write_result_file(os.path.join(self._output_dir, "sem_seg_boundary_evaluation.json"),
                              lambda f: json.dump(res, f, indent=2))
        # Not logged here: Trainer.test logs the mean and a per-class table.
        return OrderedDict({"sem_seg_boundary": res})
