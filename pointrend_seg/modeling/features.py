"""Checks of the config keys that name backbone feature maps (``IN_FEATURES``, ...)."""
from typing import Dict, List

from detectron2.layers import ShapeSpec

from .backbone import build_dilated_resnet_backbone

__all__ = ["missing_feature_problems"]


def missing_feature_problems(cfg, key: str, names, input_shape: Dict[str, ShapeSpec]) -> List[str]:
    """
    The problem (a one-item list, or empty) of config ``key`` naming feature maps ``names`` that
    the backbone does not produce (``input_shape``: its ``output_shape()``), saying which key
    decides the backbone's outputs.
    """
    missing = [f for f in names if f not in input_shape]
    if not missing:
        return []
    if cfg.MODEL.BACKBONE.NAME == build_dilated_resnet_backbone.__name__:
        origin = f"MODEL.RESNETS.OUT_FEATURES={list(cfg.MODEL.RESNETS.OUT_FEATURES)}"
    else:
        origin = f"the outputs of MODEL.BACKBONE.NAME={cfg.MODEL.BACKBONE.NAME!r}"
    return [f"{key}={list(names)}: {missing} not among the backbone outputs "
            f"{sorted(input_shape)} ({origin})"]
