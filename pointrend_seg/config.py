"""Config keys of pointrend_seg, added on top of Detectron2's defaults."""
from detectron2.config import CfgNode as CN


def add_pointrend_seg_config(cfg):
    """
    Add the keys used by pointrend_seg to a Detectron2 config (in place).

    Keys that Detectron2's own DeepLab / PointRend projects also define keep the same names and
    meaning, so their YAML files read the same way here.
    """
    # ---- input ------------------------------------------------------------------------------
    # Retry a random crop until no single category covers more than this fraction of it.
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Photometric augmentation of the SSD paper (brightness, contrast, saturation, hue).
    cfg.INPUT.COLOR_AUG_SSD = False

    # ---- backbone: DeepLab ResNet -----------------------------------------------------------
    # "basic": one 7x7 conv; "deeplab": three 3x3 convs (ResNet-103 = ResNet-101 + deeplab stem).
    cfg.MODEL.RESNETS.STEM_TYPE = "deeplab"
    # Output stride 16: RES4_DILATION 1, RES5_DILATION 2. Output stride 8: 2 and 4.
    cfg.MODEL.RESNETS.RES4_DILATION = 1
    # Multi-grid unit rates of the three res5 blocks (multiplied by RES5_DILATION).
    cfg.MODEL.RESNETS.RES5_MULTI_GRID = [1, 2, 4]

    # ---- coarse head (DeepLabV3 / DeepLabV3+) ------------------------------------------------
    # Name in pointrend_seg's COARSE_HEAD_REGISTRY: "DeepLabV3" or "DeepLabV3Plus".
    cfg.MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME = "DeepLabV3"
    cfg.MODEL.SEM_SEG_HEAD.ASPP_CHANNELS = 256
    cfg.MODEL.SEM_SEG_HEAD.ASPP_DILATIONS = [6, 12, 18]
    cfg.MODEL.SEM_SEG_HEAD.ASPP_DROPOUT = 0.1
    cfg.MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV = False
    # DeepLabV3+ decoder: low-level features and their projected widths.
    cfg.MODEL.SEM_SEG_HEAD.PROJECT_FEATURES = ["res2"]
    cfg.MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS = [48]
    # "cross_entropy" or "hard_pixel_mining" (DeepLab's bootstrapped CE over the top-k % pixels).
    cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = "cross_entropy"
    cfg.MODEL.SEM_SEG_HEAD.HARD_PIXEL_TOP_K = 0.2

    # ---- PointRend -------------------------------------------------------------------------
    cfg.MODEL.POINT_HEAD = CN()
    # Name in pointrend_seg's POINT_HEAD_REGISTRY: "MLPPointHead" (paper) or "LinearPointHead".
    # The number of classes is MODEL.SEM_SEG_HEAD.NUM_CLASSES.
    cfg.MODEL.POINT_HEAD.NAME = "MLPPointHead"
    # Fine-grained feature maps sampled at each point.
    cfg.MODEL.POINT_HEAD.IN_FEATURES = ["res2"]
    cfg.MODEL.POINT_HEAD.FC_DIM = 256
    cfg.MODEL.POINT_HEAD.NUM_FC = 3
    # Re-concatenate the coarse prediction before every MLP layer.
    cfg.MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER = True
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
    # WarmupPolyLR (Detectron2's DeepLab project): lr = base * (1 - iter / max_iter) ** power.
    cfg.SOLVER.POLY_LR_POWER = 0.9
    cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0
    # "SGD" (Detectron2's, with SOLVER.MOMENTUM / NESTEROV) or "ADAMW".
    cfg.SOLVER.OPTIMIZER = "SGD"
    # Training metrics (console, OUTPUT_DIR/metrics.json, TensorBoard) are written every
    # LOG_PERIOD iterations, as medians over the last LOG_PERIOD iterations (1: raw values).
    cfg.SOLVER.LOG_PERIOD = 20
