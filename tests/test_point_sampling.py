"""
Point machinery (pointrend_seg/modeling/point_sampling.py) against Detectron2's PointRend project,
used as an oracle on identical tensors and RNG seeds.
"""
import pytest
import torch

from detectron2.projects.point_rend.point_features import (
    get_uncertain_point_coords_on_grid,
    get_uncertain_point_coords_with_randomness,
)
from detectron2.projects.point_rend.point_features import point_sample as oracle_point_sample
from detectron2.projects.point_rend.semantic_seg import (
    calculate_uncertainty as oracle_calculate_uncertainty,
)

from pointrend_seg.modeling.point_sampling import (
    SUBDIVISION_SELECT_METHODS,
    UncertaintyPointSampler,
    calculate_uncertainty,
    grid_cell_centers,
    most_uncertain_cells,
    point_sample,
    resolve_subdivision_select,
    sample_point_labels,
)


# ------------------------------------------------------------------------------------------------
# point_sample
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,c,h,w,p", [(1, 1, 1, 1, 5), (2, 3, 7, 5, 33), (3, 4, 16, 23, 200)])
def test_point_sample_3d_coords_matches_oracle(n, c, h, w, p):
    g = torch.Generator().manual_seed(h * 100 + w)
    x = torch.randn(n, c, h, w, generator=g)
    # include points outside the cell centres' hull (zero padding region) and the exact borders
    coords = torch.rand(n, p, 2, generator=g)
    coords[:, 0] = torch.tensor([0.0, 0.0])
    coords[:, 1] = torch.tensor([1.0, 1.0])
    ours = point_sample(x, coords)
    ref = oracle_point_sample(x, coords, align_corners=False)
    assert ours.shape == (n, c, p)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("n,c,h,w,gh,gw", [(1, 2, 5, 9, 3, 4), (2, 3, 16, 12, 8, 8)])
def test_point_sample_4d_coords_matches_oracle(n, c, h, w, gh, gw):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, c, h, w, generator=g)
    coords = torch.rand(n, gh, gw, 2, generator=g)
    ours = point_sample(x, coords)
    ref = oracle_point_sample(x, coords, align_corners=False)
    assert ours.shape == (n, c, gh, gw)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_point_sample_cell_centres_read_exact_values():
    """At cell centres (module convention) bilinear sampling returns the stored value exactly."""
    x = torch.randn(2, 3, 5, 7)
    idx = torch.arange(35).unsqueeze(0).expand(2, -1)
    coords = grid_cell_centers(idx, 5, 7)
    torch.testing.assert_close(point_sample(x, coords), x.view(2, 3, 35), atol=1e-6, rtol=0)


def test_point_sample_kwargs_forwarded():
    x = torch.randn(1, 2, 4, 4)
    coords = torch.rand(1, 50, 2)
    torch.testing.assert_close(
        point_sample(x, coords, mode="nearest"),
        oracle_point_sample(x, coords, mode="nearest", align_corners=False),
    )


# ------------------------------------------------------------------------------------------------
# uncertainty
# ------------------------------------------------------------------------------------------------
def _topk_uncertainty(logits):
    """The definition, as Detectron2 computes it: top-2 over classes by a sort."""
    top2 = torch.topk(logits, k=2, dim=1).values
    return (top2[:, 1] - top2[:, 0]).unsqueeze(1)


def _uncertainty_both_paths(logits):
    """calculate_uncertainty by its CPU fast path and by its generic path (max, masked max),
    which it takes for inputs that need a gradient (and on CUDA)."""
    fast = calculate_uncertainty(logits)
    generic = calculate_uncertainty(logits.clone().requires_grad_(True)).detach()
    return fast, generic


def test_calculate_uncertainty_hand_computation():
    # (N=1, K=3, 2 positions)
    logits = torch.tensor([[[3.0, -1.0], [1.0, 2.0], [2.5, 2.0]]])
    # position 0: top1 3.0, top2 2.5 -> -0.5; position 1: top1 2.0, top2 2.0 (tie) -> 0
    expected = torch.tensor([[[-0.5, 0.0]]])
    for got in _uncertainty_both_paths(logits):
        torch.testing.assert_close(got, expected)
    logits4 = torch.randn(2, 5, 3, 4)
    top = logits4.sort(dim=1, descending=True).values
    torch.testing.assert_close(calculate_uncertainty(logits4), -(top[:, :1] - top[:, 1:2]))
    torch.testing.assert_close(
        calculate_uncertainty(logits4), oracle_calculate_uncertainty(logits4)
    )
    assert (calculate_uncertainty(logits4) <= 0).all()


