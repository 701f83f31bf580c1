"""
The CPU demo as a LazyConfig, the twin of demo/deeplabv3_pointrend_synthetic.yaml: a narrow
DeepLabV3-R50 (output stride 8) + PointRend on the synthetic shapes, trained from scratch with
AdamW. Trains with Detectron2's tools/lazyconfig_train_net.py or ours:

    python tools/train_net.py --config-file configs/demo/deeplabv3_pointrend_synthetic.py
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from ..common.optim import poly_lr_multiplier

from ..common.data.synthetic import dataloader
from ..common.models.deeplabv3_pointrend import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

# narrow ResNet-50 with the deeplab stem, output stride 8, plain BN (one CPU process)
model.backbone.update(depth=50, stem_out_channels=32, width_per_group=16, res2_out_channels=64,
                      norm="BN", res4_dilation=2, res5_dilation=4)
head = model.sem_seg_head
head.coarse_head.update(input_shape=L(ShapeSpec)(channels=512, stride=8), aspp_channels=64,
                        aspp_dilations=[1, 2, 3], norm="BN", num_classes=5)
head.point_head.update(in_channels=64, fc_dim=64)  # res2 has 64 channels here
head.update(train_num_points=512, subdivision_num_points=1024,
            hard_pixel_top_k=1.0)  # plain cross-entropy
del head

train.update(output_dir="output/demo", max_iter=800, eval_period=0, device="cpu", seed=1,
             checkpointer=dict(period=400))
lr_multiplier = poly_lr_multiplier(train.max_iter, warmup_iters=50)
