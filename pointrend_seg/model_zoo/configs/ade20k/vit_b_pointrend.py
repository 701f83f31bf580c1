"""ADE20K (150 classes): ViT-B/16 (MAE) + SimpleFeaturePyramid + DeepLabV3 coarse head (stride 16) + PointRend (point head on stride 4). Needs Detectron2 ``main``."""
from ..common.optim import poly_lr_multiplier

from ..common.data.ade20k import dataloader
from ..common.models.deeplabv3_pointrend import model
from ..common.models.transformers import vit_b, pointrend_on
from ..common.optim import vit_adamw
from ..common.train import train

model = pointrend_on(model, vit_b(), coarse=("p4", 256, 16), fine=("p2", 256))
model.sem_seg_head.coarse_head.num_classes = 150
model.sem_seg_head.subdivision_num_points = 4096

optimizer = vit_adamw(num_layers=12, lr_decay_rate=0.7)  # ViTDet's rules
train.update(max_iter=160000, eval_period=20000, amp=dict(enabled=True),
             init_checkpoint="detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_base.pth?matching_heuristics=True")
lr_multiplier = poly_lr_multiplier(train.max_iter, warmup_iters=250)
