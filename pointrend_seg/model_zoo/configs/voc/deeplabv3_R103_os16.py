"""PASCAL VOC 2012 twin of voc/deeplabv3_R103_os16.yaml: DeepLabV3-R103 OS16, bilinear, 21 classes."""
from ..common.optim import poly_lr_multiplier

from ..common.data.voc import dataloader
from ..common.models.deeplabv3 import init_checkpoint, model
from ..common.optim import SGD as optimizer
from ..common.train import train

model.sem_seg_head.coarse_head.num_classes = 21
train.update(max_iter=30000, eval_period=5000, init_checkpoint=init_checkpoint,
             checkpointer=dict(period=5000))
lr_multiplier = poly_lr_multiplier(train.max_iter)  # poly 0.9, no warmup
