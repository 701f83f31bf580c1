"""What every semantic-segmentation registration of ours shares."""
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

import os

__all__ = ["default_stuff_colors", "find_dataset_dir", "register_sem_seg_dataset"]


def find_dataset_dir(root: str, names: Sequence[str], what: str, must_exist: bool = True) -> str:
    """The first of ``names`` (e.g. ``["camvid", "CamVid"]``) that exists under ``root``
    (``$DETECTRON2_DATASETS``); if none, the first (without ``must_exist``).

    Raises:
        FileNotFoundError: (``must_exist``) none exists; names every place looked at.
    """
    for name in names:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            return path
    if not must_exist:
        return os.path.join(root, names[0])
    raise FileNotFoundError(
        f"{what} not found: none of {', '.join(os.path.join(root, n) for n in names)} exists. "
        f"Put it there, or set DETECTRON2_DATASETS to the folder that holds it (now {root!r})"
    )


def default_stuff_colors(num_classes: int) -> List[Tuple[int, int, int]]:
    """Detectron2's colormap (RGB, 0..255), repeated if there are more classes than colours."""
    from detectron2.utils.colormap import colormap

    palette = colormap(rgb=True, maximum=255)
    return [tuple(int(c) for c in palette[i % len(palette)]) for i in range(num_classes)]


def register_sem_seg_dataset(
    name: str, loader: Callable[[], List[dict]], *, stuff_classes: Sequence[str],
    stuff_colors: Sequence[Tuple[int, int, int]], ignore_label: int, image_root: str,
    sem_seg_root: str, label_map: Optional[Mapping[int, int]] = None,
) -> str:
    """Register ``loader`` under ``name`` (unless registered) with the metadata that the
    evaluators and ``Visualizer`` read, and return ``name``. ``label_map`` ({stored mask value:
    class id}) goes into the metadata and onto every dataset dict (``sem_seg_label_map``)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if name in DatasetCatalog.list():
        return name
    label_map = {int(k): int(v) for k, v in label_map.items()} if label_map else None
    DatasetCatalog.register(name, lambda: [dict(d, sem_seg_label_map=label_map) if label_map
                                           else d for d in loader()])
    MetadataCatalog.get(name).set(
        stuff_classes=list(stuff_classes),
        stuff_colors=[tuple(int(c) for c in color) for color in stuff_colors],
        ignore_label=int(ignore_label),
        evaluator_type="sem_seg",
        image_root=image_root,
        sem_seg_root=sem_seg_root,
        **({"label_map": label_map} if label_map else {}),
    )
    return name
