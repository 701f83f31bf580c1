"""Evaluators for semantic segmentation."""

from .boundary import BoundaryEvaluator
from .ground_truth import stored_ground_truth
from .sem_seg import SegmentationEvaluator, describe_miou, sem_seg_metrics

__all__ = ["BoundaryEvaluator", "SegmentationEvaluator", "describe_miou", "sem_seg_metrics",
           "stored_ground_truth"]
