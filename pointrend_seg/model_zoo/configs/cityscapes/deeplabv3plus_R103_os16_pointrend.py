"""Cityscapes fine (19 classes), the twin of cityscapes/deeplabv3plus_R103_os16_pointrend.yaml: DeepLabV3+-R103 OS16 + PointRend (stride-4 logits, 2 steps)."""
from ..common.optim import poly_lr_multiplier

from ..common.data.cityscapes import dataloader
from ..common.models.deeplabv3plus_pointrend import init_checkpoint, model
from ..common.optim import SGD as optimizer
from ..common.train import train

train.update(max_iter=90000, eval_period=10000, init_checkpoint=init_checkpoint,
             checkpointer=dict(period=5000))
lr_multiplier = poly_lr_multiplier(train.max_iter)  # poly 0.9, no warmup
