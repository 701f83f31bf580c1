"""The tiny ViT + SimpleFeaturePyramid of vit_pointrend_synthetic.py with bilinear upsampling of
the stride-16 logits instead of PointRend (the baseline). Needs Detectron2 ``main``."""
from detectron2.config import LazyCall as L

from pointrend_seg.modeling import BilinearSegHead

from .vit_pointrend_synthetic import dataloader, lr_multiplier, model, optimizer, train

model.sem_seg_head = L(BilinearSegHead)(
    coarse_head=model.sem_seg_head.coarse_head, ignore_value=255, loss_weight=1.0,
    hard_pixel_top_k=1.0)
train.output_dir = "output/demo-vit-bilinear"
