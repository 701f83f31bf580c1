"""Tests for pointrend_seg.evaluation.boundary (Boundary F-score and Boundary IoU).

The expected numbers are derived by hand in the comments; masks are small and axis-aligned so
that every distance is easy to enumerate.
"""

import json
import math
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluators, SemSegEvaluator

from pointrend_seg.evaluation import BoundaryEvaluator
from pointrend_seg.evaluation import boundary as B


def rect(shape, r0, r1, c0, c1):
    """Bool mask of ``shape`` that is True on rows r0..r1 and columns c0..c1 (inclusive)."""
    m = np.zeros(shape, dtype=bool)
    m[r0 : r1 + 1, c0 : c1 + 1] = True
    return m


# --------------------------------------------------------------------------------------------
# mask_boundary
# --------------------------------------------------------------------------------------------
def test_mask_boundary_ring_border_and_ignore():
    # 3x3 square in a 7x7 image: the 8 outer pixels are boundary, the centre is not.
    sq = rect((7, 7), 2, 4, 2, 4)
    b = B.mask_boundary(sq)
    assert b.dtype == bool and b.shape == (7, 7)
    assert b.sum() == 8 and not b[3, 3]
    assert np.array_equal(b, sq & ~rect((7, 7), 3, 3, 3, 3))

    # The image border is not a boundary: a full mask has none, a top band only its bottom row.
    assert not B.mask_boundary(np.ones((5, 6), bool)).any()
    band = rect((7, 7), 0, 2, 0, 6)
    assert np.array_equal(B.mask_boundary(band), rect((7, 7), 2, 2, 0, 6))

    # Invalid (ignored) neighbours behave like the border: no boundary towards them ...
    valid = ~rect((7, 7), 3, 6, 0, 6)
    assert not B.mask_boundary(band, valid).any()
    # ... and invalid pixels are never boundary pixels themselves.
    valid2 = ~rect((7, 7), 2, 2, 0, 3)
    assert np.array_equal(B.mask_boundary(band, valid2), rect((7, 7), 2, 2, 4, 6))


# --------------------------------------------------------------------------------------------
# Perfect prediction and edge cases
# --------------------------------------------------------------------------------------------
def test_perfect_prediction_scores_one():
    gt = rect((50, 50), 10, 29, 10, 29)
    for tol in (0.0, 0.5, 3.0):
        assert B.boundary_f_score(gt.copy(), gt, tol) == 1.0
        assert B.boundary_precision_recall(gt.copy(), gt, tol) == (1.0, 1.0)
    inter, union = B.boundary_iou_counts(gt.copy(), gt, 2)
    # 20x20 square, band of the 3 outer rings: 400 - 14*14 = 204 pixels.
    assert inter == union == 204


def test_edge_cases_empty_boundaries():
    empty = np.zeros((20, 20), bool)
    full = np.ones((20, 20), bool)
    sq = rect((20, 20), 5, 9, 5, 9)
    # Both boundaries empty (absent class, or class covering the whole image): undefined.
    assert math.isnan(B.boundary_f_score(empty, empty, 2.0))
    assert math.isnan(B.boundary_f_score(full, full, 2.0))
    # Exactly one boundary empty: F = 0 (false-positive blob / missed object).
    assert B.boundary_f_score(sq, empty, 2.0) == 0.0
    assert B.boundary_f_score(empty, sq, 2.0) == 0.0
    p, r = B.boundary_precision_recall(sq, empty, 2.0)
    assert p == 0.0 and math.isnan(r)
    # Disjoint far-apart squares: P = R = 0 -> F = 0.
    assert B.boundary_f_score(sq, rect((20, 20), 14, 18, 14, 18), 1.0) == 0.0
    assert B.boundary_iou_counts(empty, empty, 3) == (0, 0)
    # Band of a 5x5 square with d = 1: the two outer rings (16 + 8 px, only the centre is at
    # distance 2); nothing predicted.
    assert B.boundary_iou_counts(empty, sq, 1) == (0, 24)


