"""
ImageNet ResNet weights of torchvision and timm, renamed for :func:`build_dilated_resnet_backbone`
(Detectron2's ResNet parameter names), exactly: the converted backbone computes the source
network's res2..res5 features at output stride 32 (dilation only changes how res4/res5 apply the
same weights).
Which networks convert and which are refused, with why: README.md, "Weights".

=====================================================  ===========================================
torchvision / timm                                     ours (``prefix`` + ...)
=====================================================  ===========================================
``conv1.weight``, ``bn1.*`` (7x7 stem)                 ``stem.conv1.weight``, ``stem.conv1.norm.*``
``conv1.{0,3,6}.weight`` (timm "deep" stem)            ``stem.conv{1,2,3}.weight``
``conv1.{1,4}.*``, ``bn1.*`` (its norms)               ``stem.conv{1,2}.norm.*``, ``stem.conv3.norm.*``
``layer{i}.{j}.conv{k}.weight``, ``bn{k}.*``           ``res{i+1}.{j}.conv{k}.weight``, ``.norm.*``
``layer{i}.{j}.downsample.{0,1}.*``                    ``res{i+1}.{j}.shortcut.weight``, ``.norm.*``
``fc.*`` (classifier), ``*.num_batches_tracked``       dropped
=====================================================  ===========================================
"""
import re
from typing import Dict, List, Tuple

import torch

from detectron2.layers import ShapeSpec

from ...config import build_config
from .resnet_deeplab import BLOCKS_PER_STAGE, build_dilated_resnet_backbone

__all__ = [
    "WeightConversionError",
    "convert_resnet_state_dict",
    "refuse_non_finite",
    "unwrap_state_dict",
    "verify_converted_state_dict",
]

# ImageNet mean / std of torchvision's and timm's ResNets, on the 0..255 scale of our inputs.
IMAGENET_PIXEL_MEAN = [123.675, 116.28, 103.53]
IMAGENET_PIXEL_STD = [58.395, 57.12, 57.375]

_NORM_SUFFIXES = ("weight", "bias", "running_mean", "running_var")
_DEEP_STEM = {"conv1.0": "stem.conv1", "conv1.1": "stem.conv1.norm", "conv1.3": "stem.conv2",
              "conv1.4": "stem.conv2.norm", "conv1.6": "stem.conv3", "bn1": "stem.conv3.norm"}
_BASIC_STEM = {"conv1": "stem.conv1", "bn1": "stem.conv1.norm"}
_BLOCK_RE = re.compile(
    r"^layer(?P<stage>[1-4])\.(?P<block>\d+)\.(?P<module>conv[123]|bn[123]|downsample\.[01])"
    r"\.(?P<param>[a-z_]+)$"
)


class WeightConversionError(ValueError):
    """A state dict that cannot be converted exactly; the message says why."""


