"""
The benchmark's models (random weights, ``MODEL.WEIGHTS`` empty, 19 classes, built after
``torch.manual_seed``) and inputs:

* ``ours_pointrend``: DeepLabV3-R103-OS16 + PointRend (``cityscapes/..._os16_pointrend.yaml``);
* ``ours_deeplabv3``: the same without PointRend (``..._os16.yaml``, bilinear upsampling);
* ``ref_deeplabv3``: Detectron2's DeepLab project, ``SemanticSegmentor`` + ``DeepLabV3Head`` on
  ``build_resnet_deeplab_backbone`` (R-103, deeplab stem, OS16, multi-grid 1-2-4), with
  ``INPUT.CROP.ENABLED False`` so that its ASPP pools globally (any input size);
* ``ref_pointrend_fpn``: Detectron2's PointRend project, ``SemanticSegmentor`` +
  ``PointRendSemSegHead`` (``SemSegFPNHead`` coarse head) on R-101-FPN, as its Semantic FPN
  Cityscapes config.

Ours can also be measured after ``prepare_for_inference`` (``ModelSpec.preparable``).
"""
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

__all__ = [
    "DESCRIPTIONS",
    "HEADS",
    "HEAD_NAMES",
    "IGNORE_VALUE",
    "MODEL_NAMES",
    "NARROW_OPTS",
    "NUM_CLASSES",
    "OURS_DEEPLAB_CONFIG",
    "OURS_POINTREND_CONFIG",
    "REFERENCE_OF",
    "SIZE_DIVISIBILITY",
    "ModelSpec",
    "build_ours",
    "build_ref_deeplabv3",
    "build_ref_pointrend_fpn",
    "default_model_specs",
    "make_inputs",
    "merge_opts",
    "ours_cfg",
    "ref_deeplabv3_cfg",
    "ref_pointrend_fpn_cfg",
    "resolve_config_file",
]

OURS_POINTREND_CONFIG = "cityscapes/deeplabv3_R103_os16_pointrend.yaml"
OURS_DEEPLAB_CONFIG = "cityscapes/deeplabv3_R103_os16.yaml"

MODEL_NAMES = ("ours_pointrend", "ours_deeplabv3", "ref_deeplabv3", "ref_pointrend_fpn")
HEADS = "heads"  # the name of the head-level comparison in ``--models``
HEAD_NAMES = ("head_ours", "head_ref")
# ours -> the reference it is compared with
REFERENCE_OF = {
    "ours_pointrend": "ref_pointrend_fpn",
    "ours_deeplabv3": "ref_deeplabv3",
    "head_ours": "head_ref",
}
NUM_CLASSES = 19
IGNORE_VALUE = 255
# Input sizes must be multiples of this: the FPN reference pads to 32, the DeepLab reference
# does not pad at all and needs a multiple of its stride (16).
SIZE_DIVISIBILITY = 32

_DEFAULT_CONFIG = {"ours_pointrend": OURS_POINTREND_CONFIG, "ours_deeplabv3": OURS_DEEPLAB_CONFIG}

DESCRIPTIONS = {
    "ours_pointrend": "ours: GeneralizedSemanticSegmentor, DeepLabV3 R-103 OS16 + PointRendSegHead",
    "ours_deeplabv3": "ours: GeneralizedSemanticSegmentor, DeepLabV3 R-103 OS16 + BilinearSegHead "
                      "(bilinear)",
    "ref_deeplabv3": "detectron2 DeepLab project: SemanticSegmentor + DeepLabV3Head, "
                     "build_resnet_deeplab_backbone R-103 OS16",
    "ref_pointrend_fpn": "detectron2 PointRend project: SemanticSegmentor + PointRendSemSegHead "
                         "(SemSegFPNHead), R-101-FPN",
    "head_ours": "ours: PointRendSegHead.inference (subdivision only; prepared: "
                 "FastPointRendSegHead)",
    "head_ref": "detectron2 PointRendSemSegHead subdivision (same coarse logits, features, "
                "point-head weights)",
}

# Narrow R-50 variants, for smoke tests only (``narrow=True``): never for reported numbers.
_NARROW_BACKBONE = [
    "MODEL.RESNETS.DEPTH", 50, "MODEL.RESNETS.STEM_OUT_CHANNELS", 32,
    "MODEL.RESNETS.WIDTH_PER_GROUP", 16, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
]
NARROW_OPTS = {
    "ours_pointrend": _NARROW_BACKBONE + [
        "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", 64, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 64,
        "MODEL.POINT_HEAD.FC_DIM", 64,
    ],
    "ours_deeplabv3": _NARROW_BACKBONE + [
        "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", 64, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 64,
    ],
    "ref_deeplabv3": _NARROW_BACKBONE + [
        "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", 64, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 64,
    ],
    "ref_pointrend_fpn": _NARROW_BACKBONE + [
        "MODEL.FPN.OUT_CHANNELS", 64, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 64,
        "MODEL.POINT_HEAD.FC_DIM", 64,
    ],
}



