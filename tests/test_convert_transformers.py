"""
timm's Swin Transformer and ViT weights for Detectron2 main's SwinTransformer / ViT
(pointrend_seg/modeling/backbone/convert_transformers.py, tools/convert_weights.py). Randomly
initialised, narrow timm networks only: nothing is downloaded. The renaming checks run on both
Detectron2 versions; the feature equality and the config round trip need ``main``'s backbones.
"""
import shlex
from functools import partial

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformer as TimmSwin
from timm.models.vision_transformer import VisionTransformer as TimmViT

import detectron2.modeling
from detectron2.config import instantiate

from pointrend_seg import model_zoo
from pointrend_seg.engine import SafeCheckpointer
from pointrend_seg.modeling.backbone import WeightConversionError
from pointrend_seg.modeling.backbone.convert_transformers import (
    convert_timm_swin_state_dict,
    convert_timm_vit_state_dict,
    transformer_kind,
)

import convert_weights

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")
ON_MAIN = hasattr(detectron2.modeling, "SwinTransformer")
main_only = pytest.mark.skipif(not ON_MAIN, reason="Detectron2 main only (v0.6 has no Swin / ViT)")

# Narrow Swin: 448 input so that every stage is larger than the 7x7 window (at 224 timm turns
# the last stage's shift off, Detectron2 does not: a real difference of the two, not of names).
SWIN = dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=7)
SWIN_IMG = 448
VIT = dict(patch_size=16, embed_dim=64, depth=2, num_heads=2)


def _timm_swin():
    torch.manual_seed(0)
    return TimmSwin(img_size=SWIN_IMG, num_classes=5, **SWIN).eval()


def _timm_vit(**kw):
    torch.manual_seed(0)
    return TimmViT(img_size=224, num_classes=5, **dict(VIT, **kw)).eval()


