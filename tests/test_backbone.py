"""
DeepLab ResNet backbone (pointrend_seg/modeling/backbone/resnet_deeplab.py) against Detectron2's
DeepLab project (``build_resnet_deeplab_backbone``) as an oracle: same state-dict keys, same
outputs, strides, dilations, freezing, norms, config validation.
"""
import pytest
import torch

from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.projects.deeplab import add_deeplab_config
from detectron2.projects.deeplab.resnet import build_resnet_deeplab_backbone

from pointrend_seg.config import add_pointrend_seg_config
from pointrend_seg.modeling.backbone import build_dilated_resnet_backbone

from conftest import randomize_norm_stats

INPUT = ShapeSpec(channels=3)


pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

# narrow ResNet-50 (fast on 2 CPU cores); R-103 at full width is checked once below
NARROW = {
    "DEPTH": 50, "STEM_OUT_CHANNELS": 32, "WIDTH_PER_GROUP": 8, "RES2_OUT_CHANNELS": 32,
}


def _set(cfg, resnets, freeze_at=0):
    r = cfg.MODEL.RESNETS
    r.DEPTH = 101
    r.STEM_TYPE = "deeplab"
    r.STEM_OUT_CHANNELS = 128
    r.RES4_DILATION = 1
    r.RES5_DILATION = 2
    r.RES5_MULTI_GRID = [1, 2, 4]
    r.NORM = "BN"
    r.OUT_FEATURES = ["res2", "res5"]
    r.STRIDE_IN_1X1 = False
    for k, v in resnets.items():
        setattr(r, k, v)
    cfg.MODEL.BACKBONE.FREEZE_AT = freeze_at
    return cfg


def _ours_cfg(**resnets):
    freeze_at = resnets.pop("FREEZE_AT", 0)
    cfg = get_cfg()
    add_pointrend_seg_config(cfg)
    return _set(cfg, resnets, freeze_at)


def _oracle_cfg(**resnets):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    return _set(cfg, resnets)


def _ours(**resnets):
    return build_dilated_resnet_backbone(_ours_cfg(**resnets), INPUT)


def _oracle(**resnets):
    return build_resnet_deeplab_backbone(_oracle_cfg(**resnets), INPUT)


def _randomize_norm_stats(model, seed=0):
    randomize_norm_stats(model, torch.Generator().manual_seed(seed))


