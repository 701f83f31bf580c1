"""Config validation: every inconsistency is a ValueError naming the keys and their values."""
import logging

import pytest
import torch

from detectron2.modeling import build_model

import pointrend_seg  # noqa: F401
from pointrend_seg.config import ConfigError, build_config
from pointrend_seg.engine import Trainer, adapt_norm_to_world_size, check_dataset_config

from conftest import DEMO_CONFIG, demo_config


def _build_error(*opts, **extra_keys):
    cfg = demo_config(*opts)
    for key, value in extra_keys.items():
        node = cfg
        *path, name = key.split(".")
        for p in path:
            node = node[p]
        node[name] = value
    with pytest.raises(ValueError) as info:
        build_model(cfg)
    return str(info.value)


def test_point_head_classes_are_the_sem_seg_classes():
    """The point head has no class count of its own: it predicts NUM_CLASSES classes."""
    model = build_model(demo_config("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "7")).eval()
    head = model.sem_seg_head
    assert head.point_head.predictor.out_channels == 7
    fine = torch.zeros(2, sum(model.backbone.output_shape()[f].channels for f in head.in_features),
                       10)
    assert head.point_head(fine, torch.zeros(2, 7, 10)).shape == (2, 7, 10)


def test_point_head_num_classes_mismatch():
    msg = _build_error(**{"MODEL.POINT_HEAD.NUM_CLASSES": 4})
    assert "MODEL.POINT_HEAD.NUM_CLASSES=4" in msg and "MODEL.SEM_SEG_HEAD.NUM_CLASSES=5" in msg


def test_point_head_num_classes_key_from_yaml_or_command_line():
    with pytest.raises(ValueError) as info:
        build_config(DEMO_CONFIG, ["MODEL.POINT_HEAD.NUM_CLASSES", "5"])
    assert "MODEL.POINT_HEAD.NUM_CLASSES" in str(info.value)
    assert "MODEL.SEM_SEG_HEAD.NUM_CLASSES" in str(info.value)


def test_too_few_classes():
    msg = _build_error("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "1")
    # one class: the two-class setting, and the label map for 0/255 masks
    assert "MODEL.SEM_SEG_HEAD.NUM_CLASSES=1" in msg
    assert "set MODEL.SEM_SEG_HEAD.NUM_CLASSES 2" in msg and "--label-map 255:1" in msg
    assert "IGNORE_VALUE=255 their foreground would be ignored" in msg
    msg = _build_error("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "0")
    assert "MODEL.SEM_SEG_HEAD.NUM_CLASSES=0 must be an integer >= 2" in msg


def test_ignore_value_is_a_class():
    msg = _build_error("MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "3")
    assert "MODEL.SEM_SEG_HEAD.IGNORE_VALUE=3" in msg and "MODEL.SEM_SEG_HEAD.NUM_CLASSES=5" in msg


def test_coarse_head_feature_not_produced():
    msg = _build_error("MODEL.SEM_SEG_HEAD.IN_FEATURES", "['res4']")
    assert "MODEL.SEM_SEG_HEAD.IN_FEATURES=['res4']" in msg
    assert "MODEL.RESNETS.OUT_FEATURES=['res2', 'res5']" in msg


def test_point_head_feature_not_produced():
    msg = _build_error("MODEL.POINT_HEAD.IN_FEATURES", "['res3']")
    assert "MODEL.POINT_HEAD.IN_FEATURES=['res3']" in msg
    assert "MODEL.RESNETS.OUT_FEATURES=['res2', 'res5']" in msg


def test_project_feature_not_produced():
    msg = _build_error("MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME", "DeepLabV3Plus",
                       "MODEL.SEM_SEG_HEAD.PROJECT_FEATURES", "['res3']")
    assert "MODEL.SEM_SEG_HEAD.PROJECT_FEATURES=['res3']" in msg
    assert "MODEL.RESNETS.OUT_FEATURES" in msg


def test_several_problems_reported_together():
    msg = _build_error("MODEL.POINT_HEAD.IN_FEATURES", "['res3']",
                       "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "0")
    assert "MODEL.POINT_HEAD.IN_FEATURES" in msg and "MODEL.SEM_SEG_HEAD.IGNORE_VALUE=0" in msg


def test_output_stride_vs_dilation():
    msg = _build_error("MODEL.RESNETS.RES4_DILATION", "2", "MODEL.RESNETS.RES5_DILATION", "2")
    assert "MODEL.RESNETS.RES4_DILATION=2" in msg and "MODEL.RESNETS.RES5_DILATION" in msg


def test_crop_size_not_multiple_of_stride():
    crop = ["INPUT.CROP.ENABLED", "True", "INPUT.CROP.TYPE", "absolute"]
    os16 = ["MODEL.RESNETS.RES4_DILATION", "1", "MODEL.RESNETS.RES5_DILATION", "2"]
    msg = _build_error(*crop, *os16, "INPUT.CROP.SIZE", "(100, 128)")
    assert "INPUT.CROP.SIZE=[100, 128]" in msg and "output stride 16" in msg
    assert "[96, 128]" in msg  # the suggestion
    # Output stride 8: 104 is fine there, 100 is not.
    os8 = ["MODEL.RESNETS.RES4_DILATION", "2", "MODEL.RESNETS.RES5_DILATION", "4"]
    assert "output stride 8" in _build_error(*crop, *os8, "INPUT.CROP.SIZE", "(100, 128)")
    build_model(demo_config(*crop, *os8, "INPUT.CROP.SIZE", "(104, 128)"))
    # Data-dependent crop sizes are padded, not checked.
    build_model(demo_config("INPUT.CROP.ENABLED", "True", "INPUT.CROP.TYPE", "relative",
                            "INPUT.CROP.SIZE", "(0.7, 0.7)"))


def test_dataset_classes_vs_model_classes():
    cfg = demo_config("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "6")
    with pytest.raises(ValueError) as info:
        check_dataset_config(cfg)
    msg = str(info.value)
    for text in ("DATASETS.TRAIN", "DATASETS.TEST", "'synthetic_shapes_sem_seg_train'",
                 "'synthetic_shapes_sem_seg_val'", "5 classes", "MODEL.SEM_SEG_HEAD.NUM_CLASSES=6"):
        assert text in msg
    # The Trainer checks before building anything.
    with pytest.raises(ConfigError, match="MODEL.SEM_SEG_HEAD.NUM_CLASSES=6"):
        Trainer(cfg)


def test_dataset_ignore_label_vs_ignore_value():
    cfg = demo_config("MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "254")
    with pytest.raises(ValueError) as info:
        check_dataset_config(cfg)
    assert "ignore_label=255" in str(info.value)
    assert "MODEL.SEM_SEG_HEAD.IGNORE_VALUE=254" in str(info.value)


def test_unregistered_dataset():
    cfg = demo_config("DATASETS.TEST", "('no_such_dataset',)")
    with pytest.raises(ValueError, match="DATASETS.TEST: dataset 'no_such_dataset'"):
        check_dataset_config(cfg)


def test_demo_config_passes():
    check_dataset_config(demo_config())
    build_model(demo_config())


def test_syncbn_becomes_naive_syncbn_for_cpu_processes(caplog):
    cfg = demo_config("MODEL.RESNETS.NORM", "SyncBN", "MODEL.SEM_SEG_HEAD.NORM", "SyncBN")
    cfg.freeze()
    with caplog.at_level(logging.WARNING, logger="pointrend_seg"):
        adapted = adapt_norm_to_world_size(cfg, world_size=2)
    assert adapted.MODEL.RESNETS.NORM == "naiveSyncBN"
    assert adapted.MODEL.SEM_SEG_HEAD.NORM == "naiveSyncBN"
    assert adapted.is_frozen() and cfg.MODEL.RESNETS.NORM == "SyncBN"  # a copy
    assert "MODEL.RESNETS.NORM='SyncBN'" in caplog.text and "naiveSyncBN" in caplog.text
    # One process, or a GPU model: torch's SyncBatchNorm is fine.
    assert adapt_norm_to_world_size(cfg, world_size=1) is cfg
    gpu = cfg.clone()
    gpu.defrost()
    gpu.MODEL.DEVICE = "cuda"
    assert adapt_norm_to_world_size(gpu, world_size=2) is gpu