def _randomize_norms(model):
    """LayerNorms of timm init are the identity; random ones catch a norm put in the wrong place."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model


def test_swin_names_and_architecture():
    sd = _timm_swin().state_dict()
    converted, opts = convert_timm_swin_state_dict(sd)
    assert transformer_kind(sd) == "swin"
    # timm merges patches at the start of stages 1..3; Detectron2 at the end of stages 0..2
    assert torch.equal(converted["backbone.layers.0.downsample.reduction.weight"],
                       sd["layers.1.downsample.reduction.weight"])
    assert "backbone.layers.3.downsample.norm.weight" not in converted
    assert torch.equal(converted["backbone.norm3.weight"], sd["norm.weight"])
    assert not [k for k in converted if "head" in k or "relative_position_index" in k
                or "attn_mask" in k]
    assert opts == ["model.backbone.embed_dim=32", "model.backbone.depths=[1,1,2,1]",
                    "model.backbone.num_heads=[1,2,4,8]", "model.backbone.window_size=7",
                    "model.backbone.patch_size=4",
                    "model.sem_seg_head.coarse_head.input_shape.channels=128",
                    "model.sem_seg_head.point_head.in_channels=32"]


def test_official_swin_layout_is_already_detectron2s():
    """The official release's names (downsample at the end of a stage) convert to the same."""
    converted, _ = convert_timm_swin_state_dict(_timm_swin().state_dict(), prefix="")
    official = {("norm." + k[len("norm3."):] if k.startswith("norm3.") else k): v
                for k, v in converted.items()}
    official["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(169, dtype=torch.long)
    again, _ = convert_timm_swin_state_dict(official, prefix="")
    assert again.keys() == converted.keys()
    assert all(torch.equal(again[k], converted[k]) for k in converted)


def test_vit_names_and_architecture():
    sd = _timm_vit().state_dict()
    converted, opts = convert_timm_vit_state_dict(sd)
    assert transformer_kind(sd) == "vit"
    assert set(converted) == {"backbone.net." + k for k in sd
                              if k not in ("cls_token", "norm.weight", "norm.bias",
                                           "head.weight", "head.bias")}
    assert opts == ["model.backbone.net.embed_dim=64", "model.backbone.net.depth=2",
                    "model.backbone.net.patch_size=16", "model.backbone.net.pretrain_img_size=224",
                    "model.backbone.net.pretrain_use_cls_token=True"]
    no_cls = _timm_vit(class_token=False, global_pool="avg").state_dict()
    assert convert_timm_vit_state_dict(no_cls)[1][-1] == "model.backbone.net.pretrain_use_cls_token=False"


@pytest.mark.parametrize("source, kind, match", [
    (lambda: timm.create_model("swinv2_tiny_window8_256"), "swin", "Swin V2"),
    (lambda: _timm_vit(init_values=1e-5), "vit", "layer scale"),
    (lambda: _timm_vit(reg_tokens=4), "vit", "register tokens"),
    (lambda: _timm_vit(pre_norm=True), "vit", "pre-norm"),
    (lambda: _timm_vit(qk_norm=True), "vit", "q/k norms"),
])
def test_transformers_detectron2_cannot_hold_are_refused(source, kind, match):
    sd = source().state_dict()
    assert transformer_kind(sd) == kind
    convert = convert_timm_swin_state_dict if kind == "swin" else convert_timm_vit_state_dict
    with pytest.raises(WeightConversionError, match=match):
        convert(sd, source_name="w.pth")


def test_a_resnet_is_not_a_transformer():
    assert transformer_kind(timm.create_model("resnet50").state_dict()) == ""


@main_only
def test_converted_swin_computes_timm_swin_features():
    source = _randomize_norms(_timm_swin())
    converted, _ = convert_timm_swin_state_dict(source.state_dict(), prefix="")
    ours = detectron2.modeling.SwinTransformer(out_indices=(0, 1, 2, 3), drop_path_rate=0.0,
                                               **{k: list(v) if isinstance(v, tuple) else v
                                                  for k, v in SWIN.items()}).eval()
    _randomize_norms(ours)  # norm0..2 stay as they are (new in a dense backbone): known values
    missing, unexpected = ours.load_state_dict(converted, strict=False)
    assert not unexpected
    assert sorted(k for k in missing if "relative_position_index" not in k) == [
        f"norm{i}.{p}" for i in range(3) for p in ("bias", "weight")]
    x = torch.randn(1, 3, SWIN_IMG, SWIN_IMG)
    with torch.no_grad():
        stages = source.forward_intermediates(x, norm=False, intermediates_only=True)
        out = ours(x)
    for i, stage in enumerate(stages):
        norm = source.norm if i == 3 else getattr(ours, f"norm{i}")
        expected = F.layer_norm(stage.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight,
                                norm.bias, norm.eps).permute(0, 3, 1, 2)
        # same operations: measured max |diff| 0.0 (float32, this machine) on features of std
        # ~1.1; the bound leaves room for other kernels' reordering
        torch.testing.assert_close(out[f"p{i}"], expected, atol=1e-5, rtol=1e-5)


@main_only
def test_converted_vit_computes_timm_vit_features():
    """Without a class token (timm ``class_token=False``), the two networks are the same. With
    one, Detectron2's ViT drops it (as ViTDet does with MAE weights): the patches no longer
    attend to it, a change of the network and not of the names (measured: max |diff| 4e-4 on
    features of std 0.58 here, in float64 too), so that case is checked by names only above."""
    source = _randomize_norms(_timm_vit(class_token=False, global_pool="avg"))
    converted, opts = convert_timm_vit_state_dict(source.state_dict(), prefix="")
    assert opts[-1].endswith("pretrain_use_cls_token=False")
    ours = detectron2.modeling.ViT(img_size=224, pretrain_img_size=224, use_rel_pos=False,
                                   window_size=0, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                                   pretrain_use_cls_token=False, out_feature="last_feat",
                                   **VIT).eval()
    ours.load_state_dict(converted, strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        (expected,) = source.forward_intermediates(x, indices=1, norm=False,
                                                   intermediates_only=True)
        out = ours(x)["last_feat"]
    # float32 reordering only (timm's fused attention): measured max |diff| 2.4e-7 on features
    # of std 0.57 (this machine); a wrong name or layout gives differences of order 1
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@main_only
def test_tool_output_and_overrides_fill_the_swin_config(tmp_path, capsys):
    """What a user does: convert timm weights with the tool, then train the shipped Swin-T
    config with the printed overrides; the model's backbone holds exactly the source weights."""
    source = _timm_swin()
    src, out = tmp_path / "swin.pth", tmp_path / "converted" / "swin.pth"
    torch.save(source.state_dict(), src)
    convert_weights.main([str(src), str(out)])
    printed = capsys.readouterr().out.splitlines()
    assert "(timm Swin Transformer)" in printed[0]
    overrides = shlex.split(printed[1])  # as a shell passes them
    assert overrides[0] == f"train.init_checkpoint={out}"
    cfg = model_zoo.get_config("cityscapes/swin_t_pointrend.py", overrides)
    model = instantiate(cfg.model).eval()
    SafeCheckpointer(model).load(cfg.train.init_checkpoint)
    state = model.state_dict()
    for key, value in convert_timm_swin_state_dict(source.state_dict())[0].items():
        torch.testing.assert_close(state[key], value, atol=0, rtol=0)
    with torch.no_grad():
        (result,) = model([{"image": torch.randint(0, 255, (3, 96, 128)).float()}])
    assert result["sem_seg"].shape == (19, 96, 128)
