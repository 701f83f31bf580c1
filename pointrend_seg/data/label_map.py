"""Label maps ``{stored value: class id (or the ignore label)}``, applied whenever a label file
is read; values a map does not name are kept. The usual case: binary masks saved as 0/255, which
with the ignore label 255 would ignore every foreground pixel; ``{255: 1}`` (command line:
``255:1``) makes them class 1. A dataset's map is on each of its dicts (``sem_seg_label_map``).
"""
from typing import Dict, Mapping, Optional, Union

import numpy as np

__all__ = ["apply_label_map", "binary_mask_hint", "format_label_map", "parse_label_map"]

LabelMap = Dict[int, int]


def parse_label_map(spec: Union[str, Mapping, None]) -> Optional[LabelMap]:
    """A label map from ``"VALUE:ID[,VALUE:ID...]"`` (e.g. ``"255:1"``) or a mapping of
    integers; None or an empty spec gives None.

    Raises:
        ValueError: naming the spec, for a malformed pair, a negative value or a value given twice.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        pairs = []
        for item in spec.split(","):
            if not item.strip():
                continue
            parts = item.split(":")
            try:
                if len(parts) != 2:
                    raise ValueError
                pairs.append((int(parts[0]), int(parts[1])))
            except ValueError:
                raise ValueError(
                    f"label map {spec!r}: {item.strip()!r} is not VALUE:CLASS_ID with two integers "
                    "(e.g. '255:1' or '255:1,128:2')"
                ) from None
    else:
        pairs = [(int(k), int(v)) for k, v in dict(spec).items()]
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"label map {spec!r} maps the values {twice} more than once")
    negative = [p for p in pairs if p[0] < 0 or p[1] < 0]
    if negative:
        raise ValueError(f"label map {spec!r} has negative values: {negative}")
    return dict(sorted(pairs)) or None


def format_label_map(label_map: Optional[Mapping[int, int]]) -> str:
    """The command-line spelling of ``label_map`` ("" for none): ``{255: 1}`` -> ``"255:1"``."""
    return ",".join(f"{k}:{v}" for k, v in sorted((label_map or {}).items()))


def apply_label_map(values: np.ndarray, label_map: Optional[Mapping[int, int]]) -> np.ndarray:
    """``values`` (integers, any shape) with the values that ``label_map`` names replaced;
    ``values`` itself without a map."""
    if not label_map:
        return values
    keys = np.array(sorted(label_map), dtype=np.int64)
    ids = np.array([label_map[k] for k in keys.tolist()], dtype=np.int64)
    slot = np.clip(np.searchsorted(keys, values), 0, len(keys) - 1)
    return np.where(keys[slot] == values, ids[slot], values)


def binary_mask_hint(values, num_classes: int, ignore_label: int) -> str:
    """The fix to suggest when the label ``values`` (after any label map) are only 0 and 255
    while 255 is not a class (binary masks saved as 0/255); "" otherwise."""
    present = set(np.unique(np.asarray(values)).tolist())
    if not (255 in present and present <= {0, 255} and num_classes <= 255):
        return ""
    effect = ("is the ignore label (MODEL.SEM_SEG_HEAD.IGNORE_VALUE), so every foreground pixel "
              "is ignored" if ignore_label == 255 else f"is not a class id (0..{num_classes - 1})")
    return (
        f"the labels hold only 0 and 255, as binary masks saved as 0/255 do; 255 {effect}. If 255 "
        "marks the foreground, map it to class 1: `--label-map 255:1` after the dataset's "
        "`--register-folder` (Python: register_folder_dataset(..., label_map={255: 1}))"
    )