def make_inputs(batch: int, size, *, device, seed: int = 0, num_classes: int = NUM_CLASSES,
                with_labels: bool = False, ignore_fraction: float = 0.05) -> List[Dict]:
    """
    Detectron2-style inputs: ``batch`` dicts with ``image`` (3, H, W) float32 in [0, 255] and,
    with ``with_labels``, ``sem_seg`` (H, W) int64 in [0, num_classes) with a fraction of
    ``IGNORE_VALUE``. Deterministic in ``seed``; created on ``device``.
    """
    h, w = size
    gen = torch.Generator().manual_seed(seed)
    inputs = []
    for _ in range(batch):
        x = {"image": (torch.rand(3, h, w, generator=gen) * 255).to(device)}
        if with_labels:
            labels = torch.randint(0, num_classes, (h, w), generator=gen)
            labels[torch.rand(h, w, generator=gen) < ignore_fraction] = IGNORE_VALUE
            x["sem_seg"] = labels.to(device)
        inputs.append(x)
    return inputs




@dataclass
class ModelSpec:
    """
    A model of the benchmark: ``build(device)`` returns it on ``device`` (random weights);
    ``preparable``: also measured after ``prepare_for_inference`` (ours).
    """

    name: str
    build: Callable[[str], nn.Module]
    description: str = ""
    reference: Optional[str] = None
    info: Dict = field(default_factory=dict)
    preparable: bool = False


def _build_from_cfg(cfg, seed):
    from detectron2.modeling import build_model

    torch.manual_seed(seed)
    model = build_model(cfg)
    model.eval()
    return model


def resolve_config_file(config_file: str) -> str:
    """A YAML / Python config path as given, or else a config shipped with the package
    (``pointrend_seg.model_zoo``, e.g. "cityscapes/deeplabv3_R103_os16.yaml")."""
    from pointrend_seg import model_zoo

    return config_file if os.path.isfile(config_file) else model_zoo.get_config_file(config_file)


def ours_cfg(config_file, device, opts=(), num_classes=NUM_CLASSES):
    import pointrend_seg  # noqa: F401  (registers our components)
    from pointrend_seg.config import build_config

    base = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", str(device),
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", num_classes]
    return build_config(resolve_config_file(config_file), base + list(opts))


def build_ours(config_file: str, device: str, opts=(), seed: int = 0,
               num_classes: int = NUM_CLASSES) -> nn.Module:
    """
    Our model, random weights, on ``device``: from a YAML config + ``KEY VALUE`` overrides, or
    from a Python (LazyConfig) config + ``key=value`` overrides (its ``model``, with the coarse
    head's ``num_classes``).
    """
    if config_file.endswith(".py"):
        from detectron2.config import LazyConfig, instantiate

        cfg = LazyConfig.apply_overrides(LazyConfig.load(resolve_config_file(config_file)),
                                         list(opts))
        cfg.model.sem_seg_head.coarse_head.num_classes = num_classes
        torch.manual_seed(seed)
        return instantiate(cfg.model).to(device).eval()
    return _build_from_cfg(ours_cfg(config_file, device, opts, num_classes), seed)


def merge_opts(cfg, pairs):
    """Merge a flat ``[KEY, VALUE, ...]`` list; values are strings (parsed) or Python objects."""
    cfg.merge_from_list(list(pairs))
    return cfg


def ref_deeplabv3_cfg(device: str, opts=(), num_classes: int = NUM_CLASSES):
    """Detectron2 DeepLab project's Cityscapes DeepLabV3-R103-OS16 (mg124) config, random weights."""
    from detectron2.config import get_cfg
    from detectron2.projects import deeplab  # noqa: F401  (registers backbone and heads)
    from detectron2.projects.deeplab import add_deeplab_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    return merge_opts(cfg, [
        "MODEL.META_ARCHITECTURE", "SemanticSegmentor",
        "MODEL.WEIGHTS", "",
        "MODEL.DEVICE", str(device),
        "MODEL.PIXEL_MEAN", [123.675, 116.280, 103.530],
        "MODEL.PIXEL_STD", [58.395, 57.120, 57.375],
        "MODEL.BACKBONE.NAME", "build_resnet_deeplab_backbone",
        "MODEL.BACKBONE.FREEZE_AT", 0,
        "MODEL.RESNETS.DEPTH", 101,
        "MODEL.RESNETS.NORM", "SyncBN",
        "MODEL.RESNETS.OUT_FEATURES", ["res5"],
        "MODEL.RESNETS.RES5_DILATION", 2,
        "MODEL.RESNETS.RES5_MULTI_GRID", [1, 2, 4],
        "MODEL.RESNETS.STEM_TYPE", "deeplab",
        "MODEL.RESNETS.STEM_OUT_CHANNELS", 128,
        "MODEL.RESNETS.STRIDE_IN_1X1", False,
        "MODEL.SEM_SEG_HEAD.NAME", "DeepLabV3Head",
        "MODEL.SEM_SEG_HEAD.IN_FEATURES", ["res5"],
        "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", 256,
        "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS", [6, 12, 18],
        "MODEL.SEM_SEG_HEAD.ASPP_DROPOUT", 0.1,
        "MODEL.SEM_SEG_HEAD.CONVS_DIM", 256,
        "MODEL.SEM_SEG_HEAD.COMMON_STRIDE", 16,
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", num_classes,
        "MODEL.SEM_SEG_HEAD.LOSS_TYPE", "hard_pixel_mining",
        "MODEL.SEM_SEG_HEAD.NORM", "SyncBN",
        # Global image pooling in ASPP (a crop-size pool kernel would fix the input size).
        "INPUT.CROP.ENABLED", False,
    ] + list(opts))


