"""
Config errors that help: unknown keys name the closest existing keys ("did you mean"), all of
them at once, from a YAML file or the command line; a config made without
add_pointrend_seg_config says so, when merging and when our components are built from it.
"""
import pytest
import torch
import yaml

from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.projects.deeplab import add_deeplab_config
from detectron2.projects.point_rend import add_pointrend_config

from pointrend_seg.config import (
    ConfigError,
    build_config,
    check_pointrend_seg_keys,
    closest_keys,
    merge_config,
)

from pointrend_seg.data import SemSegDatasetMapper

from conftest import DEMO_CONFIG, demo_config


def _error(config_file="", opts=()):
    with pytest.raises(ConfigError) as e:
        build_config(config_file, list(opts))
    return str(e.value)


def test_typo_on_the_command_line_names_the_key_meant():
    msg = _error(DEMO_CONFIG, ["MODEL.POINT_HEAD.TRAIN_NUM_POINT", "64"])
    assert "MODEL.POINT_HEAD.TRAIN_NUM_POINT (did you mean MODEL.POINT_HEAD.TRAIN_NUM_POINTS" in msg
    assert "the command line" in msg


def test_key_in_the_wrong_group_names_the_right_group():
    assert closest_keys(build_config(DEMO_CONFIG), "MODEL.SEM_SEG_HEAD.TRAIN_NUM_POINTS")[0] == \
        "MODEL.POINT_HEAD.TRAIN_NUM_POINTS"
    msg = _error(opts=["MODEL.SEM_SEG_HEAD.SUBDIVISION_STEPS", "2"])
    assert "(did you mean MODEL.POINT_HEAD.SUBDIVISION_STEPS" in msg


def test_every_unknown_key_of_a_yaml_file_listed(tmp_path):
    path = tmp_path / "typos.yaml"
    path.write_text(yaml.safe_dump({
        "_BASE_": DEMO_CONFIG,
        "SOLVER": {"MAX_ITR": 10, "BASE_LR": 0.1},
        "MODEL": {"POINT_HEAD": {"FC_DIMS": 32}},
    }))
    msg = _error(str(path))
    assert str(path) in msg
    assert "SOLVER.MAX_ITR (did you mean SOLVER.MAX_ITER" in msg
    assert "MODEL.POINT_HEAD.FC_DIMS (did you mean MODEL.POINT_HEAD.FC_DIM" in msg
    assert "BASE_LR (" not in msg  # known keys are not listed
    # Several unknown overrides: all listed too.
    msg = _error(DEMO_CONFIG, ["SOLVER.MAX_ITR", "1", "SOLVER.BASE_LRR", "1", "SEED", "3"])
    assert "SOLVER.MAX_ITR (did you mean SOLVER.MAX_ITER" in msg
    assert "SOLVER.BASE_LRR (did you mean SOLVER.BASE_LR" in msg and "SEED" not in msg


def test_other_merge_errors_are_not_hidden():
    # yacs' type error of a known key: a ConfigError naming the key, the value and the type
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER=many in the command line: the key "
                                          "holds int values"):
        build_config(DEMO_CONFIG, ["SOLVER.MAX_ITER", "'many'"])
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        build_config("missing.yaml")


@pytest.mark.parametrize("extra", [None, add_deeplab_config, add_pointrend_config])
def test_config_without_add_pointrend_seg_config(extra):
    """A user's own get_cfg() (+ Detectron2's DeepLab or PointRend keys), not ours."""
    cfg = get_cfg()
    if extra is not None:
        extra(cfg)
    with pytest.raises(ConfigError) as e:
        merge_config(cfg, DEMO_CONFIG)
    msg = str(e.value)
    assert "made without add_pointrend_seg_config" in msg and DEMO_CONFIG in msg
    assert "build_config" in msg
    with pytest.raises(ConfigError, match="made without add_pointrend_seg_config"):
        merge_config(get_cfg(), opts=["INPUT.COLOR_AUG_SSD", "True"])
    # Components built from such a config say the same instead of an AttributeError.
    with pytest.raises(ConfigError, match="made without add_pointrend_seg_config"):
        check_pointrend_seg_keys(cfg)
    with pytest.raises(ConfigError, match="made without add_pointrend_seg_config"):
        SemSegDatasetMapper(cfg, True)
    model_cfg = cfg.clone()
    model_cfg.MODEL.META_ARCHITECTURE = "GeneralizedSemanticSegmentor"
    with pytest.raises(ConfigError, match="made without add_pointrend_seg_config"):
        build_model(model_cfg)
    check_pointrend_seg_keys(build_config(DEMO_CONFIG))


# ---- every config error is a ConfigError naming its key --------------------------------------
def _model(cfg):
    build_model(cfg)


def _solver(cfg):
    from pointrend_seg.engine import check_solver_config
    from pointrend_seg.engine.optimizer import build_optimizer
    from pointrend_seg.engine.train_step import training_precision

    check_solver_config(cfg)
    training_precision(cfg)
    build_optimizer(cfg, torch.nn.Linear(2, 2))


def _inference(cfg):
    from pointrend_seg.modeling import InferenceOptions

    InferenceOptions.from_config(cfg, "cpu")


def _config_only(cfg):
    from pointrend_seg.engine.run import check_config

    check_config(cfg, train=False)


def _train_mapper(cfg):
    from pointrend_seg.data import build_sem_seg_augmentations

    build_sem_seg_augmentations(cfg, True)


