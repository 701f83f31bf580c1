"""
pointrend_seg: PointRend on DeepLabV3 for semantic segmentation, as a Detectron2 plugin.

``import pointrend_seg`` registers the meta-architecture, backbone, heads, point heads, point
samplers and datasets in Detectron2's registries; :func:`add_pointrend_seg_config` adds the keys;
:mod:`pointrend_seg.model_zoo` finds the shipped configs.

Layers (each imports only from the ones above it):
``config`` -> ``modeling`` / ``data`` / ``evaluation`` -> ``engine``; the tools sit on top.
"""
import warnings

with warnings.catch_warnings():
    # Importing Detectron2 (and fvcore) runs torch.jit.script on a few functions, and torch >= 2.9
    # prints a FutureWarning for each: noise that is neither ours nor our users' to fix. Silenced
    # here, once, for these imports only (torch.jit.script called later still warns). The tools
    # import pointrend_seg before Detectron2 so that this is where Detectron2 is first imported.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                            category=FutureWarning)
    try:
        import detectron2  # noqa: F401
        import detectron2.engine  # noqa: F401  (imports detectron2.modeling and fvcore.nn)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "pointrend_seg needs Detectron2, which is not on PyPI: install it with "
            "`python tools/install_detectron2.py` from a pointrend_seg checkout (Detectron2 v0.6, "
            "Python-only) or from https://github.com/facebookresearch/detectron2"
        ) from e

from . import data, model_zoo, modeling
from .config import add_pointrend_seg_config, build_config
from .data import SemSegDatasetMapper
from .modeling import (
    BilinearSegHead,
    GeneralizedSemanticSegmentor,
    PointRendSegHead,
    build_dilated_resnet_backbone,
    prepare_for_inference,
)

__version__ = "0.1.0"

# The public API of the package top; everything else is importable from its module (e.g.
# pointrend_seg.engine.Trainer, pointrend_seg.data.check_dataset), each listing its own __all__.
__all__ = [
    "BilinearSegHead", "GeneralizedSemanticSegmentor", "PointRendSegHead", "SemSegDatasetMapper",
    "add_pointrend_seg_config", "build_config", "build_dilated_resnet_backbone", "data",
    "model_zoo", "modeling", "prepare_for_inference",
]
