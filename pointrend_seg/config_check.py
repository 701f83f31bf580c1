"""
Config validation that needs more than one key: run when the model is built
(:func:`check_model_config`, from ``PointRendSemanticSegmentor.from_config``) and when a trainer
or an evaluation starts (:func:`check_dataset_config`, the model does not know the datasets).

Each check raises :class:`ConfigError` (a ``ValueError``) whose message names the config keys
involved and their values; all problems found are reported together, one per line.

Decisions:

* The point head has no class count of its own: it predicts ``MODEL.SEM_SEG_HEAD.NUM_CLASSES``
  classes (it refines the coarse logits class by class). A config that also carries
  ``MODEL.POINT_HEAD.NUM_CLASSES`` (Detectron2's PointRend project has that key) must give the
  same number.
* ``INPUT.CROP.SIZE`` with ``INPUT.CROP.TYPE`` "absolute" must be a multiple of the model's
  output stride (the largest stride of the backbone outputs, to which the meta-architecture pads
  every batch): a crop of another size would be padded on every iteration, i.e. part of each
  training batch would be ignore-valued padding. Data-dependent crop types ("relative", ...) and
  images smaller than the crop are padded, as at test time.
"""
from typing import Dict

__all__ = ["ConfigError", "check_dataset_config", "check_model_config"]


class ConfigError(ValueError):
    """An inconsistent configuration; the message names the keys and values."""


def _raise(problems):
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))


def _features_key(cfg):
    if cfg.MODEL.BACKBONE.NAME == "build_dilated_resnet_backbone":
        return f"MODEL.RESNETS.OUT_FEATURES={list(cfg.MODEL.RESNETS.OUT_FEATURES)}"
    return f"the outputs of MODEL.BACKBONE.NAME={cfg.MODEL.BACKBONE.NAME!r}"


def _uses_point_head(cfg):
    from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

    from .modeling.pointrend_head import PointRendSegHead

    try:
        head = SEM_SEG_HEADS_REGISTRY.get(cfg.MODEL.SEM_SEG_HEAD.NAME)
    except KeyError:
        return False
    return isinstance(head, type) and issubclass(head, PointRendSegHead)


def check_model_config(cfg, backbone_shape: Dict) -> None:
    """
    Check the model keys against each other and against the backbone that was built from them.

    Args:
        cfg: the config.
        backbone_shape: ``backbone.output_shape()`` (feature name -> ``ShapeSpec``).

    Raises:
        ConfigError: classes (``MODEL.SEM_SEG_HEAD.NUM_CLASSES``, ``MODEL.POINT_HEAD.NUM_CLASSES``,
            ``MODEL.SEM_SEG_HEAD.IGNORE_VALUE``), feature names
            (``MODEL.SEM_SEG_HEAD.IN_FEATURES``, ``MODEL.SEM_SEG_HEAD.PROJECT_FEATURES``,
            ``MODEL.POINT_HEAD.IN_FEATURES`` vs the backbone outputs), crop size vs output stride
            (``INPUT.CROP.SIZE``).
    """
    problems = []
    head = cfg.MODEL.SEM_SEG_HEAD
    num_classes = head.NUM_CLASSES
    if not isinstance(num_classes, int) or num_classes < 2:
        problems.append(
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={num_classes!r} must be an integer >= 2 "
            "(a background/foreground task has 2 classes)"
        )
    elif 0 <= head.IGNORE_VALUE < num_classes:
        problems.append(
            f"MODEL.SEM_SEG_HEAD.IGNORE_VALUE={head.IGNORE_VALUE} is a class id "
            f"(MODEL.SEM_SEG_HEAD.NUM_CLASSES={num_classes}): pixels of that class would be "
            "ignored by the losses"
        )
    point_classes = cfg.MODEL.get("POINT_HEAD", {}).get("NUM_CLASSES", None)
    if point_classes is not None and point_classes != num_classes:
        problems.append(
            f"MODEL.POINT_HEAD.NUM_CLASSES={point_classes} differs from "
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={num_classes}: pointrend_seg's point head predicts "
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES classes (it refines the coarse logits class by "
            "class); remove MODEL.POINT_HEAD.NUM_CLASSES or make it equal"
        )

    available = sorted(backbone_shape)
    produced = f"the backbone outputs {available} ({_features_key(cfg)})"

    def check_features(key, names):
        missing = [f for f in names if f not in backbone_shape]
        if missing:
            problems.append(f"{key}={list(names)}: {missing} not among {produced}")

    check_features("MODEL.SEM_SEG_HEAD.IN_FEATURES", head.IN_FEATURES)
    if head.get("COARSE_HEAD_NAME", "") == "DeepLabV3Plus":
        check_features("MODEL.SEM_SEG_HEAD.PROJECT_FEATURES", head.PROJECT_FEATURES)
    if _uses_point_head(cfg):
        check_features("MODEL.POINT_HEAD.IN_FEATURES", cfg.MODEL.POINT_HEAD.IN_FEATURES)

    crop = cfg.INPUT.CROP
    if crop.ENABLED and crop.TYPE == "absolute" and backbone_shape:
        stride = max(s.stride for s in backbone_shape.values())
        size = list(crop.SIZE)
        if len(size) != 2 or any(not isinstance(s, int) or s <= 0 for s in size):
            problems.append(f"INPUT.CROP.SIZE={size} must be two positive integers (h, w)")
        elif any(s % stride for s in size):
            suggestion = [max(stride, round(s / stride) * stride) for s in size]
            problems.append(
                f"INPUT.CROP.SIZE={size} (INPUT.CROP.TYPE 'absolute') is not a multiple of the "
                f"model's output stride {stride} (the largest stride of {produced}, set by "
                f"MODEL.RESNETS.RES4_DILATION={cfg.MODEL.RESNETS.RES4_DILATION} / "
                f"RES5_DILATION={cfg.MODEL.RESNETS.RES5_DILATION}); every crop would be padded "
                f"to a multiple of {stride}. Use e.g. INPUT.CROP.SIZE {suggestion}"
            )
    _raise(problems)


def check_dataset_config(cfg, keys=("DATASETS.TRAIN", "DATASETS.TEST")) -> None:
    """
    Check the datasets named by ``keys`` against the model: each must be registered, have
    ``len(stuff_classes) == MODEL.SEM_SEG_HEAD.NUM_CLASSES`` and
    ``ignore_label == MODEL.SEM_SEG_HEAD.IGNORE_VALUE`` in its ``MetadataCatalog`` entry
    (when the metadata has those fields).

    Raises:
        ConfigError: naming the dataset, the config key that lists it and the values.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    ignore_value = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
    registered = set(DatasetCatalog.list())
    problems = []
    for key in keys:
        group, name_key = key.split(".")
        for name in cfg[group][name_key]:
            if name not in registered:
                problems.append(f"{key}: dataset {name!r} is not registered")
                continue
            meta = MetadataCatalog.get(name)
            classes = meta.get("stuff_classes", None)
            if classes is not None and len(classes) != num_classes:
                problems.append(
                    f"{key}: dataset {name!r} has {len(classes)} classes (stuff_classes in its "
                    f"metadata) but MODEL.SEM_SEG_HEAD.NUM_CLASSES={num_classes}"
                )
            ignore_label = meta.get("ignore_label", None)
            if ignore_label is not None and ignore_label != ignore_value:
                problems.append(
                    f"{key}: dataset {name!r} has ignore_label={ignore_label} in its metadata "
                    f"but MODEL.SEM_SEG_HEAD.IGNORE_VALUE={ignore_value}"
                )
    _raise(problems)