def _check_load_and_outputs(resnets, size):
    torch.manual_seed(0)
    oracle = _oracle(**resnets)
    _randomize_norm_stats(oracle)
    ours = _ours(**resnets)
    result = ours.load_state_dict(oracle.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert set(ours.state_dict()) == set(oracle.state_dict())
    assert ours.output_shape() == oracle.output_shape()
    oracle.eval()
    ours.eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ref, got = oracle(x), ours(x)
    assert set(got) == set(ref) == set(resnets.get("OUT_FEATURES", ["res2", "res5"]))
    for k in ref:
        assert got[k].shape == ref[k].shape
        torch.testing.assert_close(got[k], ref[k], atol=0, rtol=0)


@pytest.mark.slow
def test_r103_state_dict_loads_strictly_and_outputs_match():
    """ResNet-103 = DEPTH 101 + deeplab stem (128 channels), full width, on a tiny input."""
    _check_load_and_outputs({}, (64, 64))


@pytest.mark.parametrize("resnets", [
    dict(NARROW),  # OS16, deeplab stem
    dict(NARROW, RES4_DILATION=2, RES5_DILATION=4),  # OS8
    dict(NARROW, STEM_TYPE="basic", STEM_OUT_CHANNELS=64, RES5_MULTI_GRID=[1, 1, 1]),
    dict(NARROW, STRIDE_IN_1X1=True, RES5_DILATION=1),
    dict(NARROW, OUT_FEATURES=["res2", "res3", "res4"]),  # res5 not built in either
    dict(NARROW, NORM="FrozenBN"),
    dict(DEPTH=50, STEM_OUT_CHANNELS=64, WIDTH_PER_GROUP=32, RES2_OUT_CHANNELS=64, NORM="GN"),
], ids=["os16", "os8", "basic-stem", "stride-in-1x1-no-dilation", "no-res5", "frozenbn", "gn"])
def test_narrow_state_dict_loads_strictly_and_outputs_match(resnets):
    _check_load_and_outputs(resnets, (61, 83))  # odd size


@pytest.mark.parametrize("res4,res5,stride,res5_dilations,res4_dilation", [
    (1, 2, 16, [2, 4, 8], 1),
    (2, 4, 8, [4, 8, 16], 2),
    (1, 1, 32, [1, 2, 4], 1),
])
def test_output_strides_and_multi_grid(res4, res5, stride, res5_dilations, res4_dilation):
    model = _ours(**dict(NARROW, RES4_DILATION=res4, RES5_DILATION=res5,
                         OUT_FEATURES=["res2", "res3", "res4", "res5"])).eval()
    shapes = model.output_shape()
    assert shapes["res2"].stride == 4 and shapes["res3"].stride == 8
    assert shapes["res5"].stride == stride
    assert shapes["res4"].stride == (16 if res4 == 1 else 8)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 192))
    assert out["res5"].shape[-2:] == (128 // stride, 192 // stride)
    assert out["res2"].shape[-2:] == (32, 48)
    assert [b.conv2.dilation for b in model.res5] == [(d, d) for d in res5_dilations]
    assert [b.conv2.padding for b in model.res5] == [(d, d) for d in res5_dilations]
    assert all(b.conv2.dilation == (res4_dilation,) * 2 for b in model.res4)
    assert all(b.conv2.dilation == (1, 1) for b in list(model.res2) + list(model.res3))


@pytest.mark.parametrize("freeze_at", [0, 1, 2])
def test_freeze_at(freeze_at):
    model = _ours(**dict(NARROW, FREEZE_AT=freeze_at))
    frozen = {"stem": freeze_at >= 1, "res2": freeze_at >= 2, "res3": False, "res5": False}
    for name, is_frozen in frozen.items():
        params = list(getattr(model, name).parameters())
        assert params
        assert all(p.requires_grad != is_frozen for p in params), name
        norms = [m for m in getattr(model, name).modules()
                 if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d))]
        assert all(isinstance(m, FrozenBatchNorm2d) == is_frozen for m in norms), name


@pytest.mark.parametrize("norm", ["BN", "GN", "FrozenBN"])
def test_norms_build_train_and_run(norm):
    resnets = dict(DEPTH=50, STEM_OUT_CHANNELS=64, WIDTH_PER_GROUP=32, RES2_OUT_CHANNELS=64,
                   NORM=norm)
    model = _ours(**resnets)
    kind = {"BN": torch.nn.BatchNorm2d, "GN": torch.nn.GroupNorm,
            "FrozenBN": FrozenBatchNorm2d}[norm]
    assert isinstance(model.stem.conv1.norm, kind)
    assert isinstance(model.res5[0].conv1.norm, kind)
    model.train()
    out = model(torch.randn(2, 3, 48, 80))
    assert out["res5"].shape == (2, 2048 // 4, 3, 5)
    loss = out["res5"].square().mean() + out["res2"].mean()
    loss.backward()
    assert torch.isfinite(model.stem.conv1.weight.grad).all()
    assert model.stem.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("resnets,key", [
    (dict(RES4_DILATION=3), "MODEL.RESNETS.RES4_DILATION"),
    (dict(RES5_DILATION=3), "MODEL.RESNETS.RES5_DILATION"),
    (dict(RES4_DILATION=2, RES5_DILATION=2), "MODEL.RESNETS.RES4_DILATION"),
    (dict(RES5_MULTI_GRID=[1, 2]), "MODEL.RESNETS.RES5_MULTI_GRID"),
    (dict(DEPTH=34), "MODEL.RESNETS.DEPTH"),
    (dict(STEM_TYPE="fancy"), "MODEL.RESNETS.STEM_TYPE"),
])
def test_bad_configs_raise_value_error_naming_the_key(resnets, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        _ours(**dict(NARROW, **resnets))


def test_registered_in_backbone_registry():
    from detectron2.modeling import build_backbone

    cfg = _ours_cfg(**NARROW)
    cfg.MODEL.BACKBONE.NAME = "build_dilated_resnet_backbone"
    model = build_backbone(cfg)
    assert model.output_shape()["res5"].stride == 16
    assert model.output_shape()["res2"].channels == 32
