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
names but for ``norm``. The norms of the other outputs (``norm0`` ... ``norm{last-1}``) keep their
initialisation (identity), as in Detectron2 and Swin's own detection code.

=====================================================  ===========================================
timm ViT (``vit_*_patch*``, DeiT, AugReg, MAE)         Detectron2 ``ViT`` (``prefix`` +)
=====================================================  ===========================================
``patch_embed.proj.*``, ``pos_embed``, ``blocks.*``    the same (``pos_embed`` with or without the
                                                       class token's entry: ``pretrain_use_cls_token``)
``cls_token``, ``norm.*``, ``fc_norm.*``, ``head.*``   dropped (no class token in ViTDet)
=====================================================  ===========================================

Refused (:class:`~pointrend_seg.modeling.backbone.WeightConversionError`, saying why), having no
place in Detectron2's backbones: Swin V2 (continuous position bias), Swin with an absolute
position embedding, ViTs with layer scale, register tokens, a pre-norm (CLIP), q/k norms or
separate q/v biases (BEiT). Also refused: NaN or infinite weights, and tensors whose shapes do
not fit the architecture the others describe (:func:`_refuse_misfits`), which Detectron2 would
skip with a warning, leaving their random initialisation. The number of ViT heads is not in the
weights (qkv is 3 x dim either way): it must match the source model (ViT-S 6, ViT-B 12, ViT-L 16).

The functions only rename; they need neither timm nor Detectron2 ``main``.
"""
import math
import re
from typing import Dict, List, Tuple

import torch

from .convert import WeightConversionError, refuse_non_finite

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


def _block_shapes(dim: int, hidden: int) -> Dict[str, Tuple[int, ...]]:
    """The tensor shapes of a transformer block (Swin or ViT) of width ``dim``, MLP ``hidden``."""
    vector = (dim,)
    return {"norm1.weight": vector, "norm1.bias": vector, "norm2.weight": vector,
            "norm2.bias": vector, "attn.qkv.weight": (3 * dim, dim), "attn.qkv.bias": (3 * dim,),
            "attn.proj.weight": (dim, dim), "attn.proj.bias": vector,
            "mlp.fc1.weight": (hidden, dim), "mlp.fc1.bias": (hidden,),
            "mlp.fc2.weight": (dim, hidden), "mlp.fc2.bias": vector}


def _refuse_misfits(state_dict, expected: Dict[str, Tuple[int, ...]], source_name: str,
                    architecture: str) -> None:
    """Raise :class:`WeightConversionError` if a tensor of ``expected`` (name -> shape) is
    missing from ``state_dict`` or has another shape there, naming a few and the count."""
    problems = [f"{k} is {list(state_dict[k].shape)}, expected {list(shape)}"
                for k, shape in expected.items()
                if k in state_dict and tuple(state_dict[k].shape) != tuple(shape)]
    problems += [f"{k} is missing" for k in expected if k not in state_dict]
    if problems:
        raise WeightConversionError(
            f"{source_name}: {len(problems)} tensors do not fit the {architecture} that its other "
            f"tensors describe ({'; '.join(problems[:3])}"
            + (f"; and {len(problems) - 3} more)" if len(problems) > 3 else ")")
            + ": a damaged or edited file, or one of another architecture")


def _patch_embedding(state_dict, source_name: str) -> Tuple[int, int]:
    """(embedding dim C, patch size) from ``patch_embed.proj.weight``, (C, 3, p, p)."""
    proj = state_dict["patch_embed.proj.weight"]
    if proj.ndim != 4 or proj.shape[1] != 3 or proj.shape[2] != proj.shape[3]:
        raise WeightConversionError(
            f"{source_name}: patch_embed.proj.weight is {list(proj.shape)}, not the (C, 3, p, p) "
            "convolution of square patches of an RGB image")
    return int(proj.shape[0]), int(proj.shape[-1])


def _swin_shapes(state_dict, blocks: Dict[int, set], down_stages, timm_layout: bool,
                 source_name: str) -> Tuple[Dict[str, Tuple[int, ...]], str]:
    """(name -> shape of every tensor, the architecture in words) of a Swin Transformer as its
    patch embedding, first MLP and position-bias tables describe it."""
    dim, _ = _patch_embedding(state_dict, source_name)
    first = "layers.0.blocks.0."
    for key in ("mlp.fc1.weight", "attn.relative_position_bias_table"):
        if state_dict.get(first + key) is None or state_dict[first + key].ndim != 2:
            raise WeightConversionError(f"{source_name}: {first + key} is missing or not a matrix")
    hidden = int(state_dict[first + "mlp.fc1.weight"].shape[0])
    side = math.isqrt(int(state_dict[first + "attn.relative_position_bias_table"].shape[0]))
    expected = {"patch_embed.proj.bias": (dim,)}
    if "patch_embed.norm.weight" in state_dict:
        expected.update({"patch_embed.norm.weight": (dim,), "patch_embed.norm.bias": (dim,)})
    for stage, stage_blocks in blocks.items():
        width = dim * 2 ** stage
        table = state_dict.get(f"layers.{stage}.blocks.0.attn.relative_position_bias_table")
        heads = int(table.shape[-1]) if table is not None and table.ndim == 2 else 1
        if width % heads:
            raise WeightConversionError(
                f"{source_name}: stage {stage} has {heads} attention heads (its position-bias "
                f"table), which do not divide its width {width}")
        for block in stage_blocks:
            prefix = f"layers.{stage}.blocks.{block}."
            shapes = dict(_block_shapes(width, hidden * 2 ** stage),
                          **{"attn.relative_position_bias_table": (side * side, heads)})
            expected.update({prefix + k: v for k, v in shapes.items()})
    for stage in down_stages:
        merged = dim * 2 ** (stage - 1 if timm_layout else stage)  # the width merged from
        expected.update({f"layers.{stage}.downsample.norm.weight": (4 * merged,),
                         f"layers.{stage}.downsample.norm.bias": (4 * merged,),
                         f"layers.{stage}.downsample.reduction.weight": (2 * merged, 4 * merged)})
    last = dim * 2 ** max(blocks)
    expected.update({k: (last,) for k in ("norm.weight", "norm.bias") if k in state_dict})
    return expected, (f"Swin Transformer (embedding dim {dim}, window {(side + 1) // 2}, "
                      f"MLP width {hidden / dim:g} x dim)")


def convert_timm_swin_state_dict(
    state_dict: Dict[str, torch.Tensor], prefix: str = "backbone.",
    source_name: str = "the checkpoint",
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """
    Rename a timm (or official) Swin Transformer state dict for Detectron2's ``SwinTransformer``:
    ``(converted, overrides)``, the tensors under ``prefix`` and the LazyConfig overrides
    (``key=value``) of their architecture and of the PointRend heads' channels on ``p2`` / ``p0``.
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
    refuse_non_finite(state_dict, source_name)
    expected, architecture = _swin_shapes(state_dict, blocks, down_stages, timm_layout,
                                          source_name)
    _refuse_misfits(state_dict, expected, source_name, architecture)
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
    embed_dim, patch_size = _patch_embedding(state_dict, source_name)
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


def _vit_shapes(state_dict, source_name: str):
    """(name -> shape of every tensor, ``source_name``, the architecture in words) of a ViT."""
    dim, _ = _patch_embedding(state_dict, source_name)
    fc1 = state_dict.get("blocks.0.mlp.fc1.weight")
    if fc1 is None or fc1.ndim != 2:
        raise WeightConversionError(f"{source_name}: blocks.0.mlp.fc1.weight is missing or not "
                                    "a matrix")
    hidden = int(fc1.shape[0])
    pos = state_dict["pos_embed"]
    expected = {"patch_embed.proj.bias": (dim,),
                "pos_embed": (1, int(pos.shape[1]) if pos.ndim == 3 else -1, dim)}
    depth = 1 + max(int(m.group(1)) for m in map(_VIT_BLOCK.match, state_dict) if m)
    for block in range(depth):
        expected.update({f"blocks.{block}.{k}": v for k, v in _block_shapes(dim, hidden).items()})
    return expected, source_name, f"ViT (embedding dim {dim}, MLP width {hidden / dim:g} x dim)"


def convert_timm_vit_state_dict(
    state_dict: Dict[str, torch.Tensor], prefix: str = "backbone.net.",
    source_name: str = "the checkpoint",
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """
    Rename a timm ViT state dict for Detectron2's ``ViT`` (in ``SimpleFeaturePyramid``:
    ``backbone.net.``): ``(converted, overrides)`` as for Swin, without ``num_heads``, which is not
    in the weights.
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
    refuse_non_finite(state_dict, source_name)
    _refuse_misfits(state_dict, *_vit_shapes(state_dict, source_name))
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
    embed_dim, patch_size = _patch_embedding(state_dict, source_name)
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
