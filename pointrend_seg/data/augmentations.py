"""The training and test augmentations of the semantic-segmentation mapper, from the config."""
from detectron2.data import transforms as T

from ..config import raise_config_problems
from .transforms import PadToMinSize

__all__ = ["build_sem_seg_augmentations", "crop_pad_size", "crop_problems"]


def crop_pad_size(cfg):
    """
    (height, width) that images are padded to before the training crop, or None: INPUT.CROP.SIZE
    for crop type "absolute", (SIZE[0], SIZE[0]) (the smallest crop) for "absolute_range", and
    None for the relative types, whose crops never exceed the image.
    """
    if not cfg.INPUT.CROP.ENABLED:
        return None
    crop_type, size = cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE
    if crop_type == "absolute":
        return int(size[0]), int(size[1])
    if crop_type == "absolute_range":
        return int(size[0]), int(size[0])
    return None


def crop_problems(cfg):
    """
    What is wrong with ``INPUT.CROP`` (when enabled), one message per problem: ``TYPE`` one of
    Detectron2's four; ``SIZE`` two fractions in (0, 1] for "relative" / "relative_range",
    two positive integers for "absolute", a positive integer range (min <= max) for
    "absolute_range"; ``SINGLE_CATEGORY_MAX_AREA`` in (0, 1].
    """
    crop = cfg.INPUT.CROP
    if not crop.ENABLED:
        return []
    size = list(crop.SIZE)
    where = f"INPUT.CROP.SIZE={size} (INPUT.CROP.TYPE {crop.TYPE!r})"
    two_numbers = len(size) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                      for v in size)
    problems = []
    if crop.TYPE in ("relative", "relative_range"):
        if not two_numbers or not all(0.0 < v <= 1.0 for v in size):
            problems.append(f"{where} must be two fractions of the image in (0, 1], e.g. "
                            "[0.5, 0.5]")
    elif crop.TYPE in ("absolute", "absolute_range"):
        if not two_numbers or not all(isinstance(v, int) and v > 0 for v in size):
            problems.append(f"{where} must be two positive integers (pixels)")
        elif crop.TYPE == "absolute_range" and size[0] > size[1]:
            problems.append(f"{where} is a range [min, max] of crop sides: min > max")
    else:
        problems.append(f"INPUT.CROP.TYPE={crop.TYPE!r} must be 'relative', 'relative_range', "
                        "'absolute' or 'absolute_range'")
    area = crop.SINGLE_CATEGORY_MAX_AREA
    if not isinstance(area, (int, float)) or not 0.0 < area <= 1.0:
        problems.append(f"INPUT.CROP.SINGLE_CATEGORY_MAX_AREA={area!r} must be in (0, 1] "
                        "(1.0: no constraint)")
    return problems


def build_sem_seg_augmentations(cfg, is_train):
    """
    Training (``INPUT.CROP`` checked first, :func:`crop_problems`): ResizeShortestEdge
    (INPUT.MIN_SIZE_TRAIN, "choice" or "range"), optional random crop that retries while one category covers more than INPUT.CROP.SINGLE_CATEGORY_MAX_AREA
    (images smaller than the crop are first padded to it, see :func:`crop_pad_size`: image with
    0, label with MODEL.SEM_SEG_HEAD.IGNORE_VALUE), horizontal flip, optional SSD colour
    augmentation. Test: ResizeShortestEdge(MIN_SIZE_TEST).
    """
    if not is_train:
        if cfg.INPUT.MIN_SIZE_TEST <= 0:
            return []
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    raise_config_problems(crop_problems(cfg))
    augs = [
        T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    ]
    if cfg.INPUT.CROP.ENABLED:
        pad_size = crop_pad_size(cfg)
        if pad_size is not None:
            augs.append(
                PadToMinSize(pad_size, pad_value=0,
                             seg_pad_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
            )
        augs.append(
            T.RandomCrop_CategoryAreaConstraint(
                cfg.INPUT.CROP.TYPE,
                cfg.INPUT.CROP.SIZE,
                cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            )
        )
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(
            T.RandomFlip(
                horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
            )
        )
    if cfg.INPUT.COLOR_AUG_SSD:
        from detectron2.projects.point_rend import ColorAugSSDTransform

        augs.append(ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT))
    return augs
