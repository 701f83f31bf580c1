"""The demo's promise: a model trained on the synthetic data is far better than any constant
prediction, and tools/demo.py draws its predictions."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog
from detectron2.evaluation import SemSegEvaluator, inference_on_dataset

from pointrend_seg.data import read_label_file
from pointrend_seg.engine import Trainer

from conftest import DEMO_CONFIG, REPO_ROOT

VAL = "synthetic_shapes_sem_seg_val"
# mIoU points (0-100) above the best constant prediction that the trained demo model must reach.
MIN_MARGIN = 25.0


def best_constant_miou(dataset_name, num_classes, ignore_label=255):
    """mIoU (0-100) of predicting one class everywhere, for the best such class."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for d in DatasetCatalog.get(dataset_name):
        label = read_label_file(d["sem_seg_file_name"])
        counts += np.bincount(label[label != ignore_label].ravel(), minlength=num_classes)
    # Predicting c everywhere: IoU_c = |c| / |all|, every other class has IoU 0.
    return 100.0 * counts.max() / counts.sum() / num_classes


@pytest.mark.slow
def test_trained_demo_model_is_far_above_best_constant(trained_demo_model):
    cfg, model = trained_demo_model
    evaluator = SemSegEvaluator(VAL, distributed=False)
    results = inference_on_dataset(model, Trainer.build_test_loader(cfg, VAL), evaluator)
    constant = best_constant_miou(VAL, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    assert 10.0 < constant < 30.0  # background covers most pixels
    assert results["sem_seg"]["mIoU"] >= constant + MIN_MARGIN, (results, constant)


@pytest.mark.slow
def test_demo_tool_writes_prediction_and_ground_truth_overlays(trained_demo_model, tmp_path):
    cfg, _ = trained_demo_model
    weights = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    out = tmp_path / "overlays"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "demo.py"), "--config-file", DEMO_CONFIG,
         "--dataset", VAL, "--num-images", "2", "--output", str(out), "MODEL.WEIGHTS", weights],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(os.listdir(out))
    assert len(files) == 2
    first = DatasetCatalog.get(VAL)[0]
    overlay = np.asarray(Image.open(out / files[0]))
    image = np.asarray(Image.open(first["file_name"]).convert("RGB"))
    assert overlay.shape == (image.shape[0], 2 * image.shape[1], 3)  # prediction | ground truth
    # Both panels are the image with class colours blended in: they differ from the raw image.
    for panel in (overlay[:, : image.shape[1]], overlay[:, image.shape[1] :]):
        assert np.abs(panel.astype(int) - image.astype(int)).mean() > 5