# --------------------------------------------------------------------------------------------
# Boundary F-score on a shifted square
# --------------------------------------------------------------------------------------------
# GT: rows 10..29, cols 10..29 (20x20) in a 50x50 image.  Prediction: the same square shifted
# right by 3 columns (cols 13..32).  Each boundary is the 1-px ring: 4*20 - 4 = 76 pixels:
# top row (20 px), bottom row (20 px), left column rows 11..28 (18 px), right column (18 px).
#
# Distance of each predicted boundary pixel to the GT ring:
#   top/bottom rows, cols 13..29: 0 (on the GT top/bottom row)       -> 17 + 17 px
#   top/bottom rows, cols 30,31,32: 1, 2, 3 (to GT corner col 29)    ->  3 +  3 px
#   left column c=13, row r: min(3 (GT left col), r-10, 29-r)
#       -> r=11,28: 1; r=12,27: 2; r=13..26: 3                       -> 18 px
#   right column c=32: 3 (GT right column, same row)                 -> 18 px
# So the number of predicted boundary pixels within theta is
#   theta < 1:      34  (only the overlapping parts of the rows perpendicular to the shift...
#                        i.e. the edges parallel to the shift; the vertical edges are all missed)
#   2 <= theta < 3: 34 + 2*2 (cols 30,31) + 4 (left column rows 11,12,27,28) = 42
#   theta >= 3:     76
# The configuration is symmetric (a shift by -3 maps one onto the other), so recall equals
# precision in every regime and F = precision.
SHAPE = (50, 50)
GT_SQ = rect(SHAPE, 10, 29, 10, 29)
PRED_SQ = rect(SHAPE, 10, 29, 13, 32)


@pytest.mark.parametrize(
    "tol, matched",
    [(0.0, 34), (0.5, 34), (0.99, 34), (2.0, 42), (2.5, 42), (2.99, 42), (3.0, 76), (10.0, 76)],
)
def test_bf_shifted_square_exact(tol, matched):
    p, r = B.boundary_precision_recall(PRED_SQ, GT_SQ, tol)
    assert p == matched / 76
    assert r == matched / 76
    assert B.boundary_f_score(PRED_SQ, GT_SQ, tol) == pytest.approx(matched / 76, rel=1e-12)


def test_bf_tolerance_between_one_and_two():
    # 1 <= theta < 2: rows give 34 + 2*1 (col 30 at distance 1), left column rows 11 and 28.
    p, r = B.boundary_precision_recall(PRED_SQ, GT_SQ, 1.5)
    assert p == r == 38 / 76


def test_bf_asymmetric_extra_blob():
    # Prediction = GT square + a separate 3x3 blob (8 boundary pixels, far from the GT).
    # precision = 76 / 84, recall = 1, F = 2 * 76 / (84 + 76) = 152 / 160 = 0.95.
    pred = GT_SQ | rect(SHAPE, 40, 42, 40, 42)
    p, r = B.boundary_precision_recall(pred, GT_SQ, 2.0)
    assert p == 76 / 84 and r == 1.0
    assert B.boundary_f_score(pred, GT_SQ, 2.0) == pytest.approx(0.95, rel=1e-12)
    # Swapping roles swaps precision and recall, F is unchanged.
    assert B.boundary_precision_recall(GT_SQ, pred, 2.0) == (1.0, 76 / 84)


def test_bf_diagonal_distance_is_euclidean():
    # 1-px object at (10, 10) vs (13, 14): distance exactly 5 (3-4-5 triangle); a single-pixel
    # mask is its own boundary.
    a = rect((30, 30), 10, 10, 10, 10)
    b = rect((30, 30), 13, 13, 14, 14)
    assert B.boundary_f_score(a, b, 4.99) == 0.0
    assert B.boundary_f_score(a, b, 5.0) == 1.0
    # sqrt(2) diagonal neighbour: within 1.42, not within 1.41.
    c = rect((30, 30), 11, 11, 11, 11)
    assert B.boundary_f_score(a, c, 1.41) == 0.0
    assert B.boundary_f_score(a, c, 1.42) == 1.0


# --------------------------------------------------------------------------------------------
# Boundary IoU on a shifted rectangle
# --------------------------------------------------------------------------------------------
# For an axis-aligned rectangle the distance of an inside pixel to the contour ring is its
# distance to the nearest side, so the band of width d is the outer floor(d)+1 rings.
# GT rows 10..29, cols 10..29; band with d = 2 (3 rings) has 400 - 14*14 = 204 pixels; the
# prediction shifted right by s columns has the same count.
#   s = 4: rows 10..12 and 27..29 (6 rows) are fully in both bands over the 16 shared columns
#          14..29 -> 96; in rows 13..26 the GT band has cols {10,11,12,27,28,29}, the
#          prediction band cols {14,15,16,31,32,33}: no overlap.  I = 96, U = 408 - 96 = 312.
#   s = 1: 6 rows x 19 shared cols (11..29) = 114; rows 13..26: GT {10,11,12,27,28,29} vs
#          prediction {11,12,13,28,29,30} share {11,12,28,29} -> 14 * 4 = 56.
#          I = 170, U = 408 - 170 = 238 (BIoU = 5/7).
@pytest.mark.parametrize(
    "shift, d, inter, union",
    [(4, 2, 96, 312), (4, 2.9, 96, 312), (1, 2, 170, 238), (0, 2, 204, 204)],
)
def test_biou_shifted_rectangle_exact(shift, d, inter, union):
    pred = rect(SHAPE, 10, 29, 10 + shift, 29 + shift)
    assert B.boundary_iou_counts(pred, GT_SQ, d) == (inter, union)
    assert B.boundary_iou_counts(GT_SQ, pred, d) == (inter, union)


