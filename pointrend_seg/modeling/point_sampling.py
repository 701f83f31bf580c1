"""
Point machinery of PointRend: sampling features at points, the uncertainty measure, and the
point-selection strategies (a registry).

Coordinates convention, used everywhere in pointrend_seg: a point is ``(x, y)`` normalised to
[0, 1] x [0, 1] over the whole feature map, with ``align_corners=False`` semantics, i.e. (0, 0) is
the top-left corner of the top-left cell and the centre of cell (i, j) of an H x W grid is
``((j + 0.5) / W, (i + 0.5) / H)``.

Shapes: N images, C channels, K classes, P points.

Inference selects the P most uncertain cells of an H x W map with one of
``SUBDIVISION_SELECT_METHODS`` (:func:`most_uncertain_cells`): all return the same set of cells up
to exact ties in the uncertainty, none synchronises with the host or has a data-dependent shape
(so the subdivision can be exported with symbolic H and W and captured in a CUDA graph).
"""
import torch
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.utils.registry import Registry

from ..config import ConfigError, lookup

__all__ = [
    "DEFAULT_SUBDIVISION_SELECT",
    "POINT_SAMPLER_REGISTRY",
    "SUBDIVISION_SELECT_METHODS",
    "UncertaintyPointSampler",
    "build_point_sampler",
    "calculate_uncertainty",
    "grid_cell_centers",
    "most_uncertain_cells",
    "point_sample",
    "resolve_subdivision_select",
    "sample_point_labels",
]

# How the P most uncertain of H x W cells are found (MODEL.POINT_HEAD.SUBDIVISION_SELECT):
# "topk": torch.topk (unsorted); "sort": a full sort of the map, then the first P; "radix": an
# exact two-pass radix select of the P-th largest value (16-bit histograms), then a compaction of
# the cells at or above it, all in elementwise / scan / scatter kernels. "auto" resolves per
# device type with DEFAULT_SUBDIVISION_SELECT.
SUBDIVISION_SELECT_METHODS = ("topk", "sort", "radix")
# CPU: torch.topk, the fastest of the three at the subdivision's map sizes (tools/benchmark.py,
# docs/benchmarks.md). CUDA: provisional, not measured yet ("sort": one radix sort per step,
# where torch.topk's selection was 1.08 ms a step on an H200); tools/benchmarks/gpu_check.sh
# measures the three side by side.
DEFAULT_SUBDIVISION_SELECT = {"cpu": "topk", "cuda": "sort"}

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

    The value equals ``-(top1 - top2)`` of ``torch.topk(logits, 2, dim=1)`` bit for bit (ties
    included: two equal maxima give 0) without sorting over classes: a running top-2 over the
    classes on CPU (elementwise max/min into preallocated maps, vectorised; ~10x faster than
    ``topk`` there; not differentiable), and otherwise max with argmax, then the max with the
    argmax entry masked (three reduction-sized kernels instead of a sort per location).

    Args:
        logits (Tensor): (N, K, ...) with K >= 2.

    Returns:
        Tensor: (N, 1, ...).
    """
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise ValueError(f"uncertainty needs at least 2 classes, got logits of shape "
                         f"{tuple(logits.shape)}")
    if logits.device.type == "cpu" and not (logits.requires_grad and torch.is_grad_enabled()):
        first, second = logits[:, 0], logits[:, 1]
        top1, top2 = torch.maximum(first, second), torch.minimum(first, second)
        scratch = torch.empty_like(top1)
        for k in range(2, num_classes):
            other = logits[:, k]
            torch.maximum(top2, torch.minimum(top1, other, out=scratch), out=top2)
            torch.maximum(top1, other, out=top1)
        return (top2 - top1).unsqueeze(1)
    top1, argmax = logits.max(dim=1, keepdim=True)
    top2 = logits.scatter(1, argmax, float("-inf")).amax(dim=1, keepdim=True)
    return top2 - top1


def resolve_subdivision_select(method: str, device) -> str:
    """``method`` itself, or for "auto" the default of ``device``'s type (CPU for unknown ones)."""
    if method == "auto":
        return DEFAULT_SUBDIVISION_SELECT.get(torch.device(device).type,
                                              DEFAULT_SUBDIVISION_SELECT["cpu"])
    if method not in SUBDIVISION_SELECT_METHODS:
        raise ConfigError(
            f"MODEL.POINT_HEAD.SUBDIVISION_SELECT must be 'auto' or one of "
            f"{list(SUBDIVISION_SELECT_METHODS)}, got {method!r}"
        )
    return method


def most_uncertain_cells(uncertainty, num_points: int, method: str = "auto"):
    """
    Flat indices of the ``min(P, M)`` largest values of each row of ``uncertainty``.

    Every method returns the same set per row except where several cells tie at the value of
    the last one taken (then any of them may be chosen; "radix" takes the lowest indices). The
    order within a row is unspecified.

    Args:
        uncertainty (Tensor): (N, M) float.
        num_points (int): P.
        method: one of ``SUBDIVISION_SELECT_METHODS`` or "auto".

    Returns:
        Tensor: (N, min(P, M)) int64.
    """
    method = resolve_subdivision_select(method, uncertainty.device)
    # sym_min: a plain int for concrete sizes, a symbolic one under torch.export.
    k = torch.sym_min(num_points, uncertainty.shape[1])
    if method == "topk":
        return torch.topk(uncertainty, k, dim=1, sorted=False).indices
    if method == "sort":
        return torch.sort(uncertainty, dim=1, descending=True).indices[:, :k]
    return _radix_select(uncertainty, k)


