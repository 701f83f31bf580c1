"""Class names and colours of a model, for the pictures of its predictions: a model knows only
``MODEL.SEM_SEG_HEAD.NUM_CLASSES``; the names come from a dataset's metadata or are given.
"""
import logging
from typing import List, Optional, Sequence, Tuple

from ..config import ConfigError
from .datasets.common import default_stuff_colors
from .datasets.folder import parse_class_names

__all__ = ["NoClassNamesError", "class_names_and_colors", "dataset_class_names"]

logger = logging.getLogger(__name__)


class NoClassNamesError(ConfigError):
    """No class names were given and none are known (no registered dataset of the config has
    any): the one case a tool that does not need them (the exporter) may go on without."""


def dataset_class_names(dataset_name: str, num_classes: Optional[int] = None) -> List[str]:
    """The ``stuff_classes`` of the registered dataset ``dataset_name``, else "0" .. "K-1" for
    ``num_classes`` K.

    Raises:
        ValueError: naming the dataset, if it has none and K is not given, or K differs.
    """
    from detectron2.data import MetadataCatalog

    names = MetadataCatalog.get(dataset_name).get("stuff_classes", None)
    if names is None and num_classes is None:
        raise ValueError(
            f"dataset {dataset_name!r} has no stuff_classes in its metadata: pass num_classes")
    if names is not None and num_classes is not None and num_classes != len(names):
        raise ValueError(
            f"dataset {dataset_name!r} has {len(names)} classes (stuff_classes in its metadata) "
            f"but {num_classes} were asked for (num_classes, MODEL.SEM_SEG_HEAD.NUM_CLASSES?)")
    return [str(i) for i in range(num_classes)] if names is None else list(names)


def _metadata_names(name):
    """(stuff_classes, stuff_colors or None) of a registered dataset, or None if the dataset is
    not registered or has no class names."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if name not in DatasetCatalog.list() and name not in MetadataCatalog.list():
        return None
    metadata = MetadataCatalog.get(name)
    names = metadata.get("stuff_classes", None)
    return (list(names), metadata.get("stuff_colors", None)) if names else None


def class_names_and_colors(
    cfg, *, classes=None, dataset_names: Sequence[str] = ()
) -> Tuple[List[str], List[Tuple[int, int, int]], str]:
    """Names and colours of the ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` classes of a model, from the
    first of: ``classes`` (:func:`~pointrend_seg.data.datasets.parse_class_names`);
    ``dataset_names``; the config's ``DATASETS.TEST``, then ``DATASETS.TRAIN`` (the first
    registered dataset with class names). Colours: the dataset's ``stuff_colors`` if it has one
    per class, else Detectron2's colormap.

    Returns:
        (names, colours, a description of where the names came from)

    Raises:
        ConfigError: no names anywhere (:class:`NoClassNamesError`), their number is not
            ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` (naming their source), or ``classes`` is invalid.
    """
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    found: Optional[Tuple[list, Optional[list], str]] = None
    if classes is not None:
        try:
            names = parse_class_names(classes)
        except ValueError as e:  # empty or duplicate names, a file too large: the tools' one line
            raise ConfigError(str(e)) from None
        shown = repr(classes) if len(repr(classes)) <= 200 else f"of {len(names)} names"
        found = (names, None, f"the class list {shown}")
    unregistered = []
    candidates = [(n, "") for n in dataset_names]
    candidates += [(n, "DATASETS.TEST") for n in cfg.DATASETS.TEST]
    candidates += [(n, "DATASETS.TRAIN") for n in cfg.DATASETS.TRAIN]
    for name, key in candidates:
        if found is not None:
            break
        entry = _metadata_names(name)
        if entry is None:
            unregistered.append(name)
        else:
            found = (*entry, f"dataset {name!r}" + (f" ({key})" if key else ""))
    if found is None:
        where = (f"the config's datasets {unregistered} are not registered in this process (or "
                 "have no stuff_classes)" if unregistered else "the config names no dataset")
        raise NoClassNamesError(
            f"no class names for the {num_classes} classes of the model: {where}. Give them with "
            "--classes NAME,NAME,... (or a text file, one name per line), or register the "
            "training dataset as for training, e.g. --register-folder NAME IMAGE_DIR MASK_DIR "
            "CLASSES"
        )
    names, colors, source = found
    if len(names) != num_classes:
        raise ConfigError(
            f"{source} has {len(names)} class names but the model predicts "
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={num_classes} classes: these are not the names of "
            "its classes. Give the right ones with --classes, or the training dataset with "
            "--register-folder / --dataset"
        )
    if colors is None or len(colors) != len(names):
        colors = default_stuff_colors(len(names))
    logger.info(f"class names from {source}: {names}")
    return names, [tuple(int(v) for v in c) for c in colors], source