def test_biou_band_width_one():
    # d = 1: 2 rings -> 400 - 16*16 = 144 pixels each.  Shift by 4: 4 rows x 16 cols = 64 in
    # the top/bottom rings, rows 12..27 GT cols {10,11,28,29} vs pred {14,15,32,33}: none.
    pred = rect(SHAPE, 10, 29, 14, 33)
    assert B.boundary_iou_counts(pred, GT_SQ, 1) == (64, 288 - 64)


# --------------------------------------------------------------------------------------------
# Ignore region
# --------------------------------------------------------------------------------------------
def _ignore_case():
    """GT: class-1 rectangle touching an ignore strip; prediction differs only in the strip."""
    shape = (30, 30)
    valid = ~rect(shape, 0, 29, 20, 29)  # columns 20..29 are ignored
    gt = rect(shape, 8, 21, 8, 19)  # right side (col 19) borders the ignore strip
    pred = gt | rect(shape, 0, 29, 20, 29)  # class 1 extends into the ignore strip ...
    pred[2:5, 22:25] = False  # ... with a hole in it
    return pred, gt, valid


def test_errors_only_in_ignore_region_give_perfect_scores():
    pred, gt, valid = _ignore_case()
    for tol in (0.0, 1.0):
        assert B.boundary_f_score(pred, gt, tol, valid=valid) == 1.0
    inter, union = B.boundary_iou_counts(pred, gt, 2, valid=valid)
    assert inter == union > 0
    # The same for the complementary (background) class.
    assert B.boundary_f_score(~pred, ~gt, 0.0, valid=valid) == 1.0
    inter, union = B.boundary_iou_counts(~pred, ~gt, 2, valid=valid)
    assert inter == union > 0
    # Control: without the ignore mask the same prediction is not perfect.
    assert B.boundary_f_score(pred, gt, 1.0) < 1.0
    inter, union = B.boundary_iou_counts(pred, gt, 2)
    assert inter < union


def test_ignore_region_adds_no_boundary_to_gt():
    # If the edge of the ignore strip counted as GT contour, the GT would have 12 extra
    # boundary pixels (column 19, rows 9..20) that a prediction running into the strip cannot
    # match.  Rows 8 and 21 of column 19 are boundary anyway (top and bottom edges).
    pred, gt, valid = _ignore_case()
    gt_b = B.mask_boundary(gt, valid)
    assert not gt_b[9:21, 19].any() and gt_b[8, 19] and gt_b[21, 19]
    assert gt_b.sum() == 12 + 12 + 12  # top row, bottom row, left column rows 9..20


# --------------------------------------------------------------------------------------------
# Evaluator end to end
# --------------------------------------------------------------------------------------------
CLASSES = ["bg", "box", "disk", "unused"]


def _disk(shape, cy, cx, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def _make_images():
    """Two (gt, pred) label maps; 255 = ignore in GT."""
    # Image A, 40x50: box shifted by 2 px, a false-positive "disk" blob next to the ignored
    # strip (columns 45..49), and "unused" predicted only inside that strip, so "unused" must
    # never be evaluated.  The strip's upper half is predicted "bg": those pixels lie within the
    # band of the "bg" contour around the blob and must not enter the Boundary IoU.
    gt_a = np.zeros((40, 50), np.uint8)
    gt_a[10:30, 10:30] = 1
    gt_a[:, 45:] = 255
    pred_a = np.zeros((40, 50), np.int64)
    pred_a[10:30, 12:32] = 1
    pred_a[2:6, 40:44] = 2
    pred_a[20:, 45:] = 3
    # Image B, 30x30: disk of radius 8 predicted with radius 7; "box" predicted only inside the
    # ignored top rows, so "box" is not present in image B.
    gt_b = np.zeros((30, 30), np.uint8)
    gt_b[_disk((30, 30), 15, 15, 8)] = 2
    gt_b[:3, :] = 255
    pred_b = np.zeros((30, 30), np.int64)
    pred_b[_disk((30, 30), 15, 15, 7)] = 2
    pred_b[:3, :] = 1
    return [(gt_a, pred_a), (gt_b, pred_b)]


@pytest.fixture
def tiny_dataset(tmp_path):
    name = f"test_boundary_{uuid.uuid4().hex}"
    records = []
    preds = {}
    for i, (gt, pred) in enumerate(_make_images()):
        gt_path = tmp_path / f"gt_{i}.png"
        Image.fromarray(gt).save(gt_path)
        file_name = str(tmp_path / f"img_{i}.jpg")  # never opened by the evaluators
        records.append(
            {
                "file_name": file_name,
                "sem_seg_file_name": str(gt_path),
                "height": gt.shape[0],
                "width": gt.shape[1],
            }
        )
        preds[file_name] = (gt, pred)
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(stuff_classes=list(CLASSES), ignore_label=255)
    try:
        yield name, records, preds
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _scores(pred):
    """One-hot (C, H, W) float scores whose argmax is ``pred``."""
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(pred), len(CLASSES))
    return one_hot.permute(2, 0, 1).float()


