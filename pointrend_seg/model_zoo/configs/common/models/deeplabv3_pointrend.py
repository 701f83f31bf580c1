"""
DeepLabV3-R103 (output stride 16) + PointRend as a LazyConfig: the model of
Base-DeepLabV3-R103.yaml + Base-DeepLabV3-PointRend.yaml, as a LazyCall tree of pointrend_seg's
classes with plain arguments. Dataset configs set the classes (``num_classes`` of the coarse
head; the point head follows), the ignore value and the points.
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from pointrend_seg.modeling import (
    DeepLabV3,
    GeneralizedSemanticSegmentor,
    MLPPointHead,
    PointRendSegHead,
)
from pointrend_seg.modeling.backbone import dilated_resnet

model = L(GeneralizedSemanticSegmentor)(
    backbone=L(dilated_resnet)(
        depth=101,
        stem_type="deeplab",  # ResNet-103: ResNet-101 with three 3x3 convs in the stem
        stem_out_channels=128,
        norm="SyncBN",
        res4_dilation=1,
        res5_dilation=2,  # output stride 16 (res4 2 and res5 4: stride 8)
        res5_multi_grid=[1, 2, 4],
        out_features=["res2", "res5"],
        freeze_at=0,
    ),
    sem_seg_head=L(PointRendSegHead)(
        coarse_head=L(DeepLabV3)(
            input_shape=L(ShapeSpec)(channels=2048, stride=16),  # res5: its channels and stride
            in_feature="res5",
            aspp_channels=256,
            aspp_dilations=[6, 12, 18],
            aspp_dropout=0.1,
            norm="SyncBN",
            num_classes=19,
        ),
        point_head=L(MLPPointHead)(
            in_channels=256,  # res2
            num_classes="${..coarse_head.num_classes}",
            fc_dim=256,
            num_fc=3,
            coarse_pred_each_layer=True,
        ),
        in_features=["res2"],
        train_num_points=2048,
        oversample_ratio=3,  # k: k * N random candidates
        importance_sample_ratio=0.75,  # beta: the beta * N most uncertain candidates
        subdivision_num_points=8192,
        subdivision_steps=-1,  # log2 of the coarse stride
        ignore_value=255,
        loss_weight=1.0,
        hard_pixel_top_k=0.2,  # DeepLab's recipe: cross-entropy over the 20% hardest pixels
        point_loss_weight=1.0,
    ),
    # ImageNet mean / std of RGB 0-255 inputs
    pixel_mean=[123.675, 116.280, 103.530],
    pixel_std=[58.395, 57.120, 57.375],
)
# DeepLab's ImageNet ResNet-103 (loaded as it is); train.init_checkpoint of the dataset configs
init_checkpoint = "detectron2://DeepLab/R-103.pkl"
