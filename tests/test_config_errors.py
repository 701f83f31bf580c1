"""
Config errors that help: unknown keys name the closest existing keys ("did you mean"), all of
them at once, from a YAML file or the command line; a config made without
add_pointrend_seg_config says so, when merging and when our components are built from it.
"""
import pytest
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

from conftest import DEMO_CONFIG


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
    with pytest.raises((ValueError, AssertionError)) as e:  # yacs: wrong type for a known key
        build_config(DEMO_CONFIG, ["SOLVER.MAX_ITER", "'many'"])
    assert not isinstance(e.value, ConfigError) and "MAX_ITER" in str(e.value)
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
