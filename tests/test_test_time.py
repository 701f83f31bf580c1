"""Sliding-window inference and multi-scale + flip test-time augmentation."""
import itertools

import pytest
import torch

from detectron2.modeling import build_model

from pointrend_seg.modeling.test_time import (
    blend_weights,
    multi_scale_flip_inference,
    sliding_window_inference,
    window_starts,
)

from conftest import demo_config

torch.manual_seed(0)
MIX = torch.randn(4, 3)  # a pointwise "model": 3 channels -> 4 class logits


def pointwise_predict(image):
    """Exactly translation-equivariant: each output pixel depends on its input pixel only."""
    return torch.einsum("kc,chw->khw", MIX, image) + image.square().sum(0, keepdim=True)


def test_window_starts_cover_and_end_aligned():
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]
    assert window_starts(4, 4, 2) == [0]
    assert window_starts(3, 4, 2) == [0]


@pytest.mark.parametrize("blend", ["mean", "hann"])
def test_sliding_window_equals_whole_image_for_equivariant_model(blend):
    image = torch.randn(3, 3 * 16, 3 * 20)  # three windows per side
    out = sliding_window_inference(pointwise_predict, image, (16, 20), (11, 13), blend)
    torch.testing.assert_close(out, pointwise_predict(image), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("blend", ["mean", "hann"])
def test_sliding_window_blends_overlaps_by_weighted_mean(blend):
    """Each window predicts its own constant; every pixel must get the weighted mean of the
    constants of the windows covering it (brute force below)."""
    height, width, win, stride = 20, 23, (8, 9), (5, 6)
    calls = []

    def predict(crop):
        calls.append(len(calls) + 1.0)
        return torch.full((1, *crop.shape[-2:]), calls[-1])

    out = sliding_window_inference(predict, torch.zeros(3, height, width), win, stride, blend)
    weight = blend_weights(*win, blend)
    num = torch.zeros(height, width)
    den = torch.zeros(height, width)
    starts = itertools.product(window_starts(height, win[0], stride[0]),
                               window_starts(width, win[1], stride[1]))
    for value, (y, x) in zip(calls, starts):
        num[y : y + win[0], x : x + win[1]] += value * weight
        den[y : y + win[0], x : x + win[1]] += weight
    assert len(calls) == 4 * 4
    torch.testing.assert_close(out[0], num / den)
    assert out[0].min() < out[0].max()  # overlaps really mix different windows


def test_meta_arch_sliding_window_matches_whole_image_with_equivariant_predictor():
    cfg = demo_config("TEST.SLIDING_WINDOW.ENABLED", "True", "TEST.SLIDING_WINDOW.SIZE", "(32, 32)",
                      "TEST.SLIDING_WINDOW.STRIDE", "(24, 24)")
    model = build_model(cfg).eval()
    model.predict_whole = pointwise_predict
    image = torch.rand(3, 96, 96) * 255
    with torch.no_grad():
        out = model([{"image": image, "height": 96, "width": 96}])[0]["sem_seg"]
    expected = pointwise_predict((image - model.pixel_mean) / model.pixel_std)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_flip_tta_of_symmetric_input_is_symmetric():
    cfg = demo_config("TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(64, 96)",
                      "TEST.AUG.MAX_SIZE", "1000", "TEST.AUG.FLIP", "True")
    torch.manual_seed(1)
    model = build_model(cfg).eval()
    half = torch.rand(3, 64, 32) * 255
    image = torch.cat([half, half.flip(-1)], dim=-1)
    with torch.no_grad():
        probs = model([{"image": image}])[0]["sem_seg"]
        model.test_augmentation = None
        logits = model([{"image": image}])[0]["sem_seg"]
    assert probs.shape == (5, 64, 64)
    torch.testing.assert_close(probs.sum(0), torch.ones(64, 64))
    torch.testing.assert_close(probs, probs.flip(-1), rtol=1e-5, atol=1e-5)
    # Without the flip average, the (asymmetric) network is not symmetric: the check above bites.
    assert (logits - logits.flip(-1)).abs().max() > 1e-4


def test_multi_scale_resizes_back_and_averages_probabilities():
    image = torch.randn(3, 30, 40)
    out = multi_scale_flip_inference(pointwise_predict, image, [30], 1000, flip=False)
    torch.testing.assert_close(out, pointwise_predict(image).softmax(0), rtol=1e-5, atol=1e-6)
    seen = []

    def predict(x):
        seen.append(tuple(x.shape[-2:]))
        return pointwise_predict(x)

    out = multi_scale_flip_inference(predict, image, [15, 60], 70, flip=True)
    assert seen == [(15, 20), (15, 20), (52, 70), (52, 70)]
    assert out.shape == (4, 30, 40)
    torch.testing.assert_close(out.sum(0), torch.ones(30, 40))
