"""Evaluation results a person can read: a per-class table for the log, a confusion matrix
(CSV and PNG) and per-class bars, which ``Trainer.test`` writes to
``OUTPUT_DIR/inference/<dataset>/``. Every result file of the evaluators is written with
:func:`write_result_file`.
"""
import csv
import errno
import math
import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..files import atomic_write, is_disk_full

__all__ = ["ResultWriteError", "format_per_class_table", "per_class_rows",
           "write_confusion_matrix", "write_per_class_bars", "write_result_file"]


class ResultWriteError(OSError):
    """No space left (or the quota reached) while writing an evaluation result; the message
    names the file. ``errno`` is ``ENOSPC``."""

    def __init__(self, message):
        super().__init__(message)
        self.errno = errno.ENOSPC


def write_result_file(path: str, write: Callable, binary: bool = False) -> str:
    """Write ``path`` whole or not at all (:func:`pointrend_seg.files.atomic_write`, text unless
    ``binary``; its folder made if missing) and return it.

    Raises:
        ResultWriteError: no space left or quota exceeded.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        atomic_write(path, write, binary=binary)
    except BaseException as e:
        if is_disk_full(e):
            raise ResultWriteError(
                f"no space left on the device while writing {path} (nothing was written under "
                "that name); free some space and run again (an evaluation alone: "
                "tools/train_net.py --eval-only)"
            ) from None
        raise
    return path


def per_class_rows(sem_seg: Dict[str, float], class_names: Sequence[str],
                   class_pixels: Optional[Sequence[int]] = None,
                   boundary: Optional[Dict[str, float]] = None) -> List[dict]:
    """One dict per class, in percent: ``class``, ``IoU``, ``ACC`` (from ``sem_seg``), ``BF``,
    ``BIoU`` (from ``boundary``) and ``share`` of the ground-truth pixels (from
    ``class_pixels``); NaN where missing or undefined."""
    total = float(sum(class_pixels)) if class_pixels is not None else 0.0
    boundary = boundary or {}
    return [{"class": name,
             "IoU": sem_seg.get(f"IoU-{name}", math.nan),
             "ACC": sem_seg.get(f"ACC-{name}", math.nan),
             "BF": boundary.get(f"BF-{name}", math.nan),
             "BIoU": boundary.get(f"BIoU-{name}", math.nan),
             "share": 100.0 * class_pixels[i] / total if total else math.nan}
            for i, name in enumerate(class_names)]


def _cell(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def format_per_class_table(rows: Sequence[dict], title: str = "") -> str:
    """The rows of :func:`per_class_rows` as an aligned text table ("-": undefined)."""
    header = ("class", "IoU", "acc", "boundary F", "boundary IoU", "pixels %")
    body = [(r["class"], _cell(r["IoU"]), _cell(r["ACC"]), _cell(r["BF"]), _cell(r["BIoU"]),
             _cell(r["share"])) for r in rows]
    widths = [max(len(str(line[i])) for line in [header] + body) for i in range(len(header))]
    lines = [title] if title else []
    for line in [header] + body:
        lines.append("  " + "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(line, widths))).rstrip())
    return "\n".join(lines)


def _figure(width_in, height_in):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=100)


def write_confusion_matrix(output_dir: str, confusion: np.ndarray,
                           class_names: Sequence[str]) -> List[str]:
    """Write ``confusion_matrix.csv`` (pixel counts) and ``confusion_matrix.png`` (rows
    normalised to 100%) to ``output_dir`` and return the two paths. ``confusion``: (K, K) pixel
    counts, rows = ground-truth class, columns = predicted class."""
    confusion = np.asarray(confusion, dtype=np.int64)
    k = len(class_names)
    if confusion.shape != (k, k):
        raise ValueError(f"confusion matrix {confusion.shape} for {k} classes")
    csv_path = os.path.join(output_dir, "confusion_matrix.csv")

    def write_csv(f):
        writer = csv.writer(f)
        writer.writerow(["ground truth \\ prediction"] + list(class_names))
        for name, row in zip(class_names, confusion):
            writer.writerow([name] + [int(v) for v in row])

    write_result_file(csv_path, write_csv)

    rows = confusion.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        percent = np.where(rows > 0, 100.0 * confusion / np.maximum(rows, 1), np.nan)
    side = min(24.0, max(5.0, 0.45 * k + 2.5))
    fig = _figure(side, side)
    ax = fig.add_subplot(1, 1, 1)
    shown = np.ma.masked_invalid(percent)
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=100)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="% of the ground-truth row")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticklabels(class_names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion matrix (rows: ground truth, normalised)")
    if k <= 30:
        for i, j in np.argwhere(~np.isnan(percent)):
            ax.text(j, i, f"{percent[i, j]:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if percent[i, j] > 60 else "black")
    fig.tight_layout()
    png_path = write_result_file(os.path.join(output_dir, "confusion_matrix.png"),
                                 lambda f: fig.savefig(f, format="png"), binary=True)
    return [csv_path, png_path]


def write_per_class_bars(output_dir: str, rows: Sequence[dict], title: str = "") -> str:
    """Write ``per_class.png``: IoU and boundary F of each class (rows of
    :func:`per_class_rows`) as horizontal bars, 0-100; undefined values are left out."""
    k = len(rows)
    fig = _figure(8.0, min(40.0, max(3.0, 0.35 * k + 1.5)))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(k)
    height = 0.4
    iou = [0.0 if math.isnan(r["IoU"]) else r["IoU"] for r in rows]
    bf = [0.0 if math.isnan(r["BF"]) else r["BF"] for r in rows]
    ax.barh(y - height / 2, iou, height, label="IoU", color="#1f77b4")
    if any(not math.isnan(r["BF"]) for r in rows):
        ax.barh(y + height / 2, bf, height, label="boundary F", color="#ff7f0e")
    ax.set_yticks(y)
    ax.set_yticklabels([r["class"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("%")
    ax.legend(loc="lower right")
    ax.set_title(title or "per class")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return write_result_file(os.path.join(output_dir, "per_class.png"),
                             lambda f: fig.savefig(f, format="png"), binary=True)
