"""
The config layer: pointrend_seg's keys (:func:`add_pointrend_seg_config`), one way to build a
config (:func:`build_config`) and the error type of invalid configs (:class:`ConfigError`).

Each component checks its own keys in its ``from_config``; checks that need the datasets live in
the engine. Nothing here imports the rest of the package.
"""
import os

import torch

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.projects.deeplab import add_deeplab_config

__all__ = [
    "ConfigError",
    "add_pointrend_seg_config",
    "build_config",
    "missing_feature_problems",
    "raise_config_problems",
]


class ConfigError(ValueError):
    """An inconsistent configuration; the message names the keys and values."""


def raise_config_problems(problems) -> None:
    """Raise one :class:`ConfigError` listing ``problems`` (strings), if there are any."""
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))


def missing_feature_problems(cfg, key: str, names, input_shape) -> list:
    """
    The problem (a one-item list, or empty) of config ``key`` naming feature maps ``names`` that
    the backbone does not produce (``input_shape``: its ``output_shape()``).
    """
    missing = [f for f in names if f not in input_shape]
    if not missing:
        return []
    if cfg.MODEL.BACKBONE.NAME == "build_dilated_resnet_backbone":
        origin = f"MODEL.RESNETS.OUT_FEATURES={list(cfg.MODEL.RESNETS.OUT_FEATURES)}"
    else:
        origin = f"the outputs of MODEL.BACKBONE.NAME={cfg.MODEL.BACKBONE.NAME!r}"
    return [f"{key}={list(names)}: {missing} not among the backbone outputs "
            f"{sorted(input_shape)} ({origin})"]