def _feed(evaluator, records, preds):
    evaluator.reset()
    for rec in records:
        pred = preds[rec["file_name"]][1]
        evaluator.process([{"file_name": rec["file_name"]}], [{"sem_seg": _scores(pred)}])


def _expected(records, preds, bf_tolerance, biou_dilation):
    """Per-class BF and BIoU (fractions) computed with the pure functions."""
    f_scores = {c: [] for c in range(len(CLASSES))}
    inter = np.zeros(len(CLASSES))
    union = np.zeros(len(CLASSES))
    for rec in records:
        gt, pred = preds[rec["file_name"]]
        valid = gt != 255
        diag = math.hypot(*gt.shape)
        for c in range(len(CLASSES)):
            g, p = gt == c, pred == c
            if not ((g & valid).any() or (p & valid).any()):
                continue
            f = B.boundary_f_score(p, g, bf_tolerance * diag, valid=valid)
            if not math.isnan(f):
                f_scores[c].append(f)
            i, u = B.boundary_iou_counts(p, g, max(1.0, biou_dilation * diag), valid=valid)
            inter[c] += i
            union[c] += u
    bf = {c: (np.mean(v) if v else float("nan")) for c, v in f_scores.items()}
    biou = {c: (inter[c] / union[c] if union[c] else float("nan")) for c in range(len(CLASSES))}
    return bf, biou, f_scores


@pytest.mark.parametrize("bf_tolerance, biou_dilation", [(0.0075, 0.02), (0.05, 0.06)])
def test_evaluator_matches_pure_functions(tiny_dataset, tmp_path, bf_tolerance, biou_dilation):
    name, records, preds = tiny_dataset
    out_dir = tmp_path / "out"
    ev = BoundaryEvaluator(
        name,
        distributed=True,
        output_dir=str(out_dir),
        bf_tolerance=bf_tolerance,
        biou_dilation=biou_dilation,
    )
    _feed(ev, records, preds)
    res = ev.evaluate()["sem_seg_boundary"]
    bf, biou, f_scores = _expected(records, preds, bf_tolerance, biou_dilation)

    # Presence bookkeeping: "box" only in image A, "disk" in A (false-positive blob, F = 0)
    # and B, "unused" only predicted inside ignore regions -> never evaluated.
    assert len(f_scores[0]) == 2 and len(f_scores[1]) == 1 and len(f_scores[2]) == 2
    assert f_scores[2][0] == 0.0 and f_scores[3] == []

    for c, cname in enumerate(CLASSES[:3]):
        assert res[f"BF-{cname}"] == pytest.approx(100 * bf[c], rel=1e-12)
        assert res[f"BIoU-{cname}"] == pytest.approx(100 * biou[c], rel=1e-12)
    assert math.isnan(res["BF-unused"]) and math.isnan(res["BIoU-unused"])
    assert res["mBF"] == pytest.approx(100 * np.mean([bf[0], bf[1], bf[2]]), rel=1e-12)
    assert res["mBIoU"] == pytest.approx(100 * np.mean([biou[0], biou[1], biou[2]]), rel=1e-12)
    assert 0 < res["mBF"] < 100 and 0 < res["mBIoU"] < 100

    saved = json.loads((out_dir / "sem_seg_boundary_evaluation.json").read_text())
    assert saved["mBF"] == pytest.approx(res["mBF"])