@pytest.mark.parametrize("shape", [(2, 19, 13, 17), (3, 2, 50), (1, 7, 1, 1), (2, 4, 6)])
def test_calculate_uncertainty_equals_topk_bit_for_bit_with_ties(shape):
    """
    Both implementations (no sort over classes) equal top-2 by topk exactly, also where the
    maximum is attained twice or more (gap 0), where all classes tie, and with infinities (an
    infinite gap gives inf - inf = nan in both; compared after nan_to_num).
    """
    g = torch.Generator().manual_seed(sum(shape))
    # small integers: many ties among the top classes
    logits = torch.randint(-3, 3, shape, generator=g).float()
    logits.view(-1)[::97] = float("inf")
    logits.view(-1)[5::89] = float("-inf")
    continuous = torch.randn(shape, generator=g) * 10
    for x in (logits, continuous, torch.zeros(shape)):
        expected = _topk_uncertainty(x)
        for got in _uncertainty_both_paths(x):
            assert got.shape == expected.shape
            assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(expected))
    if logits[:, 0].numel() >= 50:  # the tie cases really occur in the input
        assert (_topk_uncertainty(logits) == 0).any()


def test_calculate_uncertainty_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        calculate_uncertainty(torch.randn(1, 1, 4, 4))


def test_calculate_uncertainty_generic_path_is_differentiable():
    logits = torch.randn(2, 5, 7, requires_grad=True)
    calculate_uncertainty(logits).sum().backward()
    # d(top2 - top1): +1 on the runner-up class, -1 on the winner, per location
    assert torch.equal(logits.grad.sum(dim=1), torch.zeros(2, 7))
    assert torch.equal(logits.grad.abs().sum(dim=1), torch.full((2, 7), 2.0))


# ------------------------------------------------------------------------------------------------
# inference: most uncertain grid cells
# ------------------------------------------------------------------------------------------------
def _as_sets(indices):
    return [set(row.tolist()) for row in indices]


@pytest.mark.parametrize("method", SUBDIVISION_SELECT_METHODS + ("auto",))
@pytest.mark.parametrize("h,w,num_points", [(8, 8, 10), (13, 7, 50), (5, 6, 30), (5, 6, 1000),
                                            (64, 96, 1000)])
def test_subdivision_points_match_oracle(method, h, w, num_points):
    torch.manual_seed(h * w + num_points)
    logits = torch.randn(2, 4, h, w)  # continuous random values: no ties
    sampler = UncertaintyPointSampler(oversample_ratio=3, importance_sample_ratio=0.75,
                                      subdivision_select=method)
    idx, coords = sampler.subdivision_points(logits, num_points)
    ref_idx, ref_coords = get_uncertain_point_coords_on_grid(
        oracle_calculate_uncertainty(logits), num_points
    )
    assert idx.shape == (2, min(num_points, h * w))  # N > H*W: capped at H*W like the oracle
    assert idx.dtype == torch.int64
    # the same cells (the order of the points is not part of the contract)
    assert _as_sets(idx) == _as_sets(ref_idx)
    order, ref_order = idx.argsort(dim=1), ref_idx.argsort(dim=1)
    torch.testing.assert_close(
        torch.gather(coords, 1, order.unsqueeze(2).expand(-1, -1, 2)),
        torch.gather(ref_coords, 1, ref_order.unsqueeze(2).expand(-1, -1, 2)),
        atol=1e-6, rtol=0,
    )
    if num_points >= h * w:
        assert torch.equal(idx.sort(dim=1).values, torch.arange(h * w).expand(2, -1))
    # the selected cells are really the most uncertain ones
    u = calculate_uncertainty(logits).view(2, -1)
    k = idx.shape[1]
    assert torch.equal(
        torch.gather(u, 1, idx).sort(dim=1).values, u.sort(dim=1).values[:, -k:]
    )


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


