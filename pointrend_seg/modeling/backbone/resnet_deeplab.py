"""
DeepLab ResNet backbone: Detectron2's ResNet blocks with dilated res4/res5 (output stride 8 or 16),
multi-grid rates in res5 and an optional "deeplab" stem of three 3x3 convolutions, with
Detectron2's parameter names (checkpoints of its DeepLab project, e.g. R-103, load as they are).
"""
import torch.nn.functional as F
from fvcore.nn import weight_init

from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicStem, BottleneckBlock, ResNet

from ...config import ConfigError

__all__ = ["ThreeConvStem", "build_dilated_resnet_backbone", "dilated_resnet"]

BLOCKS_PER_STAGE = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


class ThreeConvStem(CNNBlockBase):
    """
    The DeepLab / "ResNet-C" stem: three 3x3 convs (stride 2, 1, 1; widths C/2, C/2, C) with norm
    and ReLU, then a 3x3 max-pool of stride 2: (N, in_channels, H, W) -> (N, C, H/4, W/4).
    """

    def __init__(self, in_channels=3, out_channels=128, norm="BN"):
        super().__init__(in_channels, out_channels, 4)
        widths = [in_channels, out_channels // 2, out_channels // 2, out_channels]
        for i in range(3):
            conv = Conv2d(widths[i], widths[i + 1], kernel_size=3, stride=2 if i == 0 else 1,
                          padding=1, bias=False, norm=get_norm(norm, widths[i + 1]))
            weight_init.c2_msra_fill(conv)
            self.add_module(f"conv{i + 1}", conv)

    def forward(self, x):
        for conv in (self.conv1, self.conv2, self.conv3):
            x = F.relu_(conv(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


_KEY = "MODEL.RESNETS"


def dilated_resnet(
    *, depth: int = 50, stem_type: str = "deeplab", stem_out_channels: int = 128,
    res2_out_channels: int = 256, num_groups: int = 1, width_per_group: int = 64,
    stride_in_1x1: bool = False, norm: str = "BN", res4_dilation: int = 1,
    res5_dilation: int = 2, res5_multi_grid=(1, 2, 4), out_features=("res2", "res5"),
    freeze_at: int = 0, in_channels: int = 3, deform_on_per_stage=(False,) * 4,
) -> ResNet:
    """
    The DeepLab ResNet from the plain arguments ``LazyCall`` needs (the ``MODEL.RESNETS`` keys
    in lower case): a Detectron2 ``ResNet`` whose ``output_shape()`` gives the true strides.
    res4 / res5 dilations 1, 2 give output stride 16, 2, 4 stride 8; ResNet-103 is depth 101 with
    the deeplab stem of 128 channels. Each bad value is a ``ConfigError`` naming its key.
    """
    if depth not in BLOCKS_PER_STAGE:
        raise ConfigError(f"{_KEY}.DEPTH must be one of {sorted(BLOCKS_PER_STAGE)}, got {depth}")
    if any(deform_on_per_stage):
        raise ConfigError(f"{_KEY}.DEFORM_ON_PER_STAGE: deformable convs are not supported")
    stage_names = ["res2", "res3", "res4", "res5"]
    out_features = list(out_features)
    unknown = [f for f in out_features if f not in ["stem"] + stage_names]
    if unknown or not set(out_features) & set(stage_names):
        raise ConfigError(
            f"{_KEY}.OUT_FEATURES={out_features} must name stages among "
            f"{stage_names} (and optionally 'stem')"
        )
    num_blocks = BLOCKS_PER_STAGE[depth]
    if res4_dilation not in (1, 2):
        raise ConfigError(f"{_KEY}.RES4_DILATION must be 1 or 2, got {res4_dilation}")
    if res5_dilation not in (1, 2, 4):
        raise ConfigError(f"{_KEY}.RES5_DILATION must be 1, 2 or 4, got {res5_dilation}")
    if res4_dilation == 2 and res5_dilation != 4:
        raise ConfigError(f"{_KEY}.RES4_DILATION=2 (output stride 8) needs "
                          f"{_KEY}.RES5_DILATION=4, got {res5_dilation}")
    if len(res5_multi_grid) != num_blocks[3]:
        raise ConfigError(f"{_KEY}.RES5_MULTI_GRID={list(res5_multi_grid)} needs one rate per "
                          f"res5 block ({num_blocks[3]})")

    if stem_type == "basic":
        stem = BasicStem(in_channels, stem_out_channels, norm=norm)
    elif stem_type == "deeplab":
        stem = ThreeConvStem(in_channels, stem_out_channels, norm=norm)
    else:
        raise ConfigError(f"{_KEY}.STEM_TYPE must be one of ['basic', 'deeplab'], "
                          f"got {stem_type!r}")

    # Stages after the last requested one would get no gradient: they are not built.
    last_stage = max(stage_names.index(f) for f in out_features if f in stage_names)
    in_channels = stem_out_channels
    out_channels = res2_out_channels
    bottleneck_channels = num_groups * width_per_group
    dilations = [1, 1, res4_dilation, res5_dilation]
    stages = []
    for idx in range(last_stage + 1):
        dilation = dilations[idx]
        # res2 keeps the stem's stride; a dilated stage replaces its stride by the dilation.
        first_stride = 1 if idx == 0 or dilation > 1 else 2
        n = num_blocks[idx]
        stages.append(ResNet.make_stage(
            BottleneckBlock, n, in_channels=in_channels, out_channels=out_channels,
            bottleneck_channels=bottleneck_channels, num_groups=num_groups, norm=norm,
            stride_per_block=[first_stride] + [1] * (n - 1), stride_in_1x1=stride_in_1x1,
            dilation_per_block=([dilation * rate for rate in res5_multi_grid] if idx == 3
                                else [dilation] * n),
        ))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return ResNet(stem, stages, out_features=out_features).freeze(freeze_at)


@BACKBONE_REGISTRY.register()
def build_dilated_resnet_backbone(cfg, input_shape: ShapeSpec):
    """:func:`dilated_resnet` of ``cfg.MODEL.RESNETS`` and ``cfg.MODEL.BACKBONE.FREEZE_AT``."""
    r = cfg.MODEL.RESNETS
    return dilated_resnet(
        depth=r.DEPTH, stem_type=r.STEM_TYPE, stem_out_channels=r.STEM_OUT_CHANNELS,
        res2_out_channels=r.RES2_OUT_CHANNELS, num_groups=r.NUM_GROUPS,
        width_per_group=r.WIDTH_PER_GROUP, stride_in_1x1=r.STRIDE_IN_1X1, norm=r.NORM,
        res4_dilation=r.RES4_DILATION, res5_dilation=r.RES5_DILATION,
        res5_multi_grid=list(r.RES5_MULTI_GRID), out_features=list(r.OUT_FEATURES),
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT, in_channels=input_shape.channels,
        deform_on_per_stage=list(r.DEFORM_ON_PER_STAGE),
    )
