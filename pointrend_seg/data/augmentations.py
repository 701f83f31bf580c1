"""The training and test augmentations of the semantic-segmentation mapper: from plain arguments
(:func:`sem_seg_augmentations`, what a LazyConfig calls) or from a config
(:func:`build_sem_seg_augmentations`, the same with ``INPUT.*`` keys)."""
from typing import Optional, Sequence

from detectron2.data import transforms as T

from ..config import check_arguments, is_int, is_number, raise_config_problems
from .transforms import PadToMinSize

__all__ = ["build_sem_seg_augmentations", "sem_seg_augmentations"]


def _crop_problems(crop_type, size, area):
    size = list(size)
    where = f"INPUT.CROP.SIZE={size} (INPUT.CROP.TYPE {crop_type!r})"
    two_numbers = len(size) == 2 and all(is_number(v) for v in size)
    problems = []
    if crop_type in ("relative", "relative_range"):
        if not two_numbers or not all(0.0 < v <= 1.0 for v in size):
            problems.append(f"{where} must be two fractions of the image in (0, 1], e.g. "
                            "[0.5, 0.5]")
    elif crop_type in ("absolute", "absolute_range"):
        if not two_numbers or not all(isinstance(v, int) and v > 0 for v in size):
            problems.append(f"{where} must be two positive integers (pixels)")
        elif crop_type == "absolute_range" and size[0] > size[1]:
            problems.append(f"{where} is a range [min, max] of crop sides: min > max")
    else:
        problems.append(f"INPUT.CROP.TYPE={crop_type!r} must be 'relative', 'relative_range', "
                        "'absolute' or 'absolute_range'")
    if not isinstance(area, (int, float)) or not 0.0 < area <= 1.0:
        problems.append(f"INPUT.CROP.SINGLE_CATEGORY_MAX_AREA={area!r} must be in (0, 1] "
                        "(1.0: no constraint)")
    return problems


def sem_seg_augmentations(
    is_train: bool, *, min_size_train: Sequence[int] = (800,), max_size_train: int = 1333,
    min_size_train_sampling: str = "choice", min_size_test: int = 800,
    max_size_test: int = 1333, crop_type: Optional[str] = None, crop_size=(512, 512),
    single_category_max_area: float = 1.0, ignore_label: int = 255,
    random_flip: str = "horizontal", color_aug_ssd: bool = False, image_format: str = "RGB",
):
    """Training: ResizeShortestEdge, with ``crop_type`` (None: no crop) a random crop of
    ``crop_size`` that retries while one category covers more than ``single_category_max_area``
    (smaller images padded first), a flip (``random_flip`` "horizontal", "vertical" or "none"),
    optionally the SSD colour augmentation. Test: ResizeShortestEdge; none when
    ``min_size_test`` is 0.

    Raises:
        ConfigError: naming the ``INPUT`` key of a bad size or crop value.
    """
    positive = "an integer >= 1 (pixels)"
    if not is_train:
        check_arguments("sem_seg_augmentations", [
            ("INPUT.MIN_SIZE_TEST", "min_size_test", min_size_test,
             is_int(min_size_test) and min_size_test >= 0, "an integer >= 0 (0: no resize)"),
            ("INPUT.MAX_SIZE_TEST", "max_size_test", max_size_test,
             min_size_test == 0 or is_int(max_size_test) and max_size_test >= 1, positive)])
        if min_size_test == 0:
            return []
        return [T.ResizeShortestEdge(min_size_test, max_size_test, "choice")]
    sizes = list(min_size_train) if hasattr(min_size_train, "__iter__") and not isinstance(
        min_size_train, str) else [min_size_train]
    check_arguments("sem_seg_augmentations", [
        ("INPUT.MIN_SIZE_TRAIN", "min_size_train", min_size_train,
         sizes and all(is_int(v) and v >= 1 for v in sizes), "integers >= 1 (pixels)"),
        ("INPUT.MAX_SIZE_TRAIN", "max_size_train", max_size_train,
         is_int(max_size_train) and max_size_train >= 1, positive)])
    if crop_type is not None:
        raise_config_problems(_crop_problems(crop_type, crop_size, single_category_max_area))
    augs = [T.ResizeShortestEdge(min_size_train, max_size_train, min_size_train_sampling)]
    if crop_type in ("absolute", "absolute_range"):  # relative crops never exceed the image
        # pad to the crop, or for "absolute_range" to its smallest side (SIZE[0], SIZE[0])
        pad_size = crop_size if crop_type == "absolute" else (crop_size[0], crop_size[0])
        augs.append(PadToMinSize(pad_size, pad_value=0, seg_pad_value=ignore_label))
    if crop_type is not None:
        augs.append(T.RandomCrop_CategoryAreaConstraint(
            crop_type, crop_size, single_category_max_area, ignore_label))
    if random_flip != "none":
        augs.append(T.RandomFlip(horizontal=random_flip == "horizontal",
                                 vertical=random_flip == "vertical"))
    if color_aug_ssd:
        from detectron2.projects.point_rend import ColorAugSSDTransform

        augs.append(ColorAugSSDTransform(img_format=image_format))
    return augs


def build_sem_seg_augmentations(cfg, is_train):
    """:func:`sem_seg_augmentations` with the config's ``INPUT.*`` keys and
    ``MODEL.SEM_SEG_HEAD.IGNORE_VALUE``; ``INPUT.CROP.ENABLED`` with ``TYPE`` None is an error."""
    i = cfg.INPUT
    if is_train and i.CROP.ENABLED and i.CROP.TYPE is None:
        raise_config_problems(_crop_problems(None, i.CROP.SIZE, i.CROP.SINGLE_CATEGORY_MAX_AREA))
    return sem_seg_augmentations(
        is_train, min_size_train=i.MIN_SIZE_TRAIN, max_size_train=i.MAX_SIZE_TRAIN,
        min_size_train_sampling=i.MIN_SIZE_TRAIN_SAMPLING, min_size_test=i.MIN_SIZE_TEST,
        max_size_test=i.MAX_SIZE_TEST, crop_type=i.CROP.TYPE if i.CROP.ENABLED else None,
        crop_size=i.CROP.SIZE, single_category_max_area=i.CROP.SINGLE_CATEGORY_MAX_AREA,
        ignore_label=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE, random_flip=i.RANDOM_FLIP,
        color_aug_ssd=i.COLOR_AUG_SSD, image_format=i.FORMAT,
    )
