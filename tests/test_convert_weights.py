"""
ImageNet weights of torchvision and timm for our backbone (pointrend_seg/modeling/backbone/convert.py,
tools/convert_weights.py), and the checkpoint loader's refusal of weights that do not fit the
backbone (SafeCheckpointer). Randomly initialised networks only: nothing is downloaded.
"""
import os

import pytest
import timm
import torch
import torchvision

from detectron2.layers import ShapeSpec

from pointrend_seg.config import build_config
from pointrend_seg.engine import BackboneMismatchError, SafeCheckpointer
from pointrend_seg.modeling.backbone import (
    WeightConversionError,
    build_dilated_resnet_backbone,
    convert_resnet_state_dict,
    unwrap_state_dict,
)

from conftest import REPO_ROOT, randomize_norm_stats

import convert_weights

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

BASE = os.path.join(REPO_ROOT, "configs", "Base-DeepLabV3-PointRend.yaml")
# Our backbone at output stride 32 (no dilation), so that it is comparable with the sources.
UNDILATED = ["MODEL.RESNETS.RES5_DILATION", "1", "MODEL.RESNETS.RES5_MULTI_GRID", "[1, 1, 1]",
             "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5']",
             "MODEL.RESNETS.NORM", "BN", "MODEL.DEVICE", "cpu"]

SOURCES = {
    "torchvision resnet50": lambda: torchvision.models.resnet50(),
    "torchvision resnext50_32x4d": lambda: torchvision.models.resnext50_32x4d(),
    "timm resnet50": lambda: timm.create_model("resnet50", pretrained=False),
    # timm's deep stems: widths 32, 32, 64 (resnet*c) and 64, 64, 128 (resnet*s, R-103's layout)
    "timm resnet50c": lambda: timm.create_model("resnet50c", pretrained=False),
    "timm resnet50s": lambda: timm.create_model("resnet50s", pretrained=False),
}


def _source(name):
    torch.manual_seed(0)
    model = SOURCES[name]()
    randomize_norm_stats(model, torch.Generator().manual_seed(1))
    return model.eval()


def _source_features(model, x):
    """res2..res5 of a torchvision / timm ResNet (they share these attribute names)."""
    relu = getattr(model, "act1", None) or model.relu
    x = model.maxpool(relu(model.bn1(model.conv1(x))))
    out = {}
    for i in range(4):
        x = getattr(model, f"layer{i + 1}")(x)
        out[f"res{i + 2}"] = x
    return out


