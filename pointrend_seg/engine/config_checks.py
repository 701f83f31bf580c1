"""
Checks of the config against the datasets it names, run when a trainer or an evaluation starts
(the model does not know the datasets; each model component checks its own keys when built).
"""
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..config import raise_config_problems

__all__ = ["check_dataset_config"]


def check_dataset_config(cfg, keys=("DATASETS.TRAIN", "DATASETS.TEST")) -> None:
    """
    Check the datasets named by ``keys`` against the model: each must be registered, have
    ``len(stuff_classes) == MODEL.SEM_SEG_HEAD.NUM_CLASSES`` and
    ``ignore_label == MODEL.SEM_SEG_HEAD.IGNORE_VALUE`` in its ``MetadataCatalog`` entry
    (when the metadata has those fields).

    Raises:
        ConfigError: naming the dataset, the config key that lists it and the values.
    """
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
    raise_config_problems(problems)
