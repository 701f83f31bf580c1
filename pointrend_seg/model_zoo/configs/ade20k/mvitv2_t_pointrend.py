"""ADE20K (150 classes): MViTv2-T + DeepLabV3 coarse head (stride 16) + PointRend (point head on stride 4). Needs Detectron2 ``main``."""
from ..common.optim import poly_lr_multiplier

from ..common.data.ade20k import dataloader
from ..common.models.deeplabv3_pointrend import model
from ..common.models.transformers import mvitv2_t, pointrend_on
from ..common.optim import mvitv2_adamw
from ..common.train import train

model = pointrend_on(model, mvitv2_t(), coarse=("scale4", 384, 16), fine=("scale2", 96))
model.sem_seg_head.coarse_head.num_classes = 150
model.sem_seg_head.subdivision_num_points = 4096

optimizer = mvitv2_adamw(lr=1.6e-4)  # MViTv2's rules
train.update(max_iter=160000, eval_period=20000, amp=dict(enabled=True),
             init_checkpoint="detectron2://ImageNetPretrained/mvitv2/MViTv2_T_in1k.pyth")
lr_multiplier = poly_lr_multiplier(train.max_iter, warmup_iters=250)
