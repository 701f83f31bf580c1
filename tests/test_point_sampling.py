"""
PointRend's point functions (pointrend_seg/modeling/point_sampling.py) against Detectron2's
PointRend project, used as an oracle on identical tensors and RNG seeds.
"""
import pytest
import torch

from detectron2.projects.point_rend import point_features
from detectron2.projects.point_rend.point_features import (
    get_uncertain_point_coords_on_grid,
    get_uncertain_point_coords_with_randomness,
)
from detectron2.projects.point_rend.semantic_seg import (
    calculate_uncertainty as oracle_calculate_uncertainty,
)

from pointrend_seg.modeling.point_sampling import (
    calculate_uncertainty,
    grid_cell_centers,
    most_uncertain_cells,
    point_sample,
    sample_point_labels,
    training_point_coords,
)


def test_point_sample_and_uncertainty_are_detectron2s():
    """Imported, not copied: one definition of bilinear point sampling and of the uncertainty."""
    assert point_sample is point_features.point_sample
    assert calculate_uncertainty is oracle_calculate_uncertainty


def test_point_sample_cell_centres_read_exact_values():
    """At cell centres (module convention) bilinear sampling returns the stored value exactly."""
    x = torch.randn(2, 3, 5, 7)
    idx = torch.arange(35).unsqueeze(0).expand(2, -1)
    coords = grid_cell_centers(idx, 5, 7)
    torch.testing.assert_close(point_sample(x, coords, align_corners=False), x.view(2, 3, 35),
                               atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------------
# inference: most uncertain grid cells
# ------------------------------------------------------------------------------------------------
def _as_sets(indices):
    return [set(row.tolist()) for row in indices]


@pytest.mark.parametrize("h,w,num_points", [(8, 8, 10), (13, 7, 50), (5, 6, 30), (5, 6, 1000),
                                            (64, 96, 1000)])
def test_most_uncertain_cells_and_centres_match_oracle(h, w, num_points):
    torch.manual_seed(h * w + num_points)
    logits = torch.randn(2, 4, h, w)  # continuous random values: no ties
    uncertainty = calculate_uncertainty(logits)
    idx = most_uncertain_cells(uncertainty, num_points)
    coords = grid_cell_centers(idx, h, w)
    ref_idx, ref_coords = get_uncertain_point_coords_on_grid(uncertainty, num_points)
    assert idx.shape == (2, min(num_points, h * w))  # N > H*W: capped at H*W like the oracle
    assert idx.dtype == torch.int64
    # the same cells (the order of the points is not part of the contract)
    assert _as_sets(idx) == _as_sets(ref_idx)
    order, ref_order = idx.argsort(dim=1), ref_idx.argsort(dim=1)
    # (j + 0.5) / W here, 0.5 / W + j / W in Detectron2: equal up to an ulp
    torch.testing.assert_close(
        torch.gather(coords, 1, order.unsqueeze(2).expand(-1, -1, 2)),
        torch.gather(ref_coords, 1, ref_order.unsqueeze(2).expand(-1, -1, 2)),
        atol=1e-6, rtol=0,
    )
    if num_points >= h * w:
        assert torch.equal(idx.sort(dim=1).values, torch.arange(h * w).expand(2, -1))


def _check_top_k_with_ties(u, idx, k):
    """idx (N, k) holds k distinct cells per row: every cell above the k-th largest value and
    enough of the cells equal to it."""
    assert idx.shape == (u.shape[0], k)
    for row, sel in zip(u, idx):
        assert len(set(sel.tolist())) == k  # distinct
        kth = row.sort(descending=True).values[k - 1]
        chosen = row[sel]
        assert (chosen >= kth).all()
        assert set(torch.nonzero(row > kth)[:, 0].tolist()) <= set(sel.tolist())
        assert (chosen == kth).sum() == k - (row > kth).sum()


def test_most_uncertain_cells_with_ties():
    g = torch.Generator().manual_seed(0)
    # Few distinct values: the k-th largest is tied with many cells on both sides of the cut.
    u = -torch.randint(0, 5, (3, 997), generator=g).float() * 0.25
    u[1] = 0.0  # a row of identical values (every cell ties)
    for k in (1, 100, 400, 996, 997, 5000):
        _check_top_k_with_ties(u, most_uncertain_cells(u, k), min(k, u.shape[1]))


# ------------------------------------------------------------------------------------------------
# training: over-generation + importance sampling + random points
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "num_points,k,beta", [(64, 3, 0.75), (100, 2, 0.5), (37, 1, 1.0), (50, 4.5, 0.3)]
)
def test_training_points_match_oracle_same_seed(num_points, k, beta):
    logits = torch.randn(3, 5, 9, 11, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(1234)
    ours = training_point_coords(logits, num_points, k, beta)
    torch.manual_seed(1234)
    ref = get_uncertain_point_coords_with_randomness(
        logits, oracle_calculate_uncertainty, num_points, k, beta
    )
    # Same RNG draw order as the oracle (k*P candidates first, then the (1-beta)*P random ones),
    # hence bit-identical.
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("num_points,beta", [(4000, 0.0), (10, 0.05)])
def test_training_points_without_uncertain_ones_are_one_uniform_draw(num_points, beta):
    """
    Where int(beta * P) = 0 the oracle still draws (and discards) the k*P candidates before the
    random points; ours draws the P random points only (the draws every seeded run of this
    project made).
    """
    torch.manual_seed(0)
    pts = training_point_coords(torch.randn(2, 3, 4, 4), num_points, 3, beta)
    torch.manual_seed(0)
    torch.randn(2, 3, 4, 4)
    assert torch.equal(pts, torch.rand(2, num_points, 2))


def test_training_points_counts_and_range():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 6, 6)
    num_points, k, beta = 101, 3, 0.75
    torch.manual_seed(5)
    pts = training_point_coords(logits, num_points, k, beta)
    assert pts.shape == (2, num_points, 2) and pts.dtype == torch.float32
    assert (pts >= 0).all() and (pts <= 1).all()
    num_imp = int(beta * num_points)  # 75
    # replay the draws: the first num_imp points are the most uncertain of the k*P candidates,
    # the remaining ones are the next uniform draw
    torch.manual_seed(5)
    cand = torch.rand(2, int(k * num_points), 2)
    rest = torch.rand(2, num_points - num_imp, 2)
    u = calculate_uncertainty(point_sample(logits, cand, align_corners=False))[:, 0]
    thresh = u.sort(dim=1, descending=True).values[:, num_imp - 1 : num_imp]
    u_sel = calculate_uncertainty(
        point_sample(logits, pts[:, :num_imp], align_corners=False))[:, 0]
    assert (u_sel >= thresh - 1e-6).all()
    assert torch.equal(pts[:, num_imp:], rest)


