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
    random points the ``beta * P`` most uncertain, then ``(1 - beta) * P`` uniform random ones.
    Detectron2's selection, except that where ``int(beta * P)`` is 0 it draws no candidates
    (Detectron2 draws and discards them; this project's seeded runs draw as here).
    """
    if int(importance_sample_ratio * num_points) == 0:
        return torch.rand(coarse_logits.shape[0], num_points, 2, device=coarse_logits.device)
    return get_uncertain_point_coords_with_randomness(
        coarse_logits, calculate_uncertainty, num_points, oversample_ratio,
        importance_sample_ratio)


def most_uncertain_cells(uncertainty, num_points: int):
    """
    (N, min(P, H * W)) int64 flat indices of the most uncertain cells of (N, 1, H, W) or
    (N, H * W) ``uncertainty``, in no particular order. Detectron2's
    ``get_uncertain_point_coords_on_grid`` takes the minimum in Python, which fixes H and W in an
    exported model; ``torch.sym_min`` keeps them symbolic.
    """
    flat = uncertainty.flatten(1)
    k = torch.sym_min(num_points, flat.shape[1])
    return torch.topk(flat, k, dim=1, sorted=False).indices


def grid_cell_centers(indices, height: int, width: int):
    """(N, P, 2) float32 normalised ``(x, y)`` centres of the cells (N, P) ``indices`` of an
    H x W grid."""
    # column = index - row * W, not Detectron2's ``index % W``: the ONNX exporter cannot
    # translate a remainder by a symbolic width.
    row = torch.div(indices, width, rounding_mode="floor")
    x = (indices - row * width).to(torch.float32).add_(0.5).div_(width)
    y = row.to(torch.float32).add_(0.5).div_(height)
    return torch.stack([x, y], dim=2)


def sample_point_labels(labels, point_coords):
    """
    (N, P) int64 labels at (N, P, 2) ``point_coords`` of (N, H, W) ``labels``, nearest-neighbour
    sampled as Detectron2's head does, rounded before the cast so that none is one below its value.
    """
    sampled = point_sample(labels.unsqueeze(1).to(torch.float32), point_coords, mode="nearest",
                           align_corners=False)
    return sampled.squeeze(1).round().to(torch.int64)
