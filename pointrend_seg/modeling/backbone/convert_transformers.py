"""
ImageNet weights of timm's Swin Transformer and ViT, renamed for Detectron2 ``main``'s
``SwinTransformer`` and ``ViT`` backbones (the transformer configs:
``configs/{cityscapes,ade20k}/{swin_t,swin_b,vit_b}_pointrend.py``). Detectron2 hosts Swin-B/L
and MAE ViT weights already in its names, but no Swin-T and no supervised ViT; timm's
(``timm.create_model(name, pretrained=True).state_dict()`` or the ``model.safetensors`` of its
Hugging Face repositories) are in these names:

====================================================  ============================================
timm Swin (``swin_*_patch4_window*``, timm >= 0.9)    Detectron2 ``SwinTransformer`` (``prefix`` +)
====================================================  ============================================
``patch_embed.*``, ``layers.{i}.blocks.{j}.*``        the same
``layers.{i}.downsample.*`` (start of stage i)        ``layers.{i-1}.downsample.*`` (end of i-1)
``norm.*`` (after the last stage)                     ``norm{last}.*`` (the last output's norm)
``head.*``, ``*relative_position_index``,             dropped (buffers are rebuilt at init)
``*attn_mask``
====================================================  ============================================

The official Swin release's files (downsample at the end of a stage) are already in Detectron2's
names; they go through the same function (only ``norm`` and the dropped keys change). The norms
of the other outputs (``norm0`` ... ``norm{last-1}``) are new in a dense-prediction backbone and
keep their initialisation (identity), as in Detectron2 and Swin's own detection code.

=====================================================  ===========================================
timm ViT (``vit_*_patch*``, DeiT, AugReg, MAE)         Detectron2 ``ViT`` (``prefix`` +)
=====================================================  ===========================================
``patch_embed.proj.*``, ``pos_embed``, ``blocks.*``    the same (``pos_embed`` with or without the
                                                       class token's entry: ``pretrain_use_cls_token``)
``cls_token``, ``norm.*``, ``fc_norm.*``, ``head.*``   dropped (no class token in ViTDet)
=====================================================  ===========================================

Refused (:class:`~pointrend_seg.modeling.backbone.WeightConversionError`, saying why): Swin V2
(continuous position bias), Swin with an absolute position embedding, ViTs with layer scale,
register tokens, a pre-norm (CLIP), q/k norms or separate q/v biases (BEiT): Detectron2's
backbones have no place for them. The number of ViT heads is not in the weights (qkv is 3 x dim
either way): it must match the source model (ViT-S 6, ViT-B 12, ViT-L 16).

The functions only rename; they need neither timm nor Detectron2 ``main``.
``tests/test_convert_transformers.py`` checks on Detectron2 ``main`` that the converted backbones
compute the features of the timm networks they come from.
"""
import math
import re
from typing import Dict, List, Tuple

import torch

from .convert import WeightConversionError

__all__ = ["convert_timm_swin_state_dict", "convert_timm_vit_state_dict", "transformer_kind"]

