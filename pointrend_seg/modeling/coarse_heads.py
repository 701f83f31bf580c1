"""
Coarse heads: backbone features -> class logits at the coarse stride (8 or 16 for DeepLabV3, 4 for
DeepLabV3+). They only predict (losses and upsampling belong to ``semantic_heads.py``), hence a
registry of their own rather than Detectron2's ``SEM_SEG_HEADS_REGISTRY``, whose members
:class:`SemSegHeadAdapter` makes coarse heads (:func:`build_coarse_head`).
"""
from typing import Dict, List

import torch
from fvcore.nn import weight_init
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import ASPP, Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from detectron2.utils.registry import Registry

from ..config import ConfigError, check_arguments, is_int, is_number, raise_config_problems
from .backbone import build_dilated_resnet_backbone
from .point_heads import _init_predictor

__all__ = [
    "COARSE_HEAD_REGISTRY",
    "DeepLabV3",
    "DeepLabV3Plus",
    "SemSegHeadAdapter",
    "build_coarse_head",
    "missing_feature_problems",
]

COARSE_HEAD_REGISTRY = Registry("POINTREND_SEG_COARSE_HEAD")
COARSE_HEAD_REGISTRY.__doc__ = """
Coarse heads: ``forward(features: dict[str, Tensor]) -> logits (N, K, H / s, W / s)`` with the
stride ``s`` in the attribute ``output_stride``. Built with ``obj(cfg, input_shape)``.
"""


def missing_feature_problems(cfg, key: str, names, input_shape: Dict[str, ShapeSpec]) -> List[str]:
    """
    The problem (a one-item list, or empty) of config ``key`` naming maps ``names`` that are not
    among the backbone's outputs ``input_shape``, saying which key decides those.
    """
    missing = [f for f in names if f not in input_shape]
    if not missing:
        return []
    if cfg.MODEL.BACKBONE.NAME == build_dilated_resnet_backbone.__name__:
        origin = f"MODEL.RESNETS.OUT_FEATURES={list(cfg.MODEL.RESNETS.OUT_FEATURES)}"
    else:
        origin = f"the outputs of MODEL.BACKBONE.NAME={cfg.MODEL.BACKBONE.NAME!r}"
    return [f"{key}={list(names)}: {missing} not among the backbone outputs "
            f"{sorted(input_shape)} ({origin})"]


def _in_feature(cfg, input_shape: Dict[str, ShapeSpec], why: str, *more_keys: str) -> str:
    """The one name of ``MODEL.SEM_SEG_HEAD.IN_FEATURES`` (else a ``ConfigError`` saying ``why``);
    it and the maps of the ``MODEL.SEM_SEG_HEAD`` keys ``more_keys`` must be backbone outputs."""
    h = cfg.MODEL.SEM_SEG_HEAD
    if len(h.IN_FEATURES) != 1:
        raise ConfigError(f"MODEL.SEM_SEG_HEAD.IN_FEATURES={list(h.IN_FEATURES)}: {why}")
    raise_config_problems([
        problem for key in ("IN_FEATURES",) + more_keys
        for problem in missing_feature_problems(cfg, f"MODEL.SEM_SEG_HEAD.{key}", h[key],
                                                input_shape)
    ])
    return h.IN_FEATURES[0]


def _check_aspp_arguments(owner, num_classes, aspp_channels, aspp_dilations, aspp_dropout):
    """The values both config kinds pass to an ASPP coarse head (:func:`check_arguments`)."""
    key = "MODEL.SEM_SEG_HEAD."
    check_arguments(owner, [
        (key + "NUM_CLASSES", "num_classes", num_classes, is_int(num_classes) and num_classes >= 2,
         "an integer >= 2 (one logit per class, softmax: a foreground/background task has 2)"),
        (key + "ASPP_CHANNELS", "aspp_channels", aspp_channels,
         is_int(aspp_channels) and aspp_channels >= 1, "an integer >= 1"),
        (key + "ASPP_DILATIONS", "aspp_dilations", aspp_dilations,
         len(aspp_dilations) == 3 and all(is_int(d) and d >= 1 for d in aspp_dilations),
         "3 integers >= 1 (the rates of ASPP's three atrous convs)"),
        (key + "ASPP_DROPOUT", "aspp_dropout", aspp_dropout,
         is_number(aspp_dropout) and 0.0 <= aspp_dropout < 1.0, "in [0, 1)"),
    ])


