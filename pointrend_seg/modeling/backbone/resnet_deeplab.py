"""
DeepLab ResNet backbone: Detectron2's ResNet blocks with dilated res4/res5 (output stride 8 or 16),
multi-grid rates in res5 and an optional "deeplab" stem of three 3x3 convolutions.

Parameter names follow Detectron2's ResNet (``stem.conv1..3``, ``res2.0.conv1`` ...), so
checkpoints of Detectron2's DeepLab project (e.g. R-103) load without renaming.
"""
import torch.nn.functional as F
from fvcore.nn import weight_init

from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicStem, BottleneckBlock, ResNet

from ...config import ConfigError

__all__ = ["ThreeConvStem", "build_dilated_resnet_backbone"]

BLOCKS_PER_STAGE = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


class ThreeConvStem(CNNBlockBase):
    """
    The DeepLab / "ResNet-C" stem: three 3x3 convs (stride 2, 1, 1; widths C/2, C/2, C) with norm
    and ReLU, then a 3x3 max-pool of stride 2. Maps (N, in_channels, H, W) to
    (N, out_channels, H/4, W/4).
    """

    def __init__(self, in_channels=3, out_channels=128, norm="BN"):
        super().__init__(in_channels, out_channels, 4)
        widths = [in_channels, out_channels // 2, out_channels // 2, out_channels]
        for i in range(3):
            conv = Conv2d(
                widths[i],
                widths[i + 1],
                kernel_size=3,
                stride=2 if i == 0 else 1,
                padding=1,
                bias=False,
                norm=get_norm(norm, widths[i + 1]),
            )
            weight_init.c2_msra_fill(conv)
            self.add_module(f"conv{i + 1}", conv)

    def forward(self, x):
        for conv in (self.conv1, self.conv2, self.conv3):
            x = F.relu_(conv(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


def _check_dilations(res4_dilation, res5_dilation, multi_grid, num_res5_blocks):
    key = "MODEL.RESNETS"
    if res4_dilation not in (1, 2):
        raise ConfigError(f"{key}.RES4_DILATION must be 1 or 2, got {res4_dilation}")
    if res5_dilation not in (1, 2, 4):
        raise ConfigError(f"{key}.RES5_DILATION must be 1, 2 or 4, got {res5_dilation}")
    if res4_dilation == 2 and res5_dilation != 4:
        raise ConfigError(
            f"{key}.RES4_DILATION=2 (output stride 8) needs {key}.RES5_DILATION=4, "
            f"got {res5_dilation}"
        )
    if len(multi_grid) != num_res5_blocks:
        raise ConfigError(
            f"{key}.RES5_MULTI_GRID={list(multi_grid)} needs one rate per res5 block "
            f"({num_res5_blocks})"
        )


@BACKBONE_REGISTRY.register()
def build_dilated_resnet_backbone(cfg, input_shape: ShapeSpec):
    """
    Build the DeepLab ResNet from ``cfg.MODEL.RESNETS`` (DEPTH 50/101/152, STEM_TYPE,
    RES4_DILATION/RES5_DILATION for the output stride, RES5_MULTI_GRID, NORM, OUT_FEATURES) and
    ``cfg.MODEL.BACKBONE.FREEZE_AT``. ResNet-103 is DEPTH 101 with STEM_TYPE "deeplab".

    Returns:
        detectron2 ``ResNet`` whose ``output_shape()`` gives the true strides (e.g. res5: 16).
    """
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in BLOCKS_PER_STAGE:
        raise ConfigError(
            f"MODEL.RESNETS.DEPTH must be one of {sorted(BLOCKS_PER_STAGE)}, got {r.DEPTH}"
        )
    if any(r.DEFORM_ON_PER_STAGE):
        raise ConfigError("MODEL.RESNETS.DEFORM_ON_PER_STAGE: deformable convs are not supported")
    stage_names = ["res2", "res3", "res4", "res5"]
    unknown = [f for f in r.OUT_FEATURES if f not in ["stem"] + stage_names]
    if unknown or not set(r.OUT_FEATURES) & set(stage_names):
        raise ConfigError(
            f"MODEL.RESNETS.OUT_FEATURES={list(r.OUT_FEATURES)} must name stages among "
            f"{stage_names} (and optionally 'stem')"
        )
    num_blocks = BLOCKS_PER_STAGE[r.DEPTH]
    _check_dilations(r.RES4_DILATION, r.RES5_DILATION, r.RES5_MULTI_GRID, num_blocks[3])

    if r.STEM_TYPE == "basic":
        stem = BasicStem(input_shape.channels, r.STEM_OUT_CHANNELS, norm=r.NORM)
    elif r.STEM_TYPE == "deeplab":
        stem = ThreeConvStem(input_shape.channels, r.STEM_OUT_CHANNELS, norm=r.NORM)
    else:
        raise ConfigError(f"MODEL.RESNETS.STEM_TYPE must be 'basic' or 'deeplab', got {r.STEM_TYPE!r}")

    # Stages after the last requested one would get no gradient: they are not built.
    last_stage = max(stage_names.index(f) for f in r.OUT_FEATURES if f in stage_names)
    in_channels = r.STEM_OUT_CHANNELS
    out_channels = r.RES2_OUT_CHANNELS
    bottleneck_channels = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    dilations = [1, 1, r.RES4_DILATION, r.RES5_DILATION]
    stages = []
    for idx in range(last_stage + 1):
        dilation = dilations[idx]
        # res2 keeps the stem's stride; a dilated stage replaces its stride by the dilation.
        first_stride = 1 if idx == 0 or dilation > 1 else 2
        n = num_blocks[idx]
        if idx == 3:
            dilation_per_block = [dilation * rate for rate in r.RES5_MULTI_GRID]
        else:
            dilation_per_block = [dilation] * n
        stages.append(
            ResNet.make_stage(
                BottleneckBlock,
                n,
                in_channels=in_channels,
                out_channels=out_channels,
                bottleneck_channels=bottleneck_channels,
                stride_per_block=[first_stride] + [1] * (n - 1),
                dilation_per_block=dilation_per_block,
                num_groups=r.NUM_GROUPS,
                norm=r.NORM,
                stride_in_1x1=r.STRIDE_IN_1X1,
            )
        )
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return ResNet(stem, stages, out_features=r.OUT_FEATURES).freeze(cfg.MODEL.BACKBONE.FREEZE_AT)
