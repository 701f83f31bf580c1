"""Cityscapes fine (19 classes): ViT-B/16 (MAE) + SimpleFeaturePyramid + DeepLabV3 coarse head (stride 16) + PointRend (point head on stride 4). Needs Detectron2 ``main``."""
from functools import partial

from pointrend_seg.engine.lazy import poly_lr_multiplier

from ..common.data.cityscapes import dataloader
from ..common.models.deeplabv3_pointrend import model
from ..common.models.transformers import vit_b, pointrend_on
from ..common.optim import AdamW as optimizer
from ..common.train import train

model = pointrend_on(model, vit_b(), coarse=("p4", 256, 16), fine=("p2", 256))
# ViTDet's rules: layer-wise LR decay 0.7 over the 12 blocks, no weight decay on the position embedding
optimizer.update(lr=1e-4, weight_decay=0.1)
from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate  # noqa: E402  (main only)

optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, num_layers=12, lr_decay_rate=0.7)
optimizer.params.overrides = {"pos_embed": {"weight_decay": 0.0}}
train.update(max_iter=90000, eval_period=10000, amp=dict(enabled=True),
             init_checkpoint="detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_base.pth?matching_heuristics=True")
lr_multiplier = poly_lr_multiplier(train.max_iter, warmup_iters=250)
