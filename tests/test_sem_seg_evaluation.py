"""
SegmentationEvaluator: Detectron2's SemSegEvaluator numbers where its versions agree (compared
with the installed one on the same inputs) and an independent computation, classes absent from the ground truth reported as such (describe_miou), ground truth
read with the dataset's label map (GroundTruthReader, as the trainer gives it), bad ground
truth named.
"""
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import SemSegEvaluator

from pointrend_seg.data import BadInputError, GroundTruthReader
from pointrend_seg.data.datasets import register_folder_dataset
from pointrend_seg.evaluation import BoundaryEvaluator, SegmentationEvaluator, describe_miou

from bad_dataset import CLASSES, write_binary_folder

NAMES = ["road", "car", "tree"]


def _register(prefix, tmp_path, labels, suffix="d", **kwargs):
    """A folder dataset of the given label arrays (uint8), images all zero."""
    images, masks = tmp_path / f"img_{suffix}", tmp_path / f"mask_{suffix}"
    images.mkdir()
    masks.mkdir()
    for i, label in enumerate(labels):
        Image.fromarray(np.zeros(label.shape + (3,), np.uint8)).save(images / f"{i}.png")
        Image.fromarray(label).save(masks / f"{i}.png")
    return register_folder_dataset(f"{prefix}_{suffix}", str(images), str(masks),
                                   kwargs.pop("classes", NAMES), **kwargs)


def _scores(pred, num_classes):
    """(C, H, W) scores whose argmax is ``pred``."""
    return torch.nn.functional.one_hot(torch.as_tensor(pred), num_classes).permute(2, 0, 1).float()


def _evaluate(evaluator, name, preds, num_classes):
    evaluator.reset()
    for record, pred in zip(DatasetCatalog.get(name), preds):
        evaluator.process([{"file_name": record["file_name"]}],
                          [{"sem_seg": _scores(pred, num_classes)}])
    return evaluator.evaluate()


def _labels_without_tree(rng):
    gt = rng.integers(0, 2, (2, 8, 10)).astype(np.uint8)  # road and car only ...
    gt[:, 0, :3] = 255  # ... and a few ignored pixels
    return gt


@pytest.mark.parametrize("tree_predicted", [False, True])
def test_absent_class_reported_and_mean_as_detectron2(tmp_path, prefix, tree_predicted):
    rng = np.random.default_rng(0)
    gt = _labels_without_tree(rng)
    preds = np.where(rng.random(gt.shape) < 0.8, gt, 1 - gt).astype(np.int64)
    preds[gt == 255] = 2  # predictions on ignored pixels do not count
    if tree_predicted:
        preds[0, 3, 4] = 2
    name = _register(prefix, tmp_path, list(gt))
    ours = _evaluate(SegmentationEvaluator(name, distributed=False), name, preds, 3)["sem_seg"]
    reference = _evaluate(SemSegEvaluator(name, distributed=False), name, preds, 3)["sem_seg"]
    # Detectron2's numbers where its versions agree (v0.6 and main differ on the mean when a
    # class is predicted without ground truth: main leaves it out, v0.6 counts it as 0).
    keys = ["fwIoU", "mACC", "pACC", "IoU-road", "IoU-car", "ACC-road", "ACC-car"]
    for key in keys + ([] if tree_predicted else ["mIoU"]):
        assert ours[key] == pytest.approx(reference[key], abs=1e-9), key
    assert math.isnan(ours["ACC-tree"]) and math.isnan(reference["ACC-tree"])
    valid = gt != 255
    # Independent check of the mean: IoU of road and car (+ 0 for a predicted tree).
    ious = [((preds == c) & (gt == c) & valid).sum() / (((preds == c) | (gt == c)) & valid).sum()
            for c in (0, 1)]
    if tree_predicted:
        # Counted as 0 in the mean (as Detectron2 v0.6, Cityscapes' scripts, mmsegmentation),
        # and reported as 0 (v0.6 reports NaN).
        assert math.isnan(reference["IoU-tree"]) and ours["IoU-tree"] == 0.0
        assert ours["mIoU"] == pytest.approx(100 * sum(ious) / 3)
        assert describe_miou(ours, NAMES) == (
            f"mIoU = {ours['mIoU']:.2f} over 3 of 3 classes; absent from the ground truth: "
            "tree (predicted: IoU 0 in the mean)"
        )
    else:
        assert math.isnan(ours["IoU-tree"])
        assert ours["mIoU"] == pytest.approx(100 * sum(ious) / 2)
        assert describe_miou(ours, NAMES) == (
            f"mIoU = {ours['mIoU']:.2f} over 2 of 3 classes; absent from the ground truth: "
            "tree (not in the mean)"
        )


