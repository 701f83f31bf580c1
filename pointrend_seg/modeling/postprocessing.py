"""
Class ids at a size other than the logits', without the (K, H, W) float logits at that size
(Detectron2's ``sem_seg_postprocess`` then argmax: 4 K bytes per output pixel).
"""
import torch
from torch.nn import functional as F

__all__ = ["resized_argmax"]


def resized_argmax(logits: torch.Tensor, height: int, width: int, *,
                   max_band_bytes: int = 64 << 20) -> torch.Tensor:
    """
    ``F.interpolate(logits[None], (height, width), mode="bilinear", align_corners=False)[0]
    .argmax(0)`` of (K, h, w) ``logits`` (any device), in bands of output rows holding at most
    ``max_band_bytes`` of resized logits: (height, width) class ids on the CPU, uint8 for
    K <= 256 classes, else int16 / int32. Bilinear resizing is separable: a band resizes the
    logit rows it needs along the width and blends them with the whole-image row weights, so the
    ids equal the whole-image argmax except where two logits tie within float rounding.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (K, h, w), got {tuple(logits.shape)}")
    num_classes, in_h, in_w = logits.shape
    out = torch.empty((height, width), dtype=torch.uint8 if num_classes <= 256 else
                      torch.int16 if num_classes <= 2 ** 15 else torch.int32)
    if height == 0 or width == 0:
        return out
    x = logits.float()[None]
    # Source row of each output row, as upsample_bilinear2d computes it (align_corners=False).
    scale = in_h / height
    src = ((torch.arange(height, dtype=torch.float32, device=x.device) + 0.5) * scale
           - 0.5).clamp_(min=0)
    row0 = src.floor().long().clamp_(max=in_h - 1)
    row1 = (row0 + 1).clamp_(max=in_h - 1)
    weight1 = (src - row0.float())[:, None, None]
    # A band's bytes: two gathered row sets, their blend and the logit rows it needs (more than
    # the band's rows when shrinking), each (rows, width, K) float32.
    row_bytes = 4 * num_classes * width
    band = max(1, int(max_band_bytes // (row_bytes * (3 + max(1.0, scale)))))
    for start in range(0, height, band):
        stop = min(height, start + band)
        first, last = int(row0[start]), int(row1[stop - 1])
        # The rows resized along the width only (row weights exactly 1 and 0), as (rows, width,
        # K): an argmax over the contiguous last dimension is much faster.
        rows = F.interpolate(x[:, :, first:last + 1], size=(last - first + 1, width),
                             mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
        rows = rows.contiguous()
        top = rows.index_select(0, row0[start:stop] - first)
        bottom = rows.index_select(0, row1[start:stop] - first)
        blended = top.lerp_(bottom, weight1[start:stop])  # top + w1 * (bottom - top)
        out[start:stop] = blended.argmax(-1).to(device="cpu", dtype=out.dtype)
    return out
