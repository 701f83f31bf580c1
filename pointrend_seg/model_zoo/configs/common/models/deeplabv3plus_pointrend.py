"""DeepLabV3+-R103 (ASPP at output stride 16, decoder with res2: stride-4 logits) + PointRend
(2 subdivision steps)."""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from pointrend_seg.modeling import DeepLabV3Plus

from .deeplabv3_pointrend import init_checkpoint, model

_head = model.sem_seg_head.coarse_head
model.sem_seg_head.coarse_head = L(DeepLabV3Plus)(
    input_shape={"res2": L(ShapeSpec)(channels=256, stride=4),
                 "res5": L(ShapeSpec)(channels=2048, stride=16)},
    in_feature="res5",
    project_features=["res2"],
    project_channels=[48],
    decoder_channels=256,
    aspp_channels=_head.aspp_channels,
    aspp_dilations=_head.aspp_dilations,
    aspp_dropout=_head.aspp_dropout,
    norm=_head.norm,
    num_classes=_head.num_classes,
)
del _head
__all__ = ["init_checkpoint", "model"]