def test_all_classes_present_line(tmp_path, prefix):
    gt = np.array([[[0, 1, 2, 2]]], np.uint8)
    name = _register(prefix, tmp_path, list(gt))
    res = _evaluate(SegmentationEvaluator(name, distributed=False), name, gt.astype(np.int64), 3)
    assert describe_miou(res["sem_seg"], NAMES) == "mIoU = 100.00 over 3 of 3 classes"


def test_binary_masks_evaluated_with_the_label_map(tmp_path, prefix, caplog):
    images, masks = write_binary_folder(str(tmp_path / "bin"), 3)
    stored = [np.asarray(Image.open(os.path.join(masks, f"{i:03d}.png"))) for i in range(3)]
    # A model that predicts background everywhere.
    background = [np.zeros(s.shape, np.int64) for s in stored]
    # Without the map, the discs (255) are ignored: a "perfect" score over 1 of 2 classes, and
    # the line and the log say so.
    plain = register_folder_dataset(f"{prefix}_plain", images, masks, CLASSES)
    res = _evaluate(SegmentationEvaluator(plain, distributed=False), plain, background, 2)
    assert res["sem_seg"]["mIoU"] == pytest.approx(100.0)
    assert describe_miou(res["sem_seg"], ["background", "disc"]) == (
        "mIoU = 100.00 over 1 of 2 classes; absent from the ground truth: disc (not in the mean)"
    )
    assert "no ground-truth pixel" in caplog.text and "disc" in caplog.text
    # With the map, the discs are class 1 and background everywhere scores what it is worth.
    mapped = register_folder_dataset(f"{prefix}_mapped", images, masks, CLASSES,
                                     label_map={255: 1})
    ground_truth = GroundTruthReader(mapped, 2)
    res = _evaluate(SegmentationEvaluator(mapped, distributed=False, ground_truth=ground_truth),
                    mapped, background, 2)
    fg = sum(int((s == 255).sum()) for s in stored)
    total = sum(s.size for s in stored)
    assert res["sem_seg"]["IoU-disc"] == 0.0
    assert res["sem_seg"]["IoU-background"] == pytest.approx(100 * (total - fg) / total)
    # The boundary evaluator reads the same mapped ground truth: a perfect disc prediction.
    perfect = [(s == 255).astype(np.int64) for s in stored]
    boundary = _evaluate(BoundaryEvaluator(mapped, distributed=False, ground_truth=ground_truth),
                         mapped, perfect, 2)
    assert boundary["sem_seg_boundary"]["BF-disc"] == pytest.approx(100.0)
    # Built without a reader, the evaluators read the ground truth the same way (the map
    # applied; Detectron2's SemSegEvaluator would read 255 as is).
    default = _evaluate(SegmentationEvaluator(mapped, distributed=False), mapped, background, 2)
    assert default["sem_seg"] == res["sem_seg"]
    default = _evaluate(BoundaryEvaluator(mapped, distributed=False), mapped, perfect, 2)
    assert default["sem_seg_boundary"]["BF-disc"] == pytest.approx(100.0)


