"""
Point machinery of PointRend: sampling features at points, the uncertainty measure, and the
point-selection strategies (a registry).

Coordinates convention, used everywhere in pointrend_seg: a point is ``(x, y)`` normalised to
[0, 1] x [0, 1] over the whole feature map, with ``align_corners=False`` semantics, i.e. (0, 0) is
the top-left corner of the top-left cell and the centre of cell (i, j) of an H x W grid is
``((j + 0.5) / W, (i + 0.5) / H)``.

Shapes: N images, C channels, K classes, P points.
"""
import torch
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.utils.registry import Registry

__all__ = [
    "POINT_SAMPLER_REGISTRY",
    "UncertaintyPointSampler",
    "build_point_sampler",
    "calculate_uncertainty",
    "grid_cell_centers",
    "point_sample",
    "sample_point_labels",
]

POINT_SAMPLER_REGISTRY = Registry("POINTREND_SEG_POINT_SAMPLER")
POINT_SAMPLER_REGISTRY.__doc__ = """
Point-selection strategies. A sampler provides ``training_points(coarse_logits, num_points)`` and
``subdivision_points(logits, num_points)``; it is built with ``obj(cfg)`` (``@configurable``).
"""


def point_sample(input, point_coords, **kwargs):
    """
    Bilinearly sample ``input`` at normalised points (see the module docstring).

    Args:
        input (Tensor): (N, C, H, W).
        point_coords (Tensor): (N, P, 2) or (N, Hgrid, Wgrid, 2), in [0, 1] x [0, 1].
        kwargs: passed to :func:`torch.nn.functional.grid_sample` (e.g. ``mode="nearest"``).

    Returns:
        Tensor: (N, C, P) or (N, C, Hgrid, Wgrid).
    """
    kwargs.setdefault("align_corners", False)
    grid = 2.0 * point_coords - 1.0
    if point_coords.dim() == 3:
        return F.grid_sample(input, grid.unsqueeze(2), **kwargs).squeeze(3)
    return F.grid_sample(input, grid, **kwargs)


def calculate_uncertainty(logits):
    """
    PointRend's uncertainty: minus the gap between the two largest class logits, so that the most
    ambiguous locations score highest (0 when the top two tie).

    Args:
        logits (Tensor): (N, K, ...) with K >= 2.

    Returns:
        Tensor: (N, 1, ...).
    """
    top2 = torch.topk(logits, k=2, dim=1).values
    return (top2[:, 1] - top2[:, 0]).unsqueeze(1)


def grid_cell_centers(indices, height: int, width: int):
    """
    Normalised centres of cells given by flat indices into an H x W grid.

    Args:
        indices (Tensor): (N, P) integer indices in [0, H * W).

    Returns:
        Tensor: (N, P, 2) float32 coordinates ``(x, y)``.
    """
    x = (indices % width).to(torch.float32).add_(0.5).div_(width)
    y = torch.div(indices, width, rounding_mode="floor").to(torch.float32).add_(0.5).div_(height)
    return torch.stack([x, y], dim=2)


def sample_point_labels(labels, point_coords):
    """
    Ground-truth labels at points, by nearest-neighbour sampling.

    Args:
        labels (Tensor): (N, H, W) integer labels (the ignore value passes through unchanged).
        point_coords (Tensor): (N, P, 2).

    Returns:
        Tensor: (N, P) int64.
    """
    sampled = point_sample(labels.unsqueeze(1).to(torch.float32), point_coords, mode="nearest")
    return sampled.squeeze(1).round().to(torch.int64)


@POINT_SAMPLER_REGISTRY.register()
class UncertaintyPointSampler:
    """
    The paper's strategies.

    Training: draw ``k * P`` uniform random points, keep the ``beta * P`` most uncertain (judged on
    the coarse logits bilinearly sampled at those points, not on the grid), add ``(1 - beta) * P``
    uniform random points. Inference: the P grid cells with the highest uncertainty.
    """

    @configurable
    def __init__(self, *, oversample_ratio: float, importance_sample_ratio: float):
        """
        Args:
            oversample_ratio: k >= 1.
            importance_sample_ratio: beta in [0, 1].
        """
        if oversample_ratio < 1:
            raise ValueError(f"MODEL.POINT_HEAD.OVERSAMPLE_RATIO must be >= 1, got {oversample_ratio}")
        if not 0.0 <= importance_sample_ratio <= 1.0:
            raise ValueError(
                "MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO must be in [0, 1], "
                f"got {importance_sample_ratio}"
            )
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

    @classmethod
    def from_config(cls, cfg):
        return {
            "oversample_ratio": cfg.MODEL.POINT_HEAD.OVERSAMPLE_RATIO,
            "importance_sample_ratio": cfg.MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO,
        }

    @torch.no_grad()
    def training_points(self, coarse_logits, num_points: int):
        """
        Args:
            coarse_logits (Tensor): (N, K, H, W).
            num_points (int): P.

        Returns:
            Tensor: (N, P, 2) float32; the first ``int(beta * P)`` are the uncertain ones.
        """
        n = coarse_logits.shape[0]
        device = coarse_logits.device
        num_uncertain = int(self.importance_sample_ratio * num_points)
        num_random = num_points - num_uncertain
        parts = []
        if num_uncertain > 0:
            num_candidates = int(self.oversample_ratio * num_points)
            candidates = torch.rand(n, num_candidates, 2, device=device)
            uncertainty = calculate_uncertainty(point_sample(coarse_logits.float(), candidates))
            top = torch.topk(uncertainty[:, 0], k=num_uncertain, dim=1).indices
            parts.append(torch.gather(candidates, 1, top.unsqueeze(2).expand(-1, -1, 2)))
        if num_random > 0:
            parts.append(torch.rand(n, num_random, 2, device=device))
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def subdivision_points(self, logits, num_points: int):
        """
        Args:
            logits (Tensor): (N, K, H, W) current (upsampled) prediction.
            num_points (int): P; at most H * W are returned.

        Returns:
            indices (Tensor): (N, P') flat indices into H x W, P' = min(P, H * W).
            coords (Tensor): (N, P', 2) the cell centres.
        """
        n, _, h, w = logits.shape
        uncertainty = calculate_uncertainty(logits).view(n, h * w)
        indices = torch.topk(uncertainty, k=min(num_points, h * w), dim=1).indices
        return indices, grid_cell_centers(indices, h, w)


def build_point_sampler(cfg):
    """Build the sampler named by ``cfg.MODEL.POINT_HEAD.SAMPLER``."""
    return POINT_SAMPLER_REGISTRY.get(cfg.MODEL.POINT_HEAD.SAMPLER)(cfg)
