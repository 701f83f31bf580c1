"""ADE20K (150 classes): Swin-T + DeepLabV3 coarse head (stride 16) + PointRend (point head on stride 4). Needs Detectron2 ``main``."""
from ..common.optim import poly_lr_multiplier

from ..common.data.ade20k import dataloader
from ..common.models.deeplabv3_pointrend import model
from ..common.models.transformers import swin, pointrend_on
from ..common.optim import swin_adamw
from ..common.train import train

model = pointrend_on(model, swin(), coarse=("p2", 384, 16), fine=("p0", 96))
model.sem_seg_head.coarse_head.num_classes = 150
model.sem_seg_head.subdivision_num_points = 4096

optimizer = swin_adamw(lr=1e-4)  # Swin's rules
# Detectron2 hosts no Swin-T ImageNet weights (only Swin-B / L, used by the swin_b configs): start
# from timm's (swin_tiny_patch4_window7_224) converted by tools/convert_weights.py, which prints
# train.init_checkpoint=..., or from the official Swin release's file (already in these names).
train.update(max_iter=160000, eval_period=20000, amp=dict(enabled=True), init_checkpoint="")
lr_multiplier = poly_lr_multiplier(train.max_iter, warmup_iters=250)
