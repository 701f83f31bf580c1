"""Evaluators for semantic segmentation."""

from .boundary import BoundaryEvaluator
from .ground_truth import GroundTruthReader
from .sem_seg import SegmentationEvaluator, describe_miou

__all__ = ["BoundaryEvaluator", "GroundTruthReader", "SegmentationEvaluator", "describe_miou"]
