"""DeepLabV3-R103 (output stride 16) with bilinear upsampling: the PointRend model's twin
without PointRend (the baseline); same backbone and coarse head."""
from detectron2.config import LazyCall as L

from pointrend_seg.modeling import BilinearSegHead

from .deeplabv3_pointrend import init_checkpoint, model

_pointrend = model.sem_seg_head
model.sem_seg_head = L(BilinearSegHead)(
    coarse_head=_pointrend.coarse_head,
    ignore_value=_pointrend.ignore_value,
    loss_weight=_pointrend.loss_weight,
    hard_pixel_top_k=_pointrend.hard_pixel_top_k,
)
del _pointrend
__all__ = ["init_checkpoint", "model"]