def add_pointrend_seg_config(cfg):
    """
    Add the keys used by pointrend_seg to a Detectron2 config (in place).

    Detectron2's DeepLab keys come from its own ``add_deeplab_config`` (crop retry, poly LR,
    ASPP, DeepLabV3+ projections, ResNet stem / dilation / multi-grid), with one default changed:
    ``MODEL.SEM_SEG_HEAD.LOSS_TYPE`` is "cross_entropy". Keys that Detectron2's PointRend project
    also defines keep the same names and meaning, so their YAML files read the same way here.
    """
    add_deeplab_config(cfg)
    # ---- input ------------------------------------------------------------------------------
    # Photometric augmentation of the SSD paper (brightness, contrast, saturation, hue).
    cfg.INPUT.COLOR_AUG_SSD = False

    # ---- coarse head (DeepLabV3 / DeepLabV3+ / any Detectron2 head) --------------------------
    # Name in pointrend_seg's COARSE_HEAD_REGISTRY: "DeepLabV3", "DeepLabV3Plus", or
    # "SemSegHeadAdapter" for the head of Detectron2's SEM_SEG_HEADS_REGISTRY named below.
    cfg.MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME = "DeepLabV3"
    # "cross_entropy" (here the default; Detectron2's DeepLab project defaults to the other) or
    # "hard_pixel_mining" (bootstrapped CE over the HARD_PIXEL_TOP_K fraction of hardest pixels).
    cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = "cross_entropy"
    cfg.MODEL.SEM_SEG_HEAD.HARD_PIXEL_TOP_K = 0.2

    # ---- PointRend -------------------------------------------------------------------------
    cfg.MODEL.POINT_HEAD = CN()
    # Name in pointrend_seg's POINT_HEAD_REGISTRY: "MLPPointHead" (paper) or "LinearPointHead".
    # The number of classes is MODEL.SEM_SEG_HEAD.NUM_CLASSES.
    cfg.MODEL.POINT_HEAD.NAME = "MLPPointHead"
    # Fine-grained feature maps sampled at each point; empty: the backbone output of the smallest
    # stride (res2 of our ResNet, p2 of an FPN), the paper's choice.
    cfg.MODEL.POINT_HEAD.IN_FEATURES = []
    cfg.MODEL.POINT_HEAD.FC_DIM = 256
    cfg.MODEL.POINT_HEAD.NUM_FC = 3
    # Re-concatenate the coarse prediction before every MLP layer.
    cfg.MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER = True
    # With COARSE_HEAD_NAME "SemSegHeadAdapter": the head of Detectron2's SEM_SEG_HEADS_REGISTRY
    # whose layers(features) give the coarse logits (as in Detectron2's PointRend project).
    cfg.MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME = "SemSegFPNHead"
    # Name in pointrend_seg's POINT_SAMPLER_REGISTRY.
    cfg.MODEL.POINT_HEAD.SAMPLER = "UncertaintyPointSampler"
    # Training: N points per image, k (over-generation) and beta (importance fraction).
    cfg.MODEL.POINT_HEAD.TRAIN_NUM_POINTS = 2048
    cfg.MODEL.POINT_HEAD.OVERSAMPLE_RATIO = 3
    cfg.MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO = 0.75
    cfg.MODEL.POINT_HEAD.LOSS_WEIGHT = 1.0
    # Inference: N points re-predicted per subdivision step.
    cfg.MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS = 8192
    # -1: as many 2x steps as it takes to go from the coarse stride to the input resolution.
    cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS = -1

    # ---- evaluation ------------------------------------------------------------------------
    # Boundary F-score and Boundary IoU next to mIoU (pointrend_seg.evaluation.BoundaryEvaluator).
    cfg.TEST.BOUNDARY_EVAL = CN()
    cfg.TEST.BOUNDARY_EVAL.ENABLED = True
    # BF distance tolerance and Boundary-IoU band width, as fractions of the image diagonal.
    cfg.TEST.BOUNDARY_EVAL.BF_TOLERANCE = 0.0075
    cfg.TEST.BOUNDARY_EVAL.BIOU_DILATION = 0.02

    # Sliding-window inference for images larger than what fits (or what the model was trained
    # on): windows of SIZE (h, w) every STRIDE (h, w) pixels, overlaps blended by "mean" or "hann".
    cfg.TEST.SLIDING_WINDOW = CN()
    cfg.TEST.SLIDING_WINDOW.ENABLED = False
    cfg.TEST.SLIDING_WINDOW.SIZE = (512, 1024)
    cfg.TEST.SLIDING_WINDOW.STRIDE = (341, 683)
    cfg.TEST.SLIDING_WINDOW.BLEND = "mean"
    # Multi-scale + flip test-time augmentation uses Detectron2's TEST.AUG keys (ENABLED,
    # MIN_SIZES: short sides in pixels, MAX_SIZE, FLIP); class probabilities are averaged.

    # ---- solver ----------------------------------------------------------------------------
    # WarmupPolyLR (SOLVER.POLY_LR_POWER / POLY_LR_CONSTANT_ENDING from add_deeplab_config).
    # "SGD" (Detectron2's, with SOLVER.MOMENTUM / NESTEROV) or "ADAMW"; fused on CUDA.
    cfg.SOLVER.OPTIMIZER = "SGD"
    # Mixed-precision training when SOLVER.AMP.ENABLED (Detectron2's key): "float16" (with loss
    # scaling, Detectron2's AMP) or "bfloat16" (no loss scaling needed; CPU and recent GPUs).
    cfg.SOLVER.AMP.PRECISION = "float16"
    # Train in channels_last memory format (faster convolutions on GPUs with bf16/fp16).
    cfg.SOLVER.CHANNELS_LAST = False
    # Training metrics (console, OUTPUT_DIR/metrics.json, TensorBoard) are written every
    # LOG_PERIOD iterations, as medians over the last LOG_PERIOD iterations (1: raw values).
    cfg.SOLVER.LOG_PERIOD = 20


def build_config(config_file: str = "", opts=()):
    """
    Detectron2 defaults + :func:`add_pointrend_seg_config` + a YAML file (``_BASE_`` supported)
    + ``KEY VALUE`` overrides. Raises if the config asks for CUDA on a machine without it.
    """
    cfg = get_cfg()
    add_pointrend_seg_config(cfg)
    if config_file and not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file not found: {config_file}")
    try:
        if config_file:
            cfg.merge_from_file(config_file)
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError) as e:  # yacs: unknown key
        if "POINT_HEAD.NUM_CLASSES" in str(e):
            raise ConfigError(
                "MODEL.POINT_HEAD.NUM_CLASSES is not a pointrend_seg key: the point head predicts "
                "MODEL.SEM_SEG_HEAD.NUM_CLASSES classes. Remove MODEL.POINT_HEAD.NUM_CLASSES "
                f"(from {config_file or 'the command line'}) and set "
                "MODEL.SEM_SEG_HEAD.NUM_CLASSES"
            ) from None
        raise
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"MODEL.DEVICE={cfg.MODEL.DEVICE!r} but no CUDA device is available; "
            "add 'MODEL.DEVICE cpu' to the command line"
        )
    return cfg