def test_evaluator_box_class_hand_value(tiny_dataset):
    # "box" occurs only in image A (40x50, diagonal 64.03): a 20x20 square shifted by 2 px.
    # With bf_tolerance 0.0075 theta = 0.48 px < 1, so by the shifted-square argument above
    # (shift 2 instead of 3) the matched pixels are the shared parts of the top and bottom
    # rows: 2 * 18 = 36 of 76 -> BF = 36/76.
    # With biou_dilation 0.02, d = 1.28 -> 2 rings of 144 px each; shared columns 12..29:
    # 4 rows * 18 = 72 in the top/bottom rings, rows 12..27: GT {10,11,28,29} vs prediction
    # {12,13,30,31} share nothing -> BIoU = 72 / (288 - 72) = 1/3.
    name, records, preds = tiny_dataset
    ev = BoundaryEvaluator(name, distributed=False)
    _feed(ev, records, preds)
    res = ev.evaluate()["sem_seg_boundary"]
    assert res["BF-box"] == pytest.approx(100 * 36 / 76, rel=1e-12)
    assert res["BIoU-box"] == pytest.approx(100 / 3, rel=1e-12)


def test_evaluator_perfect_predictions(tiny_dataset):
    name, records, preds = tiny_dataset
    ev = BoundaryEvaluator(name)
    ev.reset()
    for rec in records:
        gt = preds[rec["file_name"]][0].astype(np.int64)
        checkerboard = 3 * (np.indices(gt.shape).sum(axis=0) % 2)  # classes 0 and 3
        pred = np.where(gt == 255, checkerboard, gt)  # garbage only inside the ignore region
        ev.process([{"file_name": rec["file_name"]}], [{"sem_seg": _scores(pred)}])
    res = ev.evaluate()["sem_seg_boundary"]
    assert res["mBF"] == 100.0 and res["mBIoU"] == 100.0
    assert math.isnan(res["BF-unused"]) and math.isnan(res["BIoU-unused"])


def test_evaluator_composes_with_sem_seg_evaluator(tiny_dataset):
    name, records, preds = tiny_dataset
    alone = BoundaryEvaluator(name)
    _feed(alone, records, preds)
    expected = alone.evaluate()["sem_seg_boundary"]

    evaluators = DatasetEvaluators([SemSegEvaluator(name), BoundaryEvaluator(name)])
    _feed(evaluators, records, preds)
    results = evaluators.evaluate()
    assert set(results) == {"sem_seg", "sem_seg_boundary"}
    assert "mIoU" in results["sem_seg"] and "IoU-box" in results["sem_seg"]
    assert results["sem_seg_boundary"].keys() == expected.keys()
    for k, v in expected.items():
        assert results["sem_seg_boundary"][k] == pytest.approx(v, nan_ok=True)


def test_evaluate_sums_gathered_statistics(tiny_dataset, monkeypatch):
    """Rank 0 and rank 1 each process one image; the gathered result equals one process that
    saw both images, and non-main ranks return None."""
    name, records, preds = tiny_dataset
    kw = dict(bf_tolerance=0.05)  # tolerance ~2-3 px so that the disk scores F > 0 in image B
    single = BoundaryEvaluator(name, distributed=False, **kw)
    _feed(single, records, preds)
    expected = single.evaluate()["sem_seg_boundary"]

    rank0, rank1 = BoundaryEvaluator(name, **kw), BoundaryEvaluator(name, **kw)
    _feed(rank0, records[:1], preds)
    _feed(rank1, records[1:], preds)

    payloads = []
    monkeypatch.setattr(B.comm, "synchronize", lambda: None)
    monkeypatch.setattr(B.comm, "all_gather", lambda data: payloads.append(data) or [data])
    monkeypatch.setattr(B.comm, "is_main_process", lambda: False)
    assert rank1.evaluate() is None
    assert len(payloads) == 1  # the statistics of rank 1

    monkeypatch.setattr(B.comm, "all_gather", lambda data: [data, payloads[0]])
    monkeypatch.setattr(B.comm, "is_main_process", lambda: True)
    merged = rank0.evaluate()["sem_seg_boundary"]
    assert merged.keys() == expected.keys()
    for k, v in expected.items():
        assert merged[k] == pytest.approx(v, rel=1e-12, nan_ok=True)
    # Rank 0 alone would give a different answer (the gather is really used).
    own = BoundaryEvaluator(name, distributed=False, **kw)
    _feed(own, records[:1], preds)
    assert own.evaluate()["sem_seg_boundary"]["BF-disk"] == 0.0 < expected["BF-disk"]


def test_evaluator_rejects_bad_inputs(tiny_dataset):
    name, records, preds = tiny_dataset
    ev = BoundaryEvaluator(name)
    rec = records[0]
    wrong_size = torch.zeros(len(CLASSES), 5, 5)
    with pytest.raises(ValueError):
        ev.process([{"file_name": rec["file_name"]}], [{"sem_seg": wrong_size}])
    with pytest.raises(ValueError):
        BoundaryEvaluator(name, num_classes=7)
