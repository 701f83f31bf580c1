"""
Test-time strategies for large images and augmentation, as pure functions over a callable
``predict(image (C, H, W)) -> logits (K, H, W)``, so that they work with any model.
"""
from typing import Callable, List, Sequence, Tuple

import torch
from torch.nn import functional as F

from ..config import ConfigError, is_int

__all__ = ["window_starts", "blend_weights", "check_sliding_window", "sliding_window_inference",
           "multi_scale_flip_inference"]


def window_starts(length: int, window: int, stride: int) -> List[int]:
    """Start offsets of windows of size ``window`` every ``stride`` pixels covering [0, length),
    the last one aligned to the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def blend_weights(height: int, width: int, blend: str, device=None):
    """
    Per-pixel weight (height, width) of one window when overlapping windows are averaged.
    "mean": uniform. "hann": a separable raised cosine that favours window centres (where the
    receptive field sees the most context), floored at 1e-3 so every pixel keeps some weight.
    """
    if blend == "mean":
        return torch.ones(height, width, device=device)
    if blend == "hann":
        def ramp(n):
            return torch.hann_window(n + 2, periodic=False, device=device)[1:-1]

        return (ramp(height)[:, None] * ramp(width)[None, :]).clamp_(min=1e-3)
    raise ConfigError(f"TEST.SLIDING_WINDOW.BLEND must be 'mean' or 'hann', got {blend!r}")


def check_sliding_window(window, stride, blend: str = "mean") -> None:
    """
    Raise one :class:`ConfigError` naming ``TEST.SLIDING_WINDOW.*`` unless ``window`` and
    ``stride`` are (height, width) pairs of whole pixels (any sequence: a Python config gives a
    ``ListConfig``) with 1 <= stride <= window on each axis (a larger stride leaves pixels of
    0 / 0 = NaN logits) and ``blend`` is known.
    """
    problems = []

    def pair(key, value):
        if (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
                and all(is_int(v) for v in value)):
            return tuple(value)
        problems.append(f"TEST.SLIDING_WINDOW.{key}={value!r} must be (height, width) in pixels")
        return None

    window, stride = pair("SIZE", window), pair("STRIDE", stride)
    if window is not None and min(window) < 1:
        problems.append(f"TEST.SLIDING_WINDOW.SIZE={window} must be at least 1 on each axis")
    elif window is not None and stride is not None:
        for axis, size, step in zip(("height", "width"), window, stride):
            if not 1 <= step <= size:
                problems.append(
                    f"TEST.SLIDING_WINDOW.STRIDE={stride} with TEST.SLIDING_WINDOW.SIZE={window}: "
                    f"the {axis} stride {step} must be between 1 and the window's {size} ("
                    + ("a stride of 0 never moves the window)" if step < 1 else
                       "a larger stride leaves pixels that no window covers)"))
    if blend not in ("mean", "hann"):
        problems.append(f"TEST.SLIDING_WINDOW.BLEND must be 'mean' or 'hann', got {blend!r}")
    if problems:
        raise ConfigError("; ".join(problems))


def sliding_window_inference(
    predict: Callable[[torch.Tensor], torch.Tensor], image, window: Tuple[int, int],
    stride: Tuple[int, int], blend: str = "mean",
):
    """
    (K, H, W) float32 logits of ``image`` (C, H, W), predicted window by window, overlapping
    logits blended by a weighted mean; ``window``, ``stride``: (height, width) in pixels.
    """
    check_sliding_window(window, stride, blend)
    _, height, width = image.shape
    win_h, win_w = min(window[0], height), min(window[1], width)
    weight = blend_weights(win_h, win_w, blend, device=image.device)
    total = None
    norm = torch.zeros(height, width, device=image.device)
    for y in window_starts(height, win_h, stride[0]):
        for x in window_starts(width, win_w, stride[1]):
            logits = predict(image[:, y : y + win_h, x : x + win_w]).float()
            if total is None:
                total = torch.zeros(logits.shape[0], height, width, device=image.device)
            total[:, y : y + win_h, x : x + win_w] += logits * weight
            norm[y : y + win_h, x : x + win_w] += weight
    return total / norm


def multi_scale_flip_inference(
    predict: Callable[[torch.Tensor], torch.Tensor], image, min_sizes: Sequence[int],
    max_size: int, flip: bool,
):
    """
    (K, H, W) float32 class probabilities of ``image`` (C, H, W), averaged over rescaled (short
    side each of ``min_sizes``, long side at most ``max_size``) and, with ``flip``, flipped copies.
    """
    _, height, width = image.shape
    total = None
    count = 0
    for size in min_sizes:
        scale = min(size / min(height, width), max_size / max(height, width))
        new_hw = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = F.interpolate(image[None].float(), size=new_hw, mode="bilinear",
                               align_corners=False)[0]
        for flipped in ([False, True] if flip else [False]):
            x = scaled.flip(-1) if flipped else scaled
            logits = predict(x).float()
            if flipped:
                logits = logits.flip(-1)
            probs = F.interpolate(logits[None], size=(height, width), mode="bilinear",
                                  align_corners=False)[0].softmax(dim=0)
            total = probs if total is None else total + probs
            count += 1
    return total / count
