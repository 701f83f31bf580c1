"""Cityscapes fine (19 classes), the twin of cityscapes/deeplabv3_R103_os8.yaml: DeepLabV3-R103 OS8, bilinear."""
from ..common.optim import poly_lr_multiplier

from ..common.data.cityscapes import dataloader
from ..common.models.deeplabv3 import init_checkpoint, model
from ..common.optim import SGD as optimizer
from ..common.train import train

# output stride 8: res4 and res5 dilated, the coarse head on stride-8 res5 (3 steps)
model.backbone.update(res4_dilation=2, res5_dilation=4)
model.sem_seg_head.coarse_head.input_shape.stride = 8
train.update(max_iter=90000, eval_period=10000, init_checkpoint=init_checkpoint,
             checkpointer=dict(period=5000))
lr_multiplier = poly_lr_multiplier(train.max_iter)  # poly 0.9, no warmup
