"""
pointrend_seg: PointRend on DeepLabV3 for semantic segmentation, as a Detectron2 plugin.

``import pointrend_seg`` registers the meta-architecture, backbone, heads, point heads, point
samplers and datasets in Detectron2's registries; :func:`add_pointrend_seg_config` adds the keys.
"""
from . import data, modeling
from .config import add_pointrend_seg_config
from .data import SemSegDatasetMapper
from .modeling import (
    CoarseSegHead,
    PointRendSegHead,
    PointRendSemanticSegmentor,
    build_dilated_resnet_backbone,
)

__version__ = "0.1.0"
