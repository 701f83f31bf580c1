"""cross_entropy_with_ignore (pointrend_seg/modeling/losses.py): plain CE and hard pixel mining."""
import pytest
import torch
from torch.nn import functional as F

from detectron2.projects.deeplab.loss import DeepLabCE

from pointrend_seg.modeling.losses import cross_entropy_with_ignore

IGNORE = 255


def _data(shape=(2, 6, 5, 7), num_ignored=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    n, k = shape[:2]
    logits = torch.randn(*shape, generator=g) * 3
    labels = torch.randint(0, k, (n,) + tuple(shape[2:]), generator=g)
    flat = labels.view(-1)
    flat[torch.randperm(flat.numel(), generator=g)[:num_ignored]] = IGNORE
    return logits, labels


def _per_position_losses_by_hand(logits, labels):
    """-log softmax at the label, for the labelled positions (flattened)."""
    k = logits.shape[1]
    lg = logits.movedim(1, -1).reshape(-1, k).double()
    lb = labels.reshape(-1)
    valid = lb != IGNORE
    lg, lb = lg[valid], lb[valid]
    return torch.logsumexp(lg, dim=1) - lg[torch.arange(lb.numel()), lb]


@pytest.mark.parametrize("shape", [(2, 6, 5, 7), (3, 4, 50)])  # pixels (N,K,H,W) and points
def test_top_k_one_equals_torch_cross_entropy(shape):
    logits, labels = _data(shape)
    got = cross_entropy_with_ignore(logits, labels, IGNORE)
    ref = F.cross_entropy(logits, labels, ignore_index=IGNORE)
    torch.testing.assert_close(got, ref)
    # ignored positions really are excluded (not counted as zero losses in the mean)
    hand = _per_position_losses_by_hand(logits, labels).mean().float()
    torch.testing.assert_close(got, hand, atol=1e-5, rtol=1e-5)


def test_all_ignore_is_zero_with_finite_gradient():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = torch.full((2, 4, 4), IGNORE, dtype=torch.int64)
    # plain mean CE would be 0/0
    assert torch.isnan(F.cross_entropy(logits, labels, ignore_index=IGNORE))
    for top_k in (1.0, 0.2):
        loss = cross_entropy_with_ignore(logits, labels, IGNORE, top_k)
        assert loss.item() == 0.0 and torch.isfinite(loss)
        logits.grad = None
        loss.backward()
        assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.999, 0.01])
def test_hard_pixel_mining_averages_top_fraction_of_labelled(fraction):
    logits, labels = _data((2, 6, 5, 7), num_ignored=11)  # 70 positions, 59 labelled
    per = _per_position_losses_by_hand(logits, labels)
    assert per.numel() == 59
    k = max(1, int(fraction * 59))  # 11, 29, 58, 1 (at least one)
    expected = per.sort(descending=True).values[:k].mean().float()
    got = cross_entropy_with_ignore(logits, labels, IGNORE, fraction)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # differs from the plain mean: really a subset
    assert got > cross_entropy_with_ignore(logits, labels, IGNORE) + 1e-3


def test_hard_pixel_mining_matches_deeplab_ce_without_ignored_pixels():
    logits, labels = _data((2, 5, 9, 11), num_ignored=0)
    ref = DeepLabCE(ignore_label=IGNORE, top_k_percent_pixels=0.2)(logits, labels)
    torch.testing.assert_close(cross_entropy_with_ignore(logits, labels, IGNORE, 0.2), ref)


def test_hard_pixel_mining_counts_only_labelled_pixels():
    """
    Deliberate deviation from Detectron2's DeepLabCE, which takes the top k% of *all* pixels
    (ignored ones contributing zero losses): ours takes the top k% of the labelled pixels, so an
    image with a large ignored region is not diluted.
    """
    logits, labels = _data((1, 5, 10, 10), num_ignored=60)  # 40 labelled
    per = _per_position_losses_by_hand(logits, labels).sort(descending=True).values
    ours = cross_entropy_with_ignore(logits, labels, IGNORE, 0.25)
    torch.testing.assert_close(ours, per[:10].mean().float(), atol=1e-5, rtol=1e-5)
    deeplab = DeepLabCE(ignore_label=IGNORE, top_k_percent_pixels=0.25)(logits, labels)
    torch.testing.assert_close(deeplab, per[:25].mean().float(), atol=1e-5, rtol=1e-5)


def test_hard_pixel_mining_gradient_only_on_selected_pixels():
    logits, labels = _data((1, 4, 6, 6), num_ignored=6)  # 30 labelled
    logits.requires_grad_(True)
    cross_entropy_with_ignore(logits, labels, IGNORE, 0.2).backward()
    touched = (logits.grad.abs().sum(dim=1) > 0)
    assert touched.sum().item() == 6  # int(0.2 * 30)
    assert not touched[labels == IGNORE].any()


def test_low_precision_logits_are_reduced_in_float32():
    logits, labels = _data()
    low = logits.to(torch.bfloat16)
    got = cross_entropy_with_ignore(low, labels, IGNORE)
    assert got.dtype == torch.float32
    torch.testing.assert_close(
        got, F.cross_entropy(low.float(), labels, ignore_index=IGNORE)
    )


def test_loss_type_config():
    """LOSS_TYPE / HARD_PIXEL_TOP_K reach the head (the DeepLab config keys)."""
    from detectron2.layers import ShapeSpec

    from conftest import demo_config
    from pointrend_seg.modeling import BilinearSegHead

    shape = {"res2": ShapeSpec(channels=8, stride=4), "res5": ShapeSpec(channels=16, stride=16)}
    cfg = demo_config("MODEL.SEM_SEG_HEAD.LOSS_TYPE", "hard_pixel_mining",
                      "MODEL.SEM_SEG_HEAD.HARD_PIXEL_TOP_K", "0.3")
    assert BilinearSegHead(cfg, shape).hard_pixel_top_k == 0.3
    cfg = demo_config("MODEL.SEM_SEG_HEAD.LOSS_TYPE", "cross_entropy")
    assert BilinearSegHead(cfg, shape).hard_pixel_top_k == 1.0
    cfg = demo_config("MODEL.SEM_SEG_HEAD.LOSS_TYPE", "focal")
    with pytest.raises(ValueError, match="LOSS_TYPE"):
        BilinearSegHead(cfg, shape)
    cfg = demo_config("MODEL.SEM_SEG_HEAD.LOSS_TYPE", "hard_pixel_mining",
                      "MODEL.SEM_SEG_HEAD.HARD_PIXEL_TOP_K", "0.0")
    with pytest.raises(ValueError, match="HARD_PIXEL_TOP_K"):
        BilinearSegHead(cfg, shape)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_plain_cross_entropy_does_not_synchronise_with_the_host():
    logits = torch.randn(2, 5, 64, device="cuda", requires_grad=True)
    labels = torch.randint(0, 5, (2, 64), device="cuda")
    labels[0, :10] = 255
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation raises
    try:
        loss = cross_entropy_with_ignore(logits, labels, 255)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ref = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255)
    torch.testing.assert_close(loss, ref)
