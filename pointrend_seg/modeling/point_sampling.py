"""
PointRend's point functions. Shapes: N images, C channels, K classes, P points. A point is
``(x, y)`` normalised to [0, 1] x [0, 1] over the whole map (``align_corners=False``: the centre
of cell (i, j) of an H x W grid is ``((j + 0.5) / W, (i + 0.5) / H)``), everywhere in pointrend_seg.

``point_sample``, ``calculate_uncertainty`` (minus the gap between the two largest logits) and the
training selection are Detectron2's, imported; the functions here say why they are ours.
"""
import torch

from detectron2.projects.point_rend.point_features import (
    get_uncertain_point_coords_with_randomness,
    point_sample,
)
from detectron2.projects.point_rend.semantic_seg import calculate_uncertainty

__all__ = [
    "calculate_uncertainty",
    "grid_cell_centers",
    "most_uncertain_cells",
    "point_sample",
    "sample_point_labels",
    "training_point_coords",
]


def training_point_coords(coarse_logits, num_points: int, oversample_ratio: float,
                          importance_sample_ratio: float):
    """
    The paper's training points, (N, P, 2) of (N, K, H, W) coarse logits: of ``k * P`` uniform
    random points, the ``beta * P`` most uncertain (judged on the coarse logits sampled there, not
    on the grid), then ``(1 - beta) * P`` uniform random points. Detectron2's selection, except
    that where ``int(beta * P)`` is 0 it draws the P random points only (Detectron2 draws and
    discards the k * P candidates first; every seeded run so far drew as here).
    """
    if int(importance_sample_ratio * num_points) == 0:
        return torch.rand(coarse_logits.shape[0], num_points, 2, device=coarse_logits.device)
    return get_uncertain_point_coords_with_randomness(
        coarse_logits, calculate_uncertainty, num_points, oversample_ratio,
        importance_sample_ratio)


def most_uncertain_cells(uncertainty, num_points: int):
    """
    Flat indices of the ``min(P, H * W)`` most uncertain cells of each image, in no particular
    order (``torch.topk``). Detectron2's ``get_uncertain_point_coords_on_grid`` takes that minimum
    in Python, which fixes H and W when the model is exported; ``torch.sym_min`` keeps them
    symbolic.

    Args:
        uncertainty (Tensor): (N, 1, H, W) or (N, H * W).

    Returns:
        Tensor: (N, min(P, H * W)) int64.
    """
    flat = uncertainty.flatten(1)
    k = torch.sym_min(num_points, flat.shape[1])
    return torch.topk(flat, k, dim=1, sorted=False).indices


def grid_cell_centers(indices, height: int, width: int):
    """
    Normalised centres of cells given by flat indices into an H x W grid.

    Args:
        indices (Tensor): (N, P) integer indices in [0, H * W).

    Returns:
        Tensor: (N, P, 2) float32 coordinates ``(x, y)``.
    """
    # column = index - row * W, not Detectron2's ``index % W``: the ONNX exporter cannot
    # translate a remainder by a symbolic width.
    row = torch.div(indices, width, rounding_mode="floor")
    x = (indices - row * width).to(torch.float32).add_(0.5).div_(width)
    y = row.to(torch.float32).add_(0.5).div_(height)
    return torch.stack([x, y], dim=2)


def sample_point_labels(labels, point_coords):
    """
    Ground-truth labels at points, by nearest-neighbour sampling (as Detectron2's head does
    inline; rounded before the cast, so that no label is one below its value).

    Args:
        labels (Tensor): (N, H, W) integer labels (the ignore value passes through unchanged).
        point_coords (Tensor): (N, P, 2).

    Returns:
        Tensor: (N, P) int64.
    """
    sampled = point_sample(labels.unsqueeze(1).to(torch.float32), point_coords, mode="nearest",
                           align_corners=False)
    return sampled.squeeze(1).round().to(torch.int64)
