"""pointrend_seg: PointRend on DeepLabV3 for semantic segmentation, as a Detectron2 plugin.

``import pointrend_seg`` registers the models and datasets in Detectron2's registries;
:func:`add_pointrend_seg_config` adds the keys. Layers: docs/architecture.md.
"""
import warnings

with warnings.catch_warnings():
    # Importing Detectron2 runs torch.jit.script, which warns on torch >= 2.9: silenced for these
    # imports only (the tools import pointrend_seg first, so Detectron2 is first imported here).
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

# Everything else is importable from its module, each listing its own __all__.
__all__ = [
    "BilinearSegHead", "GeneralizedSemanticSegmentor", "PointRendSegHead", "SemSegDatasetMapper",
    "add_pointrend_seg_config", "build_config", "build_dilated_resnet_backbone", "data",
    "model_zoo", "modeling", "prepare_for_inference",
]