def test_ground_truth_outside_the_classes_names_the_file(tmp_path, prefix):
    gt = np.zeros((1, 4, 4), np.uint8)
    gt[0, 1, 1] = 7
    name = _register(prefix, tmp_path, list(gt))
    record = DatasetCatalog.get(name)[0]
    inputs = [{"file_name": record["file_name"]}]
    outputs = [{"sem_seg": _scores(np.zeros((4, 4), np.int64), 3)}]
    # The trainer's reader names the label file, the keys and the values ...
    evaluator = SegmentationEvaluator(name, distributed=False,
                                      ground_truth=GroundTruthReader(name, 3, 255))
    evaluator.reset()
    with pytest.raises(BadInputError, match=r"values \[7\]") as e:
        evaluator.process(inputs, outputs)
    assert record["sem_seg_file_name"] in str(e.value) and "NUM_CLASSES=3" in str(e.value)
    # ... and the evaluator checks any reader's ground truth (Detectron2's would count 7 in a
    # wrong cell of its confusion matrix without a word).
    evaluator = SegmentationEvaluator(name, distributed=False)
    evaluator.reset()
    with pytest.raises(ValueError, match=r"values \[7\] outside \[0, 3\)") as e:
        evaluator.process(inputs, outputs)
    assert record["file_name"] in str(e.value)
    assert MetadataCatalog.get(name).ignore_label == 255


def test_confusion_matrix_files_and_per_class_report(tmp_path, prefix):
    """confusion_matrix.csv: rows = ground truth (sums = the class's evaluated pixels, ignored
    ones left out), columns = prediction; the PNG and the per-class table / bars from it."""
    import csv

    from pointrend_seg.engine import Trainer
    from pointrend_seg.engine.evaluation import report_results
    from pointrend_seg.evaluation import format_per_class_table, per_class_rows

    rng = np.random.default_rng(1)
    gt = rng.integers(0, 3, (3, 12, 14)).astype(np.uint8)
    gt[:, :2, :] = 255
    preds = np.where(rng.random(gt.shape) < 0.7, gt, (gt + 1) % 3).astype(np.int64)
    preds[gt == 255] = 0
    name = _register(prefix, tmp_path, list(gt))
    out = tmp_path / "eval"
    evaluator = SegmentationEvaluator(name, distributed=False, output_dir=str(out))
    res = _evaluate(evaluator, name, preds, 3)
    with open(out / "confusion_matrix.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == ["ground truth \\ prediction"] + NAMES
    counts = np.array([[int(v) for v in row[1:]] for row in table[1:]])
    valid = gt != 255
    for t in range(3):
        assert [row[0] for row in table[1:]][t] == NAMES[t]
        assert counts[t].sum() == ((gt == t) & valid).sum()  # row sums: ground-truth pixels
        for p in range(3):
            assert counts[t, p] == ((gt == t) & (preds == p) & valid).sum()
    assert np.array_equal(evaluator.class_pixels, counts.sum(axis=1))
    picture = Image.open(out / "confusion_matrix.png")
    assert picture.size[0] >= 300 and picture.size[1] >= 300
    # The IoU of the table is the evaluator's, the pixel share the CSV's.
    rows = per_class_rows(res["sem_seg"], NAMES, evaluator.class_pixels)
    for row, t in zip(rows, range(3)):
        assert row["IoU"] == pytest.approx(res["sem_seg"][f"IoU-{NAMES[t]}"])
        assert row["share"] == pytest.approx(100 * counts[t].sum() / counts.sum())
        assert math.isnan(row["BF"])
    text = format_per_class_table(rows)
    assert text.splitlines()[0].split() == ["class", "IoU", "acc", "boundary", "F", "boundary",
                                            "IoU", "pixels", "%"]
    assert f"{rows[1]['IoU']:.2f}" in text.splitlines()[2] and text.splitlines()[2].split()[0] == "car"
    # Trainer.test's report: bars next to the matrix.
    evaluators = Trainer.build_evaluator(_eval_cfg(name), name, output_folder=str(tmp_path / "t"))
    evaluators.reset()
    for record, pred in zip(DatasetCatalog.get(name), preds):
        evaluators.process([{"file_name": record["file_name"]}], [{"sem_seg": _scores(pred, 3)}])
    results = evaluators.evaluate()
    report_results(name, results, evaluators)
    for f in ("confusion_matrix.csv", "confusion_matrix.png", "per_class.png"):
        assert os.path.getsize(tmp_path / "t" / f) > 0


def _eval_cfg(name):
    from conftest import demo_config

    return demo_config("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3", "DATASETS.TEST", f"('{name}',)")
