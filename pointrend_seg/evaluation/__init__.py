"""Evaluators for semantic segmentation."""

from .boundary import BoundaryEvaluator
from .report import (
    ResultWriteError,
    format_per_class_table,
    per_class_rows,
    write_confusion_matrix,
    write_per_class_bars,
    write_result_file,
)
from .sem_seg import SegmentationEvaluator, describe_miou, sem_seg_metrics

__all__ = ["BoundaryEvaluator", "ResultWriteError", "SegmentationEvaluator", "describe_miou",
           "format_per_class_table", "per_class_rows", "sem_seg_metrics", "write_confusion_matrix",
           "write_per_class_bars", "write_result_file"]