def _checkerboard_logits(size):
    """K=2 logits, +-1 in a checkerboard: every grid cell is confident (gap 2)."""
    i = torch.arange(size).view(-1, 1)
    j = torch.arange(size).view(1, -1)
    s = ((i + j) % 2 * 2 - 1).to(torch.float32)
    return torch.stack([s, -s]).unsqueeze(0)  # (1, 2, size, size)


def _near_interior_border_fraction(pts, size, tol):
    """Fraction of points within ``tol`` cells of an interior cell border (x or y)."""
    q = pts * size  # cell units; borders at integers 1..size-1
    d = (q - q.round()).abs()
    interior = (q.round() >= 1) & (q.round() <= size - 1)
    near = (d < tol) & interior
    return (near[..., 0] | near[..., 1]).float().mean().item()


def _wrong_grid_then_interpolate(coarse_logits, num_points, k):
    """The mistake the paper warns about: uncertainty on the grid, then interpolated."""
    n = coarse_logits.shape[0]
    cand = torch.rand(n, int(k * num_points), 2)
    u = point_sample(calculate_uncertainty(coarse_logits), cand, align_corners=False)[:, 0]
    top = torch.topk(u, k=num_points, dim=1).indices
    return torch.gather(cand, 1, top.unsqueeze(2).expand(-1, -1, 2))


