"""
PointRend on a transformer: a tiny ViT + SimpleFeaturePyramid (Detectron2 main's ViTDet backbone)
with the DeepLabV3 coarse head on the stride-16 level (p4) and the point head reading the stride-4
level (p2), on the CPU demo's data and budget. Needs Detectron2 ``main`` (v0.6 has no ViT).
The full-size ViT-B, Swin and MViTv2 configs are under cityscapes/ and ade20k/.
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from pointrend_seg.modeling.backbone.config_parts import layer_norm

from ..common.models.transformers import require_detectron2_main

from .deeplabv3_pointrend_synthetic import dataloader, lr_multiplier, model, optimizer, train

ViT, SimpleFeaturePyramid = require_detectron2_main("ViT", "SimpleFeaturePyramid")

width = 64
model.backbone = L(SimpleFeaturePyramid)(
    net=L(ViT)(  # 4 blocks of width 64, patches of 16: a ViT that trains on a CPU
        img_size=128, patch_size=16, embed_dim=width, depth=4, num_heads=4, mlp_ratio=4,
        qkv_bias=True, norm_layer=L(layer_norm)(eps=1e-6), drop_path_rate=0.0,
        window_size=0, use_rel_pos=False, out_feature="last_feat",
    ),
    in_feature="last_feat",
    out_channels=width,
    scale_factors=(4.0, 2.0, 1.0, 0.5),  # p2..p5, strides 4..32
    norm="LN",
)
head = model.sem_seg_head
head.coarse_head.update(input_shape=L(ShapeSpec)(channels=width, stride=16), in_feature="p4")
head.point_head.in_channels = width
head.in_features = ["p2"]
del head
train.output_dir = "output/demo-vit"