@pytest.mark.parametrize("method", SUBDIVISION_SELECT_METHODS)
def test_most_uncertain_cells_with_ties(method):
    g = torch.Generator().manual_seed(0)
    # Few distinct values: the k-th largest is tied with many cells on both sides of the cut.
    u = -torch.randint(0, 5, (3, 997), generator=g).float() * 0.25  # zeros are -0.0
    u[0, ::2] = torch.where(u[0, ::2] == 0, 0.0, u[0, ::2])  # mixed -0.0 and +0.0 (equal)
    u[1] = 0.0  # a row of identical values (every cell ties)
    for k in (1, 100, 400, 996, 997, 5000):
        idx = most_uncertain_cells(u, k, method)
        _check_top_k_with_ties(u, idx, min(k, u.shape[1]))
    if method == "radix":
        # ties are broken towards the lowest flat index (deterministic), -0.0 and 0.0 included
        for k in (100, 400):
            idx = most_uncertain_cells(u, k, method)
            for row, sel in zip(u, idx):
                kth = row.sort(descending=True).values[k - 1]
                tied = torch.nonzero(row == kth)[:, 0]
                taken = sorted(i for i in sel.tolist() if row[i] == kth)
                assert taken == tied[: len(taken)].tolist()


@pytest.mark.parametrize("method", SUBDIVISION_SELECT_METHODS)
def test_most_uncertain_cells_exotic_values(method):
    """
    Values that exercise the radix select: keys equal in their high 16 bits and differing only in
    the low ones, both zeros (-0.0 and 0.0 are equal), infinities, denormals, huge magnitudes,
    positive values (not produced by calculate_uncertainty, still ordered right).
    """
    base = torch.tensor(-1.0)
    near = base + torch.arange(1, 200, dtype=torch.float32) * 2e-7  # same exponent, close bits
    special = torch.tensor([0.0, -0.0, float("-inf"), float("inf"), 1e-45, -1e-45, -3e38, 3e38,
                            -1e-30, 5.0, -5.0, -0.0, 0.0])
    g = torch.Generator().manual_seed(1)
    row = torch.cat([near, special, torch.randn(300, generator=g) * 1e3])
    u = torch.stack([row, row[torch.randperm(row.numel(), generator=g)]])
    for k in (1, 2, 5, 13, 150, 205, 400, row.numel()):
        idx = most_uncertain_cells(u, k, method)
        _check_top_k_with_ties(u, idx, k)


def test_select_method_validation_and_auto():
    assert resolve_subdivision_select("auto", "cpu") in SUBDIVISION_SELECT_METHODS
    assert resolve_subdivision_select("auto", "cuda") in SUBDIVISION_SELECT_METHODS
    assert resolve_subdivision_select("radix", "cpu") == "radix"
    with pytest.raises(ValueError, match="MODEL.POINT_HEAD.SUBDIVISION_SELECT"):
        UncertaintyPointSampler(oversample_ratio=3, importance_sample_ratio=0.75,
                                subdivision_select="bitonic")
    with pytest.raises(ValueError, match="MODEL.POINT_HEAD.SUBDIVISION_SELECT"):
        most_uncertain_cells(torch.randn(1, 10), 3, "heap")


# ------------------------------------------------------------------------------------------------
# training: over-generation + importance sampling + random points
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "num_points,k,beta", [(64, 3, 0.75), (100, 2, 0.5), (37, 1, 1.0), (50, 4.5, 0.3)]
)
def test_training_points_match_oracle_same_seed(num_points, k, beta):
    logits = torch.randn(3, 5, 9, 11, generator=torch.Generator().manual_seed(3))
    sampler = UncertaintyPointSampler(oversample_ratio=k, importance_sample_ratio=beta)
    torch.manual_seed(1234)
    ours = sampler.training_points(logits, num_points)
    torch.manual_seed(1234)
    ref = get_uncertain_point_coords_with_randomness(
        logits, oracle_calculate_uncertainty, num_points, k, beta
    )
    # Same RNG draw order as the oracle (k*P candidates first, then the (1-beta)*P random ones),
    # hence bit-identical.
    assert torch.equal(ours, ref)