def build_ref_deeplabv3(device: str, opts=(), seed: int = 0,
                        num_classes: int = NUM_CLASSES) -> nn.Module:
    return _build_from_cfg(ref_deeplabv3_cfg(device, opts, num_classes), seed)


def ref_pointrend_fpn_cfg(device: str, opts=(), num_classes: int = NUM_CLASSES):
    """Detectron2 PointRend project's Semantic FPN R-101 Cityscapes config, random weights."""
    from detectron2.config import get_cfg
    from detectron2.projects import point_rend  # noqa: F401  (registers the heads)
    from detectron2.projects.point_rend import add_pointrend_config

    cfg = get_cfg()
    add_pointrend_config(cfg)
    return merge_opts(cfg, [
        "MODEL.META_ARCHITECTURE", "SemanticSegmentor",
        "MODEL.WEIGHTS", "",
        "MODEL.DEVICE", str(device),
        "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",
        "MODEL.BACKBONE.FREEZE_AT", 0,
        "MODEL.RESNETS.DEPTH", 101,
        "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"],
        "MODEL.FPN.IN_FEATURES", ["res2", "res3", "res4", "res5"],
        "MODEL.SEM_SEG_HEAD.NAME", "PointRendSemSegHead",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", num_classes,
        "MODEL.POINT_HEAD.NUM_CLASSES", num_classes,
        "MODEL.POINT_HEAD.FC_DIM", 256,
        "MODEL.POINT_HEAD.NUM_FC", 3,
        "MODEL.POINT_HEAD.IN_FEATURES", ["p2"],
        "MODEL.POINT_HEAD.TRAIN_NUM_POINTS", 2048,
        "MODEL.POINT_HEAD.SUBDIVISION_STEPS", 2,
        "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", 8192,
        "MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME", "SemSegFPNHead",
    ] + list(opts))


def build_ref_pointrend_fpn(device: str, opts=(), seed: int = 0,
                            num_classes: int = NUM_CLASSES) -> nn.Module:
    return _build_from_cfg(ref_pointrend_fpn_cfg(device, opts, num_classes), seed)


def default_model_specs(names: Sequence[str] = MODEL_NAMES, *, seed: int = 0, narrow=False,
                        ours_config: str = OURS_POINTREND_CONFIG,
                        ours_baseline_config: str = OURS_DEEPLAB_CONFIG,
                        extra_opts: Optional[Dict[str, Sequence]] = None) -> List[ModelSpec]:
    """
    The benchmark's models, in ``names`` order.

    Args:
        narrow: narrow R-50 variants of every model (``NARROW_OPTS``), for smoke tests.
        extra_opts: per model name, ``KEY VALUE`` overrides applied last.
    """
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {list(MODEL_NAMES)}")
    extra_opts = extra_opts or {}

    def opts_of(name):
        return list(NARROW_OPTS[name] if narrow else []) + list(extra_opts.get(name, []))

    builders = {
        "ours_pointrend": lambda d: build_ours(ours_config, d, opts_of("ours_pointrend"), seed),
        "ours_deeplabv3": lambda d: build_ours(
            ours_baseline_config, d, opts_of("ours_deeplabv3"), seed
        ),
        "ref_deeplabv3": lambda d: build_ref_deeplabv3(d, opts_of("ref_deeplabv3"), seed),
        "ref_pointrend_fpn": lambda d: build_ref_pointrend_fpn(
            d, opts_of("ref_pointrend_fpn"), seed
        ),
    }
    config_files = {"ours_pointrend": ours_config, "ours_deeplabv3": ours_baseline_config}
    specs = []
    for name in names:
        info = {"opts": [str(v) for v in opts_of(name)], "narrow": bool(narrow)}
        if name in config_files:
            info["config_file"] = config_files[name]
        description = DESCRIPTIONS[name] + (" [narrow R-50 variant]" if narrow else "")
        if name in config_files and config_files[name] != _DEFAULT_CONFIG[name]:
            description = ("ours: the config's model, "
                           + ("PointRendSegHead" if name == "ours_pointrend" else
                              "BilinearSegHead (bilinear)"))
        specs.append(ModelSpec(name, builders[name], description, REFERENCE_OF.get(name), info,
                               preparable=name.startswith("ours_")))
    return specs

