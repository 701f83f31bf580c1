"""
Coarse heads (pointrend_seg/modeling/coarse_heads.py) against Detectron2's DeepLab project heads
(DeepLabV3Head, DeepLabV3PlusHead) as oracles, plus output strides/shapes at odd sizes.
"""
import pytest
import torch
from torch.nn import functional as F

from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.projects.deeplab import add_deeplab_config
from detectron2.projects.deeplab.semantic_seg import DeepLabV3Head, DeepLabV3PlusHead
from detectron2.structures import ImageList

from conftest import demo_config, randomize_norm_stats
from pointrend_seg.config import add_pointrend_seg_config
from pointrend_seg.modeling import DeepLabV3, DeepLabV3Plus, build_coarse_head

K = 5
SHAPES = {"res2": ShapeSpec(channels=24, stride=4), "res5": ShapeSpec(channels=40, stride=16)}


pytestmark = pytest.mark.usefixtures("one_intra_op_thread")



def _head_cfg(add, **sem):
    cfg = get_cfg()
    add(cfg)
    h = cfg.MODEL.SEM_SEG_HEAD
    h.NUM_CLASSES = K
    h.ASPP_CHANNELS = 32
    h.CONVS_DIM = 32
    h.ASPP_DILATIONS = [2, 3, 5]
    h.NORM = "BN"
    h.LOSS_TYPE = "cross_entropy"
    h.PROJECT_FEATURES = ["res2"]
    h.PROJECT_CHANNELS = [12]
    cfg.INPUT.CROP.ENABLED = False
    for k, v in sem.items():
        setattr(h, k, v)
    return cfg


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    randomize_norm_stats(model, g)
    for name, p in model.named_parameters():
        if "predictor" in name:  # initialised with std 0.001: make it matter
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _features(h5, w5, n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {
        "res2": torch.randn(n, 24, 4 * h5, 4 * w5, generator=g),
        "res5": torch.randn(n, 40, h5, w5, generator=g),
    }


@pytest.mark.parametrize("h5,w5", [(7, 9), (5, 3), (1, 1)])
def test_deeplabv3_matches_detectron2_head_at_odd_sizes(h5, w5):
    torch.manual_seed(0)
    oracle = DeepLabV3Head(
        _head_cfg(add_deeplab_config, IN_FEATURES=["res5"], COMMON_STRIDE=16), SHAPES
    )
    _randomize_bn(oracle)
    ours = build_coarse_head(
        _head_cfg(add_pointrend_seg_config, IN_FEATURES=["res5"], COARSE_HEAD_NAME="DeepLabV3"),
        SHAPES,
    )
    assert isinstance(ours, DeepLabV3)
    assert ours.output_stride == 16
    # same parameter names (aspp.*, predictor.*): checkpoints load without renaming
    ours.load_state_dict(oracle.state_dict(), strict=True)
    oracle.eval()
    ours.eval()
    feats = _features(h5, w5)
    with torch.no_grad():
        got = ours(feats)
        ref, _ = oracle(feats)  # upsampled by COMMON_STRIDE in inference
    assert got.shape == (2, K, h5, w5)
    up = F.interpolate(got, scale_factor=16, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up, ref, atol=1e-5, rtol=1e-5)


def test_deeplabv3_image_pooling_is_global():
    """The pooling branch sees the whole map: changing a far-away feature changes every output."""
    ours = build_coarse_head(
        _head_cfg(add_pointrend_seg_config, IN_FEATURES=["res5"], ASPP_DILATIONS=[1, 1, 1]),
        SHAPES,
    ).eval()
    _randomize_bn(ours)
    feats = _features(9, 11, n=1)
    with torch.no_grad():
        a = ours(feats)
        feats["res5"][0, :, 8, 10] += 50.0
        b = ours(feats)
    # with dilations 1 the convs reach 1 cell; only global pooling reaches the opposite corner
    assert (a[0, :, 0, 0] - b[0, :, 0, 0]).abs().max() > 1e-4


@pytest.mark.parametrize("h5,w5", [(7, 9), (3, 5)])
def test_deeplabv3plus_matches_detectron2_head_at_stride_4(h5, w5):
    torch.manual_seed(0)
    oracle = DeepLabV3PlusHead(
        _head_cfg(add_deeplab_config, IN_FEATURES=["res2", "res5"], COMMON_STRIDE=4), SHAPES
    )
    _randomize_bn(oracle)
    ours = build_coarse_head(
        _head_cfg(add_pointrend_seg_config, IN_FEATURES=["res5"],
                  COARSE_HEAD_NAME="DeepLabV3Plus"),
        SHAPES,
    )
    assert isinstance(ours, DeepLabV3Plus)
    assert ours.output_stride == 4
    rename = {"decoder.res5.project_conv.": "aspp.", "decoder.res2.project_conv.": "project.res2.",
              "decoder.res2.fuse_conv.": "fuse.res2."}
    state = {}
    for k, v in oracle.state_dict().items():
        for old, new in rename.items():
            if k.startswith(old):
                k = new + k[len(old):]
        state[k] = v
    ours.load_state_dict(state, strict=True)
    oracle.eval()
    ours.eval()
    feats = _features(h5, w5)
    with torch.no_grad():
        got = ours(feats)
        ref = oracle.layers(feats)
    assert got.shape == (2, K, 4 * h5, 4 * w5)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_coarse_head_config_errors():
    with pytest.raises(ValueError, match="IN_FEATURES"):
        build_coarse_head(
            _head_cfg(add_pointrend_seg_config, IN_FEATURES=["res2", "res5"]), SHAPES
        )
    with pytest.raises(ValueError, match="PROJECT_CHANNELS"):
        build_coarse_head(
            _head_cfg(add_pointrend_seg_config, IN_FEATURES=["res5"],
                      COARSE_HEAD_NAME="DeepLabV3Plus", PROJECT_CHANNELS=[12, 12]),
            SHAPES,
        )


@pytest.mark.parametrize("coarse,res4,res5,stride,canvas", [
    ("DeepLabV3", 1, 2, 16, (48, 80)),  # OS16, padded to a multiple of 16
    ("DeepLabV3", 2, 4, 8, (48, 72)),  # OS8, padded to a multiple of 8
    ("DeepLabV3Plus", 1, 2, 4, (48, 80)),  # res2 decoder: stride 4
])
@pytest.mark.parametrize("head_name", ["BilinearSegHead", "PointRendSegHead"])
def test_full_model_odd_input_sizes(coarse, res4, res5, stride, canvas, head_name):
    """Through the demo backbone: coarse logits at the head's stride, outputs at the input size."""
    from detectron2.modeling import build_model

    cfg = demo_config("MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME", coarse,
                      "MODEL.SEM_SEG_HEAD.NAME", head_name,
                      "MODEL.RESNETS.RES4_DILATION", str(res4),
                      "MODEL.RESNETS.RES5_DILATION", str(res5))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert model.sem_seg_head.output_stride == stride
    img = torch.rand(3, 45, 67) * 255
    with torch.no_grad():
        images = ImageList.from_tensors([model.normalize(img)], model.size_divisibility)
        assert tuple(images.tensor.shape[-2:]) == canvas
        feats = model.backbone(images.tensor)
        coarse_logits = model.sem_seg_head.coarse_head(feats)
        (out,) = model([{"image": img}])
    assert coarse_logits.shape == (1, K, canvas[0] // stride, canvas[1] // stride)
    assert out["sem_seg"].shape == (K, 45, 67)
    assert torch.isfinite(out["sem_seg"]).all()