def test_training_points_beta_zero_is_uniform():
    """
    With beta = 0 the oracle still draws (and discards) the k*P candidates before the random
    points; ours skips that draw. Both give P uniform points, so only properties are checked.
    """
    sampler = UncertaintyPointSampler(oversample_ratio=3, importance_sample_ratio=0.0)
    torch.manual_seed(0)
    pts = sampler.training_points(torch.randn(2, 3, 4, 4), 4000)
    assert pts.shape == (2, 4000, 2)
    assert (pts >= 0).all() and (pts <= 1).all()
    assert abs(pts.mean().item() - 0.5) < 0.02


def test_training_points_counts_and_range():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 6, 6)
    num_points, k, beta = 101, 3, 0.75
    sampler = UncertaintyPointSampler(oversample_ratio=k, importance_sample_ratio=beta)
    torch.manual_seed(5)
    pts = sampler.training_points(logits, num_points)
    assert pts.shape == (2, num_points, 2) and pts.dtype == torch.float32
    assert (pts >= 0).all() and (pts <= 1).all()
    num_imp = int(beta * num_points)  # 75
    # replay the draws: the first num_imp points are the most uncertain of the k*P candidates,
    # the remaining ones are the next uniform draw
    torch.manual_seed(5)
    cand = torch.rand(2, int(k * num_points), 2)
    rest = torch.rand(2, num_points - num_imp, 2)
    u = calculate_uncertainty(point_sample(logits, cand))[:, 0]
    thresh = u.sort(dim=1, descending=True).values[:, num_imp - 1 : num_imp]
    u_sel = calculate_uncertainty(point_sample(logits, pts[:, :num_imp]))[:, 0]
    assert (u_sel >= thresh - 1e-6).all()
    assert torch.equal(pts[:, num_imp:], rest)


def test_sampler_rejects_bad_ratios():
    with pytest.raises(ValueError, match="OVERSAMPLE_RATIO"):
        UncertaintyPointSampler(oversample_ratio=0.5, importance_sample_ratio=0.5)
    with pytest.raises(ValueError, match="IMPORTANCE_SAMPLE_RATIO"):
        UncertaintyPointSampler(oversample_ratio=3, importance_sample_ratio=1.5)


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
    u = point_sample(calculate_uncertainty(coarse_logits), cand)[:, 0]
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
    sampler = UncertaintyPointSampler(oversample_ratio=k, importance_sample_ratio=1.0)
    torch.manual_seed(0)
    pts = sampler.training_points(logits, num_points)
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
    gap = -calculate_uncertainty(point_sample(logits, pts))
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
    ref = oracle_point_sample(
        labels.unsqueeze(1).float(), coords, mode="nearest", align_corners=False
    ).squeeze(1).long()
    assert torch.equal(got, ref)


def test_sample_point_labels_no_mixing_between_classes():
    """Bilinear sampling would give e.g. (0 + 255) / 2 between an ignore and a class-0 cell."""
    labels = torch.tensor([[[0, 255], [3, 1]]])
    coords = torch.tensor([[[0.49, 0.25], [0.51, 0.25], [0.49, 0.75], [0.51, 0.75]]])
    assert sample_point_labels(labels, coords).tolist() == [[0, 255, 3, 1]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", SUBDIVISION_SELECT_METHODS)
def test_uncertainty_and_selection_on_cuda_equal_cpu(method):
    """The CUDA path of calculate_uncertainty (max, masked max) and each selection method on
    CUDA: the values of topk bit for bit, the same cells as on CPU, no host synchronisation."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 19, 96, 160, generator=g)
    ties = torch.randint(-2, 2, (2, 19, 64, 64), generator=g).float()
    for x in (logits, ties):
        expected = _topk_uncertainty(x)
        torch.cuda.set_sync_debug_mode("error")
        try:
            got = calculate_uncertainty(x.cuda())
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert torch.equal(got.cpu(), expected)
    u = calculate_uncertainty(logits).view(2, -1)
    for k in (1000, 8192, u.shape[1] + 5):
        torch.cuda.set_sync_debug_mode("error")
        try:
            idx = most_uncertain_cells(u.cuda(), k, method)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert _as_sets(idx.cpu()) == _as_sets(most_uncertain_cells(u, k, "topk"))
    tied = calculate_uncertainty(ties).view(2, -1)
    _check_top_k_with_ties(tied, most_uncertain_cells(tied.cuda(), 1000, method).cpu(), 1000)
