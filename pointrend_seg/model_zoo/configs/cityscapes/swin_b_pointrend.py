"""Cityscapes fine (19 classes): Swin-B (IN-22k) + DeepLabV3 coarse head (stride 16) + PointRend (point head on stride 4). Needs Detectron2 ``main``."""
from ..common.optim import poly_lr_multiplier

from ..common.data.cityscapes import dataloader
from ..common.models.deeplabv3_pointrend import model
from ..common.models.transformers import swin, pointrend_on
from ..common.optim import swin_adamw
from ..common.train import train

model = pointrend_on(model, swin(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.4), coarse=("p2", 512, 16), fine=("p0", 128))
optimizer = swin_adamw(lr=4e-5)  # Swin's rules
train.update(max_iter=90000, eval_period=10000, amp=dict(enabled=True),
             init_checkpoint="detectron2://ImageNetPretrained/swin/swin_base_patch4_window7_224_22k.pth")
lr_multiplier = poly_lr_multiplier(train.max_iter, warmup_iters=250)
