"""Evaluators for semantic segmentation."""

from .boundary import BoundaryEvaluator

__all__ = ["BoundaryEvaluator"]