def test_training_uncertainty_is_computed_on_interpolated_logits():
    """
    Checkerboard: every grid cell has gap 2, but the bilinearly interpolated logits tie (gap 0) on
    the borders between cells. With beta = 1 the selected points must lie on those borders. An
    implementation that computes the uncertainty on the grid and interpolates it sees a constant
    map inside (and only the zero-padding fall-off at the image edge), so it does not.
    """
    size, num_points, k = 8, 512, 10
    logits = _checkerboard_logits(size)
    torch.manual_seed(0)
    pts = training_point_coords(logits, num_points, k, 1.0)
    torch.manual_seed(0)
    wrong = _wrong_grid_then_interpolate(logits, num_points, k)
    torch.manual_seed(0)
    uniform = torch.rand(1, num_points * k, 2)

    tol = 0.1  # cells
    base = _near_interior_border_fraction(uniform, size, tol)
    ours = _near_interior_border_fraction(pts, size, tol)
    bad = _near_interior_border_fraction(wrong, size, tol)
    # uniform: ~ 1 - (1 - 0.2 * 7/8)^2 ~ 0.32; top 10% of the candidates by |l0 - l1| are all
    # within ~0.07 cells of a border
    assert 0.2 < base < 0.45
    assert ours > 0.97, ours
    assert bad < 0.5, bad
    # the point gap |l0 - l1| at selected points is far below the grid gap (2)
    gap = -calculate_uncertainty(point_sample(logits, pts, align_corners=False))
    assert gap.max().item() < 0.1
    # the wrong implementation concentrates on the image edge (outer half cell) instead
    q = wrong[0] * size
    edge = ((q < 0.5) | (q > size - 0.5)).any(dim=1).float().mean().item()
    assert edge > 0.9


# ------------------------------------------------------------------------------------------------
# labels at points
# ------------------------------------------------------------------------------------------------
def test_sample_point_labels_nearest_and_ignore_passthrough():
    torch.manual_seed(0)
    h, w = 7, 9
    labels = torch.randint(0, 19, (2, h, w))
    labels[0, 2:5, 3:6] = 255
    labels[1, :, 0] = 255
    # points strictly inside cells (avoid exact borders), some near borders and near the edges
    rows = torch.randint(0, h, (2, 300))
    cols = torch.randint(0, w, (2, 300))
    off = torch.rand(2, 300, 2) * 0.98 + 0.01
    coords = torch.stack([(cols + off[..., 0]) / w, (rows + off[..., 1]) / h], dim=2)
    got = sample_point_labels(labels, coords)
    expected = torch.stack([labels[b, rows[b], cols[b]] for b in range(2)])
    assert got.dtype == torch.int64
    assert torch.equal(got, expected)
    assert (got == 255).any()  # the ignore value came through unchanged (not interpolated)
    # same as the oracle's label sampling (nearest grid_sample of float labels)
    ref = point_features.point_sample(
        labels.unsqueeze(1).float(), coords, mode="nearest", align_corners=False
    ).squeeze(1).long()
    assert torch.equal(got, ref)


def test_sample_point_labels_no_mixing_between_classes():
    """Bilinear sampling would give e.g. (0 + 255) / 2 between an ignore and a class-0 cell."""
    labels = torch.tensor([[[0, 255], [3, 1]]])
    coords = torch.tensor([[[0.49, 0.25], [0.51, 0.25], [0.49, 0.75], [0.51, 0.75]]])
    assert sample_point_labels(labels, coords).tolist() == [[0, 255, 3, 1]]