def _our_backbone(opts):
    cfg = build_config(BASE, list(opts) + UNDILATED)
    return build_dilated_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_converted_backbone_computes_the_same_features(name):
    source = _source(name)
    converted, opts = convert_resnet_state_dict(source.state_dict(), prefix="")
    ours = _our_backbone(opts)
    result = ours.load_state_dict(converted, strict=False)
    assert result.unexpected_keys == []
    # BN's num_batches_tracked counters are not weights (and torchvision's are not converted)
    assert all(k.endswith("num_batches_tracked") for k in result.missing_keys)
    x = torch.randn(2, 3, 96, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = _source_features(source, x)
        got = ours(x)
    for f in ("res2", "res3", "res4", "res5"):
        assert got[f].shape == expected[f].shape
        # The same torch calls (conv2d, batch_norm, relu, max_pool2d) on the same tensors in the
        # same order: bit-identical (measured with 1 and 2 threads, 3 seeds).
        torch.testing.assert_close(got[f], expected[f], atol=0, rtol=0)


def test_config_overrides_describe_the_source():
    _, opts = convert_resnet_state_dict(torchvision.models.resnext50_32x4d().state_dict())
    pairs = dict(zip(opts[::2], opts[1::2]))
    assert pairs["MODEL.RESNETS.DEPTH"] == "50"
    assert pairs["MODEL.RESNETS.STEM_TYPE"] == "basic"
    assert (pairs["MODEL.RESNETS.NUM_GROUPS"], pairs["MODEL.RESNETS.WIDTH_PER_GROUP"]) == ("32", "4")
    assert pairs["MODEL.RESNETS.STRIDE_IN_1X1"] == "False"
    assert pairs["INPUT.FORMAT"] == "RGB"
    _, opts = convert_resnet_state_dict(timm.create_model("resnet101s").state_dict())
    pairs = dict(zip(opts[::2], opts[1::2]))
    # Detectron2's DeepLab R-103 layout: ResNet-101 with the deep stem, 128 channels
    assert (pairs["MODEL.RESNETS.DEPTH"], pairs["MODEL.RESNETS.STEM_TYPE"],
            pairs["MODEL.RESNETS.STEM_OUT_CHANNELS"]) == ("101", "deeplab", "128")


@pytest.mark.parametrize("model_fn,match", [
    (lambda: timm.create_model("resnet50d"), "average-pool shortcuts"),
    (lambda: torchvision.models.resnet18(), "basic blocks"),
    (lambda: timm.create_model("seresnet50"), "no counterpart"),
    (lambda: timm.create_model("resnet26"), r"\[2, 2, 2, 2\] blocks per stage"),
    (lambda: timm.models.resnet.ResNet(timm.models.resnet.Bottleneck, [3, 4, 6, 3],
                                       stem_type="deep_tiered", stem_width=32),
     "deep stem of widths"),
])
def test_networks_that_cannot_be_converted_exactly_are_refused(model_fn, match):
    with pytest.raises(WeightConversionError, match=match):
        convert_resnet_state_dict(model_fn().state_dict(), source_name="net.pth")


def test_unwrap_state_dict_handles_training_checkpoints():
    sd = {"conv1.weight": torch.zeros(1)}
    assert unwrap_state_dict({"state_dict": {"module.conv1.weight": torch.zeros(1)}}) == sd
    assert unwrap_state_dict({"model": sd, "epoch": 3}) == sd
    with pytest.raises(WeightConversionError, match="not tensors"):
        unwrap_state_dict({"conv1.weight": torch.zeros(1), "arch": "resnet50"}, "x.pth")


# ------------------------------------------------------------------------------------------------
# the tool, and MODEL.WEIGHTS that do not fit
# ------------------------------------------------------------------------------------------------
R50_OPTS = ["MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN", "MODEL.DEVICE", "cpu",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5", "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", "32",
            "MODEL.POINT_HEAD.FC_DIM", "32"]


def _segmentation_model(*opts):
    from detectron2.modeling import build_model

    return build_model(build_config(BASE, R50_OPTS + list(opts))).eval()


def test_tool_output_loads_into_the_model(tmp_path, capsys):
    source = _source("torchvision resnet50")
    src = tmp_path / "resnet50.pth"
    torch.save(source.state_dict(), src)
    out = tmp_path / "converted" / "R-50.pth"
    convert_weights.main([str(src), str(out)])
    printed = capsys.readouterr().out
    assert f"MODEL.WEIGHTS {out}" in printed and "MODEL.RESNETS.STEM_TYPE basic" in printed

    model = _segmentation_model()
    SafeCheckpointer(model).load(str(out))
    # the dilated backbone (output stride 16) holds exactly the source's weights
    for ours_key, value in convert_resnet_state_dict(source.state_dict())[0].items():
        torch.testing.assert_close(model.state_dict()[ours_key], value, atol=0, rtol=0)


def test_unconverted_torchvision_weights_are_refused(tmp_path):
    src = tmp_path / "resnet50-0676ba61.pth"
    torch.save(torchvision.models.resnet50().state_dict(), src)
    model = _segmentation_model()
    num = sum(not k.endswith("num_batches_tracked") for k in model.backbone.state_dict())
    with pytest.raises(BackboneMismatchError) as e:
        SafeCheckpointer(model).load(str(src))
    msg = str(e.value)
    assert str(src) in msg and f"fills 0 of the {num} backbone tensors" in msg
    assert f"python tools/convert_weights.py {src} resnet50-0676ba61_converted.pth" in msg


def test_weights_of_another_width_are_refused(tmp_path):
    """Right names, wrong shapes (a narrower network): counted as not filled."""
    narrow = _segmentation_model("MODEL.RESNETS.WIDTH_PER_GROUP", "16",
                                 "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
                                 "MODEL.RESNETS.STEM_OUT_CHANNELS", "32")
    path = tmp_path / "narrow.pth"
    torch.save({"model": narrow.state_dict()}, path)
    with pytest.raises(BackboneMismatchError, match="have the right name but another shape"):
        SafeCheckpointer(_segmentation_model()).load(str(path))


def test_checkpoint_filling_half_the_backbone_loads(tmp_path):
    model = _segmentation_model()
    backbone_keys = [k for k in model.state_dict() if k.startswith("backbone.")
                     and not k.endswith("num_batches_tracked")]
    half = set(backbone_keys[: (len(backbone_keys) + 1) // 2])
    path = tmp_path / "half.pth"
    torch.save({"model": {k: v for k, v in model.state_dict().items() if k in half}}, path)
    SafeCheckpointer(_segmentation_model()).load(str(path))
    fewer = tmp_path / "fewer.pth"
    torch.save({"model": {k: v for k, v in model.state_dict().items()
                          if k in half and k != sorted(half)[0]}}, fewer)
    with pytest.raises(BackboneMismatchError):
        SafeCheckpointer(_segmentation_model()).load(str(fewer))
