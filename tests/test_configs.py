"""Every YAML in configs/ builds a model that runs, and says what its file name promises."""
import glob
import os

import pytest
import torch

from detectron2.modeling import build_model

import pointrend_seg  # noqa: F401
from pointrend_seg import model_zoo
from pointrend_seg.config import build_config

from conftest import REPO_ROOT

CONFIGS = model_zoo.list_configs()


def test_configs_found_through_the_package_and_the_checkout():
    assert len(CONFIGS) >= 15
    # configs/ of the checkout is the package's config folder (a link), so the README's paths
    # and the shipped configs are the same files.
    in_checkout = sorted(
        os.path.relpath(p, os.path.join(REPO_ROOT, "configs"))
        for p in glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True)
    )
    assert in_checkout == CONFIGS
    assert os.path.samefile(os.path.join(REPO_ROOT, "configs"), model_zoo.CONFIG_DIR)
    with pytest.raises(FileNotFoundError, match="no_such.yaml.*demo/deeplabv3_synthetic.yaml"):
        model_zoo.get_config_file("no_such.yaml")


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_and_runs(name):
    path = model_zoo.get_config_file(name)
    # the folder config's classes are its dataset's (0 until a tool reads it): here given
    cfg = build_config(path, ["MODEL.DEVICE", "cpu"] + ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"] * (
        name.startswith("folder/")))
    model = build_model(cfg).eval()
    name = os.path.basename(path)
    head = model.sem_seg_head
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    assert head.coarse_head.predictor.out_channels == num_classes
    if "pointrend" in name:
        assert type(head).__name__ == "PointRendSegHead"
        assert head.point_head.predictor.out_channels == num_classes
    elif not name.startswith("Base-"):
        assert type(head).__name__ == "BilinearSegHead"
    stride = model.backbone.output_shape()["res5"].stride
    if "os8" in name:
        assert stride == 8
    elif "os16" in name:
        assert stride == 16
    if "R103" in name:
        assert cfg.MODEL.RESNETS.DEPTH == 101 and cfg.MODEL.RESNETS.STEM_TYPE == "deeplab"
    with torch.no_grad():
        out = model([{"image": torch.zeros(3, 40, 56), "height": 45, "width": 60}])
    assert out[0]["sem_seg"].shape == (num_classes, 45, 60)
