"""CamVid twin of camvid/deeplabv3_R103_os16_pointrend.yaml: DeepLabV3-R103 OS16 + PointRend, 11 classes, void (11) ignored."""
from ..common.optim import poly_lr_multiplier

from ..common.data.camvid import dataloader
from ..common.models.deeplabv3_pointrend import init_checkpoint, model
from ..common.optim import SGD as optimizer
from ..common.train import train

model.sem_seg_head.coarse_head.num_classes = 11
model.sem_seg_head.ignore_value = 11
model.sem_seg_head.train_num_points = 1024
model.sem_seg_head.subdivision_num_points = 2048
train.update(max_iter=20000, eval_period=2000, init_checkpoint=init_checkpoint,
             checkpointer=dict(period=2000))
lr_multiplier = poly_lr_multiplier(train.max_iter)  # poly 0.9, no warmup
