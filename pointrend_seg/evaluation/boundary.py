"""Boundary-quality metrics for semantic segmentation.

Region metrics such as mIoU are dominated by the interior of large segments and barely change
when a model gets object contours wrong, which is exactly what PointRend is meant to fix.  This
module measures contour quality with two metrics and wraps them as a Detectron2
:class:`~detectron2.evaluation.DatasetEvaluator` (:class:`BoundaryEvaluator`) that consumes
the same inputs as :class:`~detectron2.evaluation.SemSegEvaluator` and can run next to it
inside :class:`~detectron2.evaluation.DatasetEvaluators`.

Conventions shared by both metrics
----------------------------------
* All masks are 2-D boolean arrays of shape (H, W) in image pixels; distances are Euclidean
  distances between pixel centres, in pixels.
* **Boundary (contour) pixels** of a binary mask ``M`` (:func:`mask_boundary`): pixels of ``M``
  having at least one 4-neighbour that is a *valid* pixel outside ``M``.  Neighbours beyond the
  image border and neighbours in the ignore region are "don't care": they never turn a pixel
  into a boundary pixel.  So the image border is not a boundary, and neither is the edge of an
  ignore region.
* **Ignore label**: pixels whose ground truth equals the ignore label are invalid.  Both the
  ground-truth and the predicted mask are intersected with the valid pixels *before* their
  boundaries are computed, so whatever is predicted inside the ignore region has no effect on
  any number (not on masks, not on boundaries, not on bands).

Boundary F-score (BF)
---------------------
Csurka, Larlus and Perronnin, "What is a good evaluation measure for semantic segmentation?",
BMVC 2013, used as "BF" in Badrinarayanan, Kendall and Cipolla, "SegNet", TPAMI 2017.
For one image and one class ``c`` let ``B_p`` and ``B_g`` be the boundary pixels of the
predicted and ground-truth masks of ``c`` and ``theta`` the distance tolerance in pixels
(``BoundaryEvaluator`` uses ``theta = bf_tolerance * sqrt(H**2 + W**2)``, 0.75 % of the image
diagonal by default, as in SegNet)::

    precision = |{x in B_p : dist(x, B_g) <= theta}| / |B_p|
    recall    = |{y in B_g : dist(y, B_p) <= theta}| / |B_g|
    F         = 2 * precision * recall / (precision + recall)       (0 if both are 0)

Edge cases: if both ``B_p`` and ``B_g`` are empty the score is undefined (NaN is returned and the
evaluator skips the pair); if exactly one of them is empty ``F = 0``.  The per-class BF of a
dataset is the mean of the per-image F over the images where ``c`` occurs (in the valid pixels)
in the ground truth or in the prediction, skipping the undefined pairs; ``mBF`` is the mean of the
per-class BF over the classes that got at least one defined per-image score.

Boundary IoU (BIoU)
-------------------
Cheng, Girshick, Dollar, Berg and Kirillov, "Boundary IoU: Improving Object-Centric Image
Segmentation Evaluation", CVPR 2021.  For a mask ``M`` with contour ``C(M)`` (boundary pixels
as defined above) the inner band of width ``d`` is
``M_d = {x in M : dist(x, C(M)) <= d}`` (``M_d`` already includes the intersection with ``M``,
i.e. it is the paper's ``G_d ∩ G``).  With ``G`` the ground-truth and ``P`` the predicted mask::

    BIoU = |G_d ∩ P_d| / |G_d ∪ P_d|

``BoundaryEvaluator`` uses ``d = max(1, biou_dilation * sqrt(H**2 + W**2))`` (2 % of the
diagonal by default, as in the paper) and accumulates the intersections and unions per class
over the whole dataset before dividing (a dataset-level per-class BIoU, like dataset-level IoU);
classes whose accumulated union is 0 are not evaluated, ``mBIoU`` is the mean over the others.
Differences from the paper's reference code, which approximates the band by repeated 3x3
erosion (a chessboard distance) and treats the image border as contour: here the band uses the
exact Euclidean distance and, consistently with BF, the image border is not a contour.

Distances come from ``cv2.distanceTransform`` with ``DIST_L2``/``DIST_MASK_PRECISE`` (exact
Euclidean distance).  Squared distances between pixel centres are integers, which lets
``dist <= theta`` be decided exactly despite the float32 output (for distances below about
2000 px, far beyond any useful tolerance).  Each class of each image needs one distance
transform per boundary map, computed on the bounding box of the two masks and shared by both
metrics.
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
    """The two widths of :class:`BoundaryEvaluator`, fractions of the image diagonal: numbers
    >= 0, else one ConfigError naming the keys (before: a negative BF tolerance was a ValueError
    traceback in the first image's evaluation, a negative Boundary IoU width silently 1 px)."""
    check_arguments("BoundaryEvaluator", [
        (f"TEST.BOUNDARY_EVAL.{key}", name, value,
         is_number(value) and math.isfinite(value) and value >= 0,
         "a number >= 0 (a fraction of the image diagonal)")
        for key, name, value in (("BF_TOLERANCE", "bf_tolerance", bf_tolerance),
                                 ("BIOU_DILATION", "biou_dilation", biou_dilation))])


# ----------------------------------------------------------------------------------------------
# Pure functions
# ----------------------------------------------------------------------------------------------
def _as_bool_2d(array, name):
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {array.shape}")
    return array.astype(bool, copy=False)


def mask_boundary(mask, valid=None):
    """Boundary (contour) pixels of a binary mask.

    A pixel is a boundary pixel iff it belongs to the mask (and is valid) and at least one of its
    4-neighbours is a valid pixel outside the mask.  Neighbours beyond the image border and
    invalid neighbours never make a boundary, so a mask covering the whole image has no
    boundary.

    Args:
        mask: (H, W) array, non-zero = inside the mask.
        valid: optional (H, W) array, non-zero = pixel takes part in the evaluation (ground truth
            is not the ignore label).  ``None`` means every pixel is valid.

    Returns:
        (H, W) bool array, True on boundary pixels (always a subset of ``mask & valid``).
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

    The true squared distance between two pixel centres is an integer ``n``, so ``dist <= r``
    iff ``n <= floor(r**2)`` iff ``dist <= sqrt(floor(r**2) + 0.5)``.  The half-integer margin is
    far larger than the float32 error of ``dist`` for distances below ~2000 px.
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
    """Boundary precision and recall of one binary prediction (Csurka et al. 2013).

    Args:
        pred_mask, gt_mask: (H, W) arrays, non-zero = inside the mask.
        tolerance_px (float): distance tolerance theta in pixels; a boundary pixel is matched if
            its Euclidean distance to the other boundary is <= theta.
        valid: optional (H, W) array, non-zero = pixel is evaluated (see :func:`mask_boundary`).

    Returns:
        (precision, recall) as floats in [0, 1]: the fraction of predicted boundary pixels within
        theta of the GT boundary, and the fraction of GT boundary pixels within theta of the
        predicted boundary.  A ratio with an empty denominator (no boundary) is NaN.
    """
    (n_pred, pred_matched, n_gt, gt_matched), _ = _counts(pred_mask, gt_mask, valid, tolerance_px)
    precision = pred_matched / n_pred if n_pred else float("nan")
    recall = gt_matched / n_gt if n_gt else float("nan")
    return precision, recall


def boundary_f_score(pred_mask, gt_mask, tolerance_px, valid=None):
    """Boundary F1 score of one binary prediction (BF of Csurka et al. 2013 / SegNet).

    Args:
        pred_mask, gt_mask: (H, W) arrays, non-zero = inside the mask.
        tolerance_px (float): distance tolerance theta in pixels (see
            :func:`boundary_precision_recall`).
        valid: optional (H, W) array, non-zero = pixel is evaluated; both masks are restricted
            to it and invalid pixels never create a boundary.

    Returns:
        float in [0, 1]: ``2PR / (P + R)``; 0.0 if exactly one of the two boundaries is empty or
        ``P + R == 0``; NaN if both boundaries are empty (undefined, skipped by the evaluator).
    """
    return _f_from_counts(*_counts(pred_mask, gt_mask, valid, tolerance_px)[0])


def boundary_iou_counts(pred_mask, gt_mask, dilation_px, valid=None):
    """Intersection and union of the inner boundary bands (Boundary IoU, Cheng et al. 2021).

    Args:
        pred_mask, gt_mask: (H, W) arrays, non-zero = inside the mask.
        dilation_px (float): band width d in pixels; the band of a mask M is
            ``{x in M : dist(x, contour(M)) <= d}`` (Euclidean distance, contour as in
            :func:`mask_boundary`).
        valid: optional (H, W) array, non-zero = pixel is evaluated; both masks are restricted
            to it and invalid pixels never create a contour.

    Returns:
        (intersection, union) as ints, numbers of pixels of ``G_d ∩ P_d`` and ``G_d ∪ P_d``.
        Boundary IoU is ``intersection / union`` (undefined when union is 0).
    """
    return _counts(pred_mask, gt_mask, valid, dilation_px=dilation_px)[1]


# ----------------------------------------------------------------------------------------------
# Evaluator
# ----------------------------------------------------------------------------------------------
class BoundaryEvaluator(DatasetEvaluator):
    """Boundary F-score and Boundary IoU for semantic segmentation (see the module docstring).

    Inputs are those of :class:`detectron2.evaluation.SemSegEvaluator`: each input dict has a
    ``file_name`` whose ground truth (contiguous class ids) ``ground_truth`` reads, each output
    dict has ``"sem_seg"``, a (C, H, W) tensor of scores at the ground-truth resolution; the
    prediction is its argmax over C.

    Only per-class sums are kept (no images), gathered across processes in :meth:`evaluate`.
    The result is ``{"sem_seg_boundary": {"mBF", "mBIoU", "BF-<class>", "BIoU-<class>"}}`` in
    percent; classes that could not be evaluated get NaN and are left out of the means.

    Cost: two distance transforms per class present in an image, each on the bounding box of
    that class's GT and predicted masks (about 0.1 s per transform on a full 1024x2048 box on
    one CPU core, so from well under a second to a few seconds per Cityscapes-sized image).
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
            dataset_name (str): registered dataset to evaluate; its dicts must have
                ``file_name`` and ``sem_seg_file_name``.
            distributed (bool): if True, gather the statistics of all ranks in :meth:`evaluate`
                and return results on the main process only.
            output_dir (str): if given, the results are also written to
                ``<output_dir>/sem_seg_boundary_evaluation.json``.
            num_classes (int): number of classes; must match ``stuff_classes`` of the metadata
                when that is set, and is required when it is not.
            ignore_label (int): overrides the metadata's ``ignore_label`` (default 255).
            bf_tolerance (float): BF distance tolerance as a fraction of the image diagonal.
            biou_dilation (float): Boundary IoU band width as a fraction of the image diagonal
                (at least 1 px).
            ground_truth: callable ``file_name`` -> (H, W) int64 class ids; None:
                :class:`pointrend_seg.data.GroundTruthReader` of the dataset (its label map,
                EXIF orientation, as training reads the labels).
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