def _aspp_args(cfg):
    h = cfg.MODEL.SEM_SEG_HEAD
    return {
        "aspp_channels": h.ASPP_CHANNELS,
        "aspp_dilations": list(h.ASPP_DILATIONS),
        "aspp_dropout": h.ASPP_DROPOUT,
        "norm": h.NORM,
        "num_classes": h.NUM_CLASSES,
        "use_depthwise_separable_conv": h.USE_DEPTHWISE_SEPARABLE_CONV,
    }


@COARSE_HEAD_REGISTRY.register()
class DeepLabV3(nn.Module):
    """
    DeepLabV3 (Chen et al. 2017): ASPP (1x1 conv, three atrous 3x3 convs, image pooling; then a
    1x1 projection and dropout) on one feature map, then a 1x1 classifier.
    The image pooling is global, so any input size works.
    """

    @configurable
    def __init__(
        self, *, input_shape: ShapeSpec, in_feature: str, aspp_channels: int,
        aspp_dilations: List[int], aspp_dropout: float, norm: str, num_classes: int,
        use_depthwise_separable_conv: bool = False,
    ):
        super().__init__()
        _check_aspp_arguments("DeepLabV3", num_classes, aspp_channels, list(aspp_dilations),
                              aspp_dropout)
        self.in_feature = in_feature
        self.output_stride = input_shape.stride
        self.aspp = ASPP(
            input_shape.channels, aspp_channels, aspp_dilations, norm=norm, activation=F.relu,
            dropout=aspp_dropout, use_depthwise_separable_conv=use_depthwise_separable_conv,
        )
        self.predictor = _init_predictor(Conv2d(aspp_channels, num_classes, kernel_size=1))

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        name = _in_feature(cfg, input_shape, "the DeepLabV3 coarse head takes exactly one "
                           "feature map (e.g. ['res5'])")
        return {"input_shape": input_shape[name], "in_feature": name, **_aspp_args(cfg)}

    def forward(self, features):
        return self.predictor(self.aspp(features[self.in_feature]))


@COARSE_HEAD_REGISTRY.register()
class DeepLabV3Plus(nn.Module):
    """
    DeepLabV3+ (Chen et al. 2018): ASPP on the coarsest feature map, then for each low-level map
    (coarse to fine) upsample, concatenate its 1x1 projection, and fuse with two 3x3 convs;
    a 1x1 classifier at the stride of the finest projected map (4 with ``res2``).
    """

    @configurable
    def __init__(
        self, *, input_shape: Dict[str, ShapeSpec], in_feature: str, project_features: List[str],
        project_channels: List[int], decoder_channels: int, aspp_channels: int,
        aspp_dilations: List[int], aspp_dropout: float, norm: str, num_classes: int,
        use_depthwise_separable_conv: bool = False,
    ):
        super().__init__()
        _check_aspp_arguments("DeepLabV3Plus", num_classes, aspp_channels, list(aspp_dilations),
                              aspp_dropout)
        if len(project_features) != len(project_channels):
            raise ConfigError(
                f"MODEL.SEM_SEG_HEAD.PROJECT_FEATURES={list(project_features)} and "
                f"PROJECT_CHANNELS={list(project_channels)} must have the same length"
            )
        self.in_feature = in_feature
        # coarse to fine
        self.project_features = sorted(project_features, key=lambda f: -input_shape[f].stride)
        self.output_stride = input_shape[self.project_features[-1]].stride
        self.aspp = ASPP(
            input_shape[in_feature].channels, aspp_channels, aspp_dilations, norm=norm,
            activation=F.relu, dropout=aspp_dropout,
            use_depthwise_separable_conv=use_depthwise_separable_conv,
        )
        widths = dict(zip(project_features, project_channels))
        use_bias = norm == ""
        self.project = nn.ModuleDict()
        self.fuse = nn.ModuleDict()
        channels = aspp_channels
        for f in self.project_features:
            proj = Conv2d(input_shape[f].channels, widths[f], kernel_size=1, bias=use_bias,
                          norm=get_norm(norm, widths[f]), activation=F.relu)
            weight_init.c2_xavier_fill(proj)
            fuse = []
            for i in range(2):
                conv = Conv2d(
                    (channels + widths[f]) if i == 0 else decoder_channels, decoder_channels,
                    kernel_size=3, padding=1, bias=use_bias,
                    norm=get_norm(norm, decoder_channels), activation=F.relu,
                )
                weight_init.c2_xavier_fill(conv)
                fuse.append(conv)
            self.project[f] = proj
            self.fuse[f] = nn.Sequential(*fuse)
            channels = decoder_channels
        self.predictor = _init_predictor(Conv2d(channels, num_classes, kernel_size=1))

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        h = cfg.MODEL.SEM_SEG_HEAD
        in_feature = _in_feature(cfg, input_shape, "the ASPP input of DeepLabV3+ is one feature "
                                 "map (low-level ones go in PROJECT_FEATURES)", "PROJECT_FEATURES")
        return {
            "input_shape": input_shape, "in_feature": in_feature,
            "project_features": list(h.PROJECT_FEATURES),
            "project_channels": list(h.PROJECT_CHANNELS), "decoder_channels": h.CONVS_DIM,
            **_aspp_args(cfg),
        }

    def forward(self, features):
        y = self.aspp(features[self.in_feature])
        for f in self.project_features:
            x = self.project[f](features[f])
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
            y = self.fuse[f](torch.cat([x, y], dim=1))
        return self.predictor(y)


