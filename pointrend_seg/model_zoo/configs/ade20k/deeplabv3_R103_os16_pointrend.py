"""ADE20K twin of ade20k/deeplabv3_R103_os16_pointrend.yaml: DeepLabV3-R103 OS16 + PointRend, 150 classes."""
from ..common.optim import poly_lr_multiplier

from ..common.data.ade20k import dataloader
from ..common.models.deeplabv3_pointrend import init_checkpoint, model
from ..common.optim import SGD as optimizer
from ..common.train import train

model.sem_seg_head.coarse_head.num_classes = 150
model.sem_seg_head.subdivision_num_points = 4096
train.update(max_iter=160000, eval_period=20000, init_checkpoint=init_checkpoint,
             checkpointer=dict(period=5000))
lr_multiplier = poly_lr_multiplier(train.max_iter)  # poly 0.9, no warmup