_SWIN_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_SWIN_DOWN = re.compile(r"^layers\.(\d+)\.downsample\.(.+)$")
_VIT_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_VIT_BLOCK_PARAMS = {
    f"{m}.{p}" for m in ("norm1", "norm2", "attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    for p in ("weight", "bias")
}


def transformer_kind(state_dict: Dict[str, torch.Tensor]) -> str:
    """``"swin"``, ``"vit"`` or ``""`` (neither: e.g. a ResNet) for a state dict's names."""
    if any(_SWIN_BLOCK.match(k) for k in state_dict):
        return "swin"
    if "patch_embed.proj.weight" in state_dict and any(_VIT_BLOCK.match(k) for k in state_dict):
        return "vit"
    return ""


def _refuse(source_name, keys, why):
    if keys:
        raise WeightConversionError(f"{source_name} has {sorted(keys)[:3]}: {why}")


def convert_timm_swin_state_dict(
    state_dict: Dict[str, torch.Tensor], prefix: str = "backbone.",
    source_name: str = "the checkpoint",
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """
    Rename a timm (or official) Swin Transformer state dict for Detectron2's ``SwinTransformer``.

    Returns ``(converted, overrides)``: the renamed tensors under ``prefix`` and the LazyConfig
    overrides (``key=value`` strings) of the architecture they come from (``embed_dim``,
    ``depths``, ``num_heads``, ``window_size``, ``mlp_ratio``, and the channels of the PointRend
    model's heads on ``p2`` and ``p0``, as ``pointrend_on`` sets them in the shipped configs).
    """
    keys = list(state_dict)
    _refuse(source_name, [k for k in keys if "cpb_mlp" in k or "logit_scale" in k],
            "that is Swin V2 (continuous position bias), not Detectron2's SwinTransformer")
    _refuse(source_name, [k for k in keys if "absolute_pos_embed" in k],
            "an absolute position embedding; Detectron2's Swin configs have none (ape=False)")
    blocks: Dict[int, set] = {}
    for k in keys:
        m = _SWIN_BLOCK.match(k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if "patch_embed.proj.weight" not in state_dict or not blocks:
        raise WeightConversionError(f"{source_name} is not a Swin Transformer state dict (no "
                                    "'patch_embed.proj.weight' / 'layers.*.blocks.*')")
    stages = sorted(blocks)
    if stages != list(range(len(stages))):
        raise WeightConversionError(f"{source_name}: Swin stages {stages} are not 0..n-1")
    last = stages[-1]
    down_stages = {int(m.group(1)) for m in map(_SWIN_DOWN.match, keys) if m}
    # timm >= 0.9 merges patches at the start of stages 1..last; the official release (and
    # Detectron2) at the end of stages 0..last-1.
    timm_layout = last in down_stages
    converted = {}
    for k, v in state_dict.items():
        if k.endswith("relative_position_index") or k.endswith("attn_mask") or k.startswith("head"):
            continue
        m = _SWIN_DOWN.match(k)
        if m:
            stage = int(m.group(1)) - 1 if timm_layout else int(m.group(1))
            name = f"layers.{stage}.downsample.{m.group(2)}"
        elif k.startswith("norm."):
            name = f"norm{last}." + k[len("norm."):]
        elif k.startswith("patch_embed.") or _SWIN_BLOCK.match(k):
            name = k
        else:
            raise WeightConversionError(
                f"{source_name} has {k!r}, which Detectron2's SwinTransformer has no place for")
        converted[prefix + name] = v
    proj = state_dict["patch_embed.proj.weight"]
    embed_dim, patch_size = proj.shape[0], proj.shape[-1]
    num_heads, window = [], None
    for i in stages:
        table = state_dict[f"layers.{i}.blocks.0.attn.relative_position_bias_table"]
        num_heads.append(int(table.shape[1]))
        window = (math.isqrt(table.shape[0]) + 1) // 2
    hidden = state_dict["layers.0.blocks.0.mlp.fc1.weight"].shape[0]
    overrides = [
        f"model.backbone.embed_dim={embed_dim}",
        f"model.backbone.depths=[{','.join(str(len(blocks[i])) for i in stages)}]",
        f"model.backbone.num_heads=[{','.join(map(str, num_heads))}]",
        f"model.backbone.window_size={window}",
        f"model.backbone.patch_size={patch_size}",
    ]
    if hidden != 4 * embed_dim:
        overrides.append(f"model.backbone.mlp_ratio={hidden / embed_dim:g}")
    overrides += [f"model.sem_seg_head.coarse_head.input_shape.channels={embed_dim * 4}",
                  f"model.sem_seg_head.point_head.in_channels={embed_dim}"]
    return converted, overrides


def convert_timm_vit_state_dict(
    state_dict: Dict[str, torch.Tensor], prefix: str = "backbone.net.",
    source_name: str = "the checkpoint",
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """
    Rename a timm ViT state dict for Detectron2's ``ViT`` (inside ``SimpleFeaturePyramid``:
    ``prefix`` ``backbone.net.``).

    Returns ``(converted, overrides)``: the renamed tensors and the LazyConfig overrides of the
    architecture (``embed_dim``, ``depth``, ``patch_size``, ``pretrain_img_size``,
    ``pretrain_use_cls_token``); ``num_heads`` is not in the weights (module docstring).
    """
    keys = list(state_dict)
    _refuse(source_name, [k for k in keys if ".ls1." in k or ".ls2." in k or k.endswith("gamma_1")],
            "layer scale, which Detectron2's ViT blocks do not have")
    _refuse(source_name, [k for k in keys if k == "reg_token"],
            "register tokens, which Detectron2's ViT does not have")
    _refuse(source_name, [k for k in keys if k.startswith("norm_pre")],
            "a pre-norm (CLIP-style), which Detectron2's ViT does not have")
    _refuse(source_name, [k for k in keys if "q_norm" in k or "k_norm" in k or "q_bias" in k],
            "q/k norms or separate q/v biases, which Detectron2's ViT attention does not have")
    if "patch_embed.proj.weight" not in state_dict or "pos_embed" not in state_dict:
        raise WeightConversionError(f"{source_name} is not a ViT state dict (no "
                                    "'patch_embed.proj.weight' / 'pos_embed')")
    converted, depth = {}, 0
    for k, v in state_dict.items():
        if k in ("cls_token", "dist_token") or k.split(".")[0] in ("norm", "fc_norm", "head",
                                                                     "head_dist"):
            continue
        m = _VIT_BLOCK.match(k)
        if m:
            if m.group(2) not in _VIT_BLOCK_PARAMS:
                raise WeightConversionError(
                    f"{source_name} has {k!r}, which Detectron2's ViT blocks have no place for")
            depth = max(depth, int(m.group(1)) + 1)
        elif k not in ("pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"):
            raise WeightConversionError(
                f"{source_name} has {k!r}, which Detectron2's ViT has no place for")
        converted[prefix + k] = v
    proj = state_dict["patch_embed.proj.weight"]
    embed_dim, patch_size = proj.shape[0], proj.shape[-1]
    tokens = state_dict["pos_embed"].shape[1]
    if math.isqrt(tokens) ** 2 == tokens:
        grid, cls = math.isqrt(tokens), False
    elif math.isqrt(tokens - 1) ** 2 == tokens - 1:
        grid, cls = math.isqrt(tokens - 1), True
    else:
        raise WeightConversionError(
            f"{source_name}: pos_embed has {tokens} positions, neither a square grid nor a "
            "square grid + a class token (distilled / multi-token ViTs are not supported)")
    overrides = [
        f"model.backbone.net.embed_dim={embed_dim}",
        f"model.backbone.net.depth={depth}",
        f"model.backbone.net.patch_size={patch_size}",
        f"model.backbone.net.pretrain_img_size={grid * patch_size}",
        f"model.backbone.net.pretrain_use_cls_token={cls}",
    ]
    return converted, overrides