class SemSegHeadAdapter(nn.Module):
    """
    A head of Detectron2's ``SEM_SEG_HEADS_REGISTRY`` as a coarse head: its ``layers(features)``
    are the (N, K, H / s, W / s) coarse logits, s = its ``common_stride`` (as in Detectron2's
    PointRend project; ``SemSegFPNHead`` and ``DeepLabV3PlusHead`` have them), its losses and
    upsampling unused. ``MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME`` (Detectron2 PointRend's
    ``MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME``) names it; its keys are ``MODEL.SEM_SEG_HEAD.*``.
    """

    @configurable
    def __init__(self, *, head: nn.Module, output_stride: int):
        super().__init__()
        self.head = head
        self.output_stride = output_stride

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        key = "MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME"
        name = cfg.MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME
        if name not in SEM_SEG_HEADS_REGISTRY:
            hint = (" (pointrend_seg's former name of the adapter: name the Detectron2 head "
                    "itself, e.g. 'SemSegFPNHead')" if name == "SemSegHeadAdapter" else "")
            raise ConfigError(
                f"{key}={name!r} names no coarse head{hint}: ours are "
                f"{sorted(n for n, _ in COARSE_HEAD_REGISTRY)}; a head of Detectron2's "
                "SEM_SEG_HEADS_REGISTRY with layers() and common_stride works too (registered: "
                f"{sorted(n for n, _ in SEM_SEG_HEADS_REGISTRY)})"
            )
        head_class = SEM_SEG_HEADS_REGISTRY.get(name)
        if head_class.__module__.startswith(__package__ + "."):
            # our semantic heads build a coarse head themselves: this adapter again, and so on
            raise ConfigError(
                f"{key}={name!r} is one of pointrend_seg's heads, which take a coarse head "
                "themselves: name the Detectron2 head that gives the coarse logits, e.g. "
                "'SemSegFPNHead'"
            )
        head = head_class(cfg, input_shape)
        stride = getattr(head, "common_stride", None)
        if not callable(getattr(head, "layers", None)) or not isinstance(stride, int):
            raise ConfigError(
                f"{key}={name!r}: {type(head).__name__} needs a layers(features) method returning "
                "coarse logits and an int attribute common_stride (their stride), as Detectron2's "
                "SemSegFPNHead has"
            )
        return {"head": head, "output_stride": stride}

    def forward(self, features):
        return self.head.layers(features)


def build_coarse_head(cfg, input_shape: Dict[str, ShapeSpec]):
    """
    Build the head named by ``cfg.MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME``: one of
    ``COARSE_HEAD_REGISTRY`` ("DeepLabV3", "DeepLabV3Plus"), else a Detectron2 head (e.g.
    "SemSegFPNHead") in a :class:`SemSegHeadAdapter`.
    """
    name = cfg.MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME
    if name in COARSE_HEAD_REGISTRY:
        return COARSE_HEAD_REGISTRY.get(name)(cfg, input_shape)
    return SemSegHeadAdapter(cfg, input_shape)