BAD_VALUES = [  # (where it is read, KEY, bad value as on the command line)
    (_model, "MODEL.BACKBONE.NAME", "no_such_backbone"),
    (_model, "MODEL.SEM_SEG_HEAD.NAME", "NoSuchHead"),
    (_model, "MODEL.RESNETS.RES4_DILATION", "3"),
    (_model, "MODEL.RESNETS.RES5_DILATION", "3"),
    (_model, "MODEL.RESNETS.STEM_TYPE", "'fancy'"),
    (_model, "MODEL.RESNETS.DEPTH", "34"),
    (_model, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "0"),
    (_model, "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "3"),
    (_model, "MODEL.SEM_SEG_HEAD.LOSS_TYPE", "'dice'"),
    (_model, "MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME", "'NoSuchCoarseHead'"),
    (_model, "MODEL.SEM_SEG_HEAD.IN_FEATURES", "['res4']"),
    (_model, "MODEL.POINT_HEAD.NAME", "'NoSuchPointHead'"),
    (_model, "MODEL.POINT_HEAD.IN_FEATURES", "['res3']"),
    (_model, "MODEL.POINT_HEAD.OVERSAMPLE_RATIO", "0"),
    (_model, "MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO", "2.0"),
    (_model, "MODEL.POINT_HEAD.FC_DIM", "0"),
    (_model, "MODEL.POINT_HEAD.NUM_FC", "-1"),
    (_model, "MODEL.POINT_HEAD.TRAIN_NUM_POINTS", "0"),
    (_model, "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", "-1"),
    (_model, "MODEL.POINT_HEAD.SUBDIVISION_STEPS", "-2"),
    (_solver, "SOLVER.MAX_ITER", "0"),
    (_solver, "SOLVER.IMS_PER_BATCH", "0"),
    (_solver, "SOLVER.BASE_LR", "0.0"),
    (_solver, "SOLVER.OPTIMIZER", "'LAMB'"),
    # before: torch's DataLoader ValueError after the whole dataset check; gradients flipped
    # (a negative clip norm scales them by a negative factor); inf / NaN input pixels
    (_solver, "DATALOADER.NUM_WORKERS", "-1"),
    (_solver, "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "-1.0"),
    # before: a negative learning rate for the warmup (gradient ascent), silently; a math
    # domain error at the last iteration
    (_solver, "SOLVER.WARMUP_FACTOR", "-1.0"),
    (_solver, "SOLVER.POLY_LR_POWER", "-0.9"),
    (_model, "MODEL.PIXEL_STD", "[58.395, 0.0, 57.375]"),
    # before: trained silently: a negative loss weight is gradient ascent on that loss, an inf
    # std a channel always 0; an inf mean a NaN loss at iteration 0 with advice to lower the LR
    (_model, "MODEL.POINT_HEAD.LOSS_WEIGHT", "-1.0"),
    (_model, "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT", "-1.0"),
    (_model, "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT", "1e400"),
    (_model, "MODEL.PIXEL_STD", "[1e400, 1.0, 1.0]"),
    (_model, "MODEL.PIXEL_MEAN", "[1e400, 116.28, 103.53]"),
    # before: a ValueError traceback when evaluating after training; a band silently of 1 px
    (_config_only, "TEST.BOUNDARY_EVAL.BF_TOLERANCE", "-0.0075"),
    (_config_only, "TEST.BOUNDARY_EVAL.BIOU_DILATION", "-0.02"),
    # before: a warning threshold above 1 never warned, below 0 always; -1 readers silently 1
    (_config_only, "DATASETS.CHECK.MAX_IGNORED_FRACTION", "1.5"),
    (_config_only, "DATASETS.CHECK.MAX_IGNORED_FRACTION", "-0.1"),
    (_config_only, "DATASETS.CHECK.NUM_WORKERS", "-1"),
    # before: a ValueError traceback (numpy's seed) / a bare AssertionError, after config.yaml
    # was written (config-only checks: test_run_folder.py)
    (_config_only, "SEED", "4294967296"),
    (_solver, "DATASETS.TRAIN", "()"),
    (_inference, "MODEL.INFERENCE.CHANNELS_LAST", "'sometimes'"),
    (_inference, "MODEL.INFERENCE.COMPILE", "'fast'"),
    (_train_mapper, "INPUT.CROP.SIZE", "(0.0, 0.0)"),
    (_train_mapper, "INPUT.CROP.TYPE", "'square'"),
]


@pytest.mark.parametrize("where, key, value", BAD_VALUES,
                         ids=[f"{k}={v}" for _, k, v in BAD_VALUES])
def test_every_bad_value_is_a_config_error_naming_its_key(where, key, value):
    extra = []
    if key.startswith("INPUT.CROP"):
        extra = ["INPUT.CROP.ENABLED", "True"] + (
            ["INPUT.CROP.TYPE", "relative"] if key == "INPUT.CROP.SIZE" else [])
    if key.startswith("SOLVER.CLIP_GRADIENTS"):
        extra = ["SOLVER.CLIP_GRADIENTS.ENABLED", "True"]
    cfg = demo_config(*extra, key, value)
    with pytest.raises(ConfigError) as info:
        where(cfg)
    assert key in str(info.value), str(info.value)


def test_solver_amp_precision_named():
    from pointrend_seg.engine.train_step import training_precision

    with pytest.raises(ConfigError, match="SOLVER.AMP.PRECISION"):
        training_precision(demo_config("SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.PRECISION",
                                       "'float8'"))


def test_a_value_of_the_wrong_type_names_the_key():
    # before: yacs' "ValueError: Type mismatch (<class 'int'> vs. <class 'float'>) ..."
    with pytest.raises(ConfigError) as info:
        build_config(DEMO_CONFIG, ["MODEL.POINT_HEAD.OVERSAMPLE_RATIO", "0.5"])
    assert str(info.value) == ("MODEL.POINT_HEAD.OVERSAMPLE_RATIO=0.5 in the command line: the key "
                               "holds int values (default 3), not float")