_HALF = 1 << 16  # 16-bit digits: two histogram passes over a 32-bit key


def _suffix_counts(hist):
    """(N, B) counts -> (N, B + 1): entry b counts the values in bins >= b (the last is 0)."""
    counts = hist.flip(1).cumsum(1).flip(1)
    return torch.cat([counts, torch.zeros_like(counts[:, :1])], dim=1)


def _histogram(bins, num_bins: int):
    """(N, M) int64 bins in [0, num_bins] -> (N, num_bins) counts (bin ``num_bins``: dropped)."""
    hist = torch.zeros(bins.shape[0], num_bins + 1, dtype=torch.int64, device=bins.device)
    hist.scatter_add_(1, bins, torch.ones_like(bins))
    return hist[:, :num_bins]


def _radix_select(uncertainty, k):
    """
    The ``k`` largest of each row, exactly, with no sort and no host synchronisation: map each
    float32 to an int32 key of the same order, find the ``k``-th largest key digit by digit (a
    16-bit histogram of the high halves, then one of the low halves of the keys in the chosen high
    bin), then write the indices of the keys above it, and of as many of the keys equal to it as
    needed (lowest indices first), to consecutive slots (cumulative sums give the slots).
    """
    n, m = uncertainty.shape
    # + 0.0 turns -0.0 into +0.0 (they compare equal, their bit patterns do not).
    bits = (uncertainty.to(torch.float32) + 0.0).contiguous().view(torch.int32)
    # Two's-complement bits of a float order like the float for >= 0 and reversed for < 0.
    key = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    high = (key >> 16).to(torch.int64) + _HALF // 2  # [0, 2^16), ordered like the key
    low = (key & 0xFFFF).to(torch.int64)

    counts_high = _suffix_counts(_histogram(high, _HALF))
    # The bin of the k-th largest key: the last bin with at least k keys at or above it.
    bin_high = (counts_high >= k).sum(1, keepdim=True) - 1
    above = counts_high.gather(1, bin_high + 1)
    in_bin = high == bin_high
    counts_low = _suffix_counts(_histogram(torch.where(in_bin, low, _HALF), _HALF))
    bin_low = (counts_low >= k - above).sum(1, keepdim=True) - 1
    above = above + counts_low.gather(1, bin_low + 1)
    threshold = ((bin_high - _HALF // 2) * _HALF + bin_low).to(torch.int32)

    ties = key == threshold
    take = (key > threshold) | (ties & (ties.cumsum(1) <= k - above))
    slot = torch.where(take, take.cumsum(1) - 1, k)
    indices = torch.zeros(n, k + 1, dtype=torch.int64, device=uncertainty.device)
    positions = torch.arange(m, device=uncertainty.device).expand(n, m)
    return indices.scatter_(1, slot, positions)[:, :k]


def grid_cell_centers(indices, height: int, width: int):
    """
    Normalised centres of cells given by flat indices into an H x W grid.

    Args:
        indices (Tensor): (N, P) integer indices in [0, H * W).

    Returns:
        Tensor: (N, P, 2) float32 coordinates ``(x, y)``.
    """
    # row = index // W, column = index - row * W (not ``%``: the ONNX exporter cannot translate
    # a remainder by a symbolic width)
    row = torch.div(indices, width, rounding_mode="floor")
    x = (indices - row * width).to(torch.float32).add_(0.5).div_(width)
    y = row.to(torch.float32).add_(0.5).div_(height)
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
    def __init__(self, *, oversample_ratio: float, importance_sample_ratio: float,
                 subdivision_select: str = "auto"):
        """
        Args:
            oversample_ratio: k >= 1.
            importance_sample_ratio: beta in [0, 1].
            subdivision_select: how inference finds the most uncertain cells, "auto" or one of
                ``SUBDIVISION_SELECT_METHODS`` (see :func:`most_uncertain_cells`).
        """
        resolve_subdivision_select(subdivision_select, "cpu")  # validates the name
        if oversample_ratio < 1:
            raise ConfigError(f"MODEL.POINT_HEAD.OVERSAMPLE_RATIO must be >= 1, got {oversample_ratio}")
        if not 0.0 <= importance_sample_ratio <= 1.0:
            raise ConfigError(
                "MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO must be in [0, 1], "
                f"got {importance_sample_ratio}"
            )
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.subdivision_select = subdivision_select

    @classmethod
    def from_config(cls, cfg):
        return {
            "oversample_ratio": cfg.MODEL.POINT_HEAD.OVERSAMPLE_RATIO,
            "importance_sample_ratio": cfg.MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO,
            "subdivision_select": cfg.MODEL.POINT_HEAD.SUBDIVISION_SELECT,
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
            indices (Tensor): (N, P') flat indices into H x W, P' = min(P, H * W), in no
                particular order.
            coords (Tensor): (N, P', 2) the cell centres.
        """
        n, _, h, w = logits.shape
        uncertainty = calculate_uncertainty(logits).view(n, h * w)
        indices = most_uncertain_cells(uncertainty, num_points, self.subdivision_select)
        return indices, grid_cell_centers(indices, h, w)


def build_point_sampler(cfg):
    """Build the sampler named by ``cfg.MODEL.POINT_HEAD.SAMPLER``."""
    return lookup(POINT_SAMPLER_REGISTRY, "MODEL.POINT_HEAD.SAMPLER", cfg.MODEL.POINT_HEAD.SAMPLER)(
        cfg)