def unwrap_state_dict(obj, source_name: str = "the checkpoint") -> Dict[str, torch.Tensor]:
    """
    The tensor state dict inside a loaded checkpoint: ``obj`` itself, or its ``"state_dict"`` /
    ``"model"`` / ``"state_dict_ema"`` entry (as timm's and other training scripts save it), with
    a ``"module."`` prefix (DataParallel) removed.
    """
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise WeightConversionError(f"{source_name} holds no state dict")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise WeightConversionError(
            f"{source_name}: entries that are not tensors, e.g. {not_tensors[:3]}; expected a "
            "state dict of a torchvision or timm ResNet"
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def refuse_non_finite(state_dict: Dict[str, torch.Tensor], source_name: str) -> None:
    """Raise :class:`WeightConversionError` naming a few tensors (and their count) of
    ``state_dict`` that hold a NaN or an infinite value."""
    bad = [k for k, v in state_dict.items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise WeightConversionError(
            f"{source_name}: {len(bad)} of its {len(state_dict)} tensors hold NaN or infinite "
            f"values (e.g. {', '.join(bad[:3])}): the weights of a diverged or damaged training; "
            "a model initialised from them computes nothing")


def _check_convertible(state_dict, source_name) -> int:
    """The depth of a convertible torchvision / timm ResNet, else a WeightConversionError."""
    keys = list(state_dict)
    if any(".downsample.2." in k for k in keys):
        raise WeightConversionError(
            f"{source_name} has average-pool shortcuts (downsample.1 conv + downsample.2 norm: "
            "timm's resnet*d / resnet*e, avg_down=True); Detectron2's ResNet shortcut is a strided "
            "1x1 conv, so these weights cannot be converted exactly. Use a ResNet with conv "
            "shortcuts (torchvision, timm resnet50 / resnet50c / resnet50s ...)"
        )
    if "layer1.0.conv1.weight" in state_dict and "layer1.0.conv3.weight" not in state_dict:
        raise WeightConversionError(
            f"{source_name} is a ResNet with basic blocks (ResNet-18/34): "
            "build_dilated_resnet_backbone builds bottleneck blocks (depth 50, 101 or 152)"
        )
    if "layer1.0.conv3.weight" not in state_dict:
        raise WeightConversionError(
            f"{source_name} is not a torchvision/timm ResNet state dict (no "
            f"'layer1.0.conv3.weight'; first keys: {keys[:5]})"
        )
    blocks = [0, 0, 0, 0]
    for m in map(_BLOCK_RE.match, keys):
        if m:
            i = int(m["stage"]) - 1
            blocks[i] = max(blocks[i], int(m["block"]) + 1)
    depths = {tuple(v): d for d, v in BLOCKS_PER_STAGE.items()}
    if tuple(blocks) not in depths:
        raise WeightConversionError(
            f"{source_name} has {blocks} blocks per stage; build_dilated_resnet_backbone builds "
            f"depths {sorted(BLOCKS_PER_STAGE)} ({BLOCKS_PER_STAGE})"
        )
    return depths[tuple(blocks)]


def _stem(state_dict, source_name) -> Tuple[str, Dict[str, str], int]:
    """(STEM_TYPE, {source module: our module}, STEM_OUT_CHANNELS)."""
    if "conv1.weight" in state_dict:
        return "basic", _BASIC_STEM, state_dict["conv1.weight"].shape[0]
    if all(f"{m}.weight" in state_dict for m in ("conv1.0", "conv1.3", "conv1.6")):
        widths = [state_dict[f"{m}.weight"].shape[0] for m in ("conv1.0", "conv1.3", "conv1.6")]
        if widths[0] != widths[1] or widths[2] != 2 * widths[0]:
            raise WeightConversionError(
                f"{source_name} has a deep stem of widths {widths} (timm's 'deep_tiered' "
                "resnet*t?); our 'deeplab' stem has widths C/2, C/2, C"
            )
        return "deeplab", _DEEP_STEM, widths[2]
    raise WeightConversionError(
        f"{source_name} has neither a 7x7 stem ('conv1.weight') nor timm's deep stem "
        "('conv1.0/3/6.weight')"
    )


def convert_resnet_state_dict(
    state_dict: Dict[str, torch.Tensor], prefix: str = "backbone.",
    source_name: str = "the state dict",
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """
    Rename a torchvision / timm bottleneck ResNet state dict (tensors not copied) for
    ``build_dilated_resnet_backbone``, under ``prefix``; ``source_name`` names it in errors.

    Returns:
        (converted state dict, config overrides): the overrides (``KEY VALUE`` strings, as on a
        command line) build a backbone these weights fit: depth, stem, widths, groups,
        ``STRIDE_IN_1X1`` False, and RGB input with ImageNet mean / std.

    Raises:
        WeightConversionError: the network cannot be converted exactly (the message says why),
            it has parameters that would be left over, or weights that are not finite.
    """
    depth = _check_convertible(state_dict, source_name)
    refuse_non_finite(state_dict, source_name)
    stem_type, stem_map, stem_channels = _stem(state_dict, source_name)
    converted, leftover = {}, []
    for key, value in state_dict.items():
        module, _, param = key.rpartition(".")
        if param == "num_batches_tracked" or module == "fc":
            continue
        m = _BLOCK_RE.match(key)
        if module in stem_map:
            name = f"{stem_map[module]}.{param}"
        elif m:
            block = f"res{int(m['stage']) + 1}.{m['block']}"
            sub = m["module"]
            if sub.startswith("conv"):
                name = f"{block}.{sub}.{param}"
            elif sub.startswith("bn"):
                name = f"{block}.conv{sub[2]}.norm.{param}"
            elif sub == "downsample.0":
                name = f"{block}.shortcut.{param}"
            else:
                name = f"{block}.shortcut.norm.{param}"
        else:
            leftover.append(key)
            continue
        # Detectron2's convs next to a norm have no bias: a conv bias would have nowhere to go.
        if param not in (_NORM_SUFFIXES if ".norm." in name else ("weight",)):
            leftover.append(key)
            continue
        converted[prefix + name] = value
    if leftover:
        raise WeightConversionError(
            f"{source_name}: {len(leftover)} tensors have no counterpart in Detectron2's ResNet "
            f"(extra modules such as SE / attention / anti-aliasing?), e.g. {leftover[:5]}"
        )

    conv2 = state_dict["layer1.0.conv2.weight"]  # (bottleneck, bottleneck / groups, 3, 3)
    bottleneck = conv2.shape[0]
    groups = bottleneck // conv2.shape[1]
    opts = [
        "MODEL.RESNETS.DEPTH", str(depth),
        "MODEL.RESNETS.STEM_TYPE", stem_type,
        "MODEL.RESNETS.STEM_OUT_CHANNELS", str(stem_channels),
        "MODEL.RESNETS.RES2_OUT_CHANNELS", str(state_dict["layer1.0.conv3.weight"].shape[0]),
        "MODEL.RESNETS.NUM_GROUPS", str(groups),
        "MODEL.RESNETS.WIDTH_PER_GROUP", str(bottleneck // groups),
        "MODEL.RESNETS.STRIDE_IN_1X1", "False",
        "INPUT.FORMAT", "RGB",
        "MODEL.PIXEL_MEAN", str(IMAGENET_PIXEL_MEAN),
        "MODEL.PIXEL_STD", str(IMAGENET_PIXEL_STD),
    ]
    return converted, opts


def verify_converted_state_dict(
    converted: Dict[str, torch.Tensor], opts: List[str], prefix: str = "backbone."
) -> None:
    """
    Build ``build_dilated_resnet_backbone`` with the overrides ``opts`` (res2..res5, frozen BN)
    and check that ``converted`` fills every parameter and statistic with tensors of the right
    shape and has nothing else. Raises :class:`WeightConversionError` otherwise.
    """
    cfg = build_config(opts=list(opts) + [
        "MODEL.BACKBONE.NAME", "build_dilated_resnet_backbone", "MODEL.DEVICE", "cpu",
        "MODEL.RESNETS.NORM", "FrozenBN", "MODEL.RESNETS.OUT_FEATURES",
        "['res2', 'res3', 'res4', 'res5']",
    ])
    expected = build_dilated_resnet_backbone(cfg, ShapeSpec(channels=3)).state_dict()
    got = {k[len(prefix):]: v for k, v in converted.items() if k.startswith(prefix)}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(got) & set(expected) if got[k].shape != expected[k].shape)
    if missing or unexpected or wrong or len(got) != len(converted):
        raise WeightConversionError(
            f"the converted weights do not fit the backbone built with {opts}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}"
        )
