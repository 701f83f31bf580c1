"""
Class ids at a size other than the logits', without the (K, H, W) float logits at that size.

``sem_seg_postprocess`` (Detectron2) resizes the K logit maps of an image to the output size
and callers take the argmax there: 4 K bytes per output pixel (5 classes at 12000 x 12000:
2.9 GB, 19 classes: 11 GB). :func:`resized_argmax` gives the same class ids band of rows by band
of rows, holding at most ``max_band_bytes`` of resized logits at a time: the output label map
(1 byte per pixel for up to 256 classes) is the only full-size array.
"""
import torch
from torch.nn import functional as F

__all__ = ["resized_argmax"]


def resized_argmax(logits: torch.Tensor, height: int, width: int, *,
                   max_band_bytes: int = 64 << 20) -> torch.Tensor:
    """
    ``F.interpolate(logits[None], (height, width), mode="bilinear", align_corners=False)[0]
    .argmax(0)``, computed in bands of output rows.

    Bilinear resizing is separable: each band resizes the few logit rows it needs to the output
    width (the same weights as a whole-image resize along the width, exactly) and blends them
    with the row weights of a whole-image resize (``torch``'s ``align_corners=False``
    convention), so the class ids equal the whole-image argmax except where two classes' logits
    are tied to within float rounding.

    Args:
        logits: (K, h, w) float logits (or scores) of one image, on any device.
        height, width: the output size in pixels.
        max_band_bytes: the most memory one band of resized logits may take.

    Returns:
        (height, width) class ids on the CPU: uint8 for K <= 256 classes, else int16 / int32.
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
    # Output rows per band: its two gathered row sets and their blend, and the logit rows it
    # needs (more than the band's rows when shrinking), each (rows, width, K) float32.
    row_bytes = 4 * num_classes * width
    band = max(1, int(max_band_bytes // (row_bytes * (3 + max(1.0, scale)))))
    for start in range(0, height, band):
        stop = min(height, start + band)
        first, last = int(row0[start]), int(row1[stop - 1])
        # The logit rows this band needs, resized along the width only (height scale 1: the
        # row weights there are exactly 1 and 0), laid out (rows, width, K): the argmax over the
        # last, contiguous dimension is much faster than over the first (strided reads).
        rows = F.interpolate(x[:, :, first:last + 1], size=(last - first + 1, width),
                             mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
        rows = rows.contiguous()
        top = rows.index_select(0, row0[start:stop] - first)
        bottom = rows.index_select(0, row1[start:stop] - first)
        blended = top.lerp_(bottom, weight1[start:stop])  # top + w1 * (bottom - top)
        out[start:stop] = blended.argmax(-1).to(device="cpu", dtype=out.dtype)
    return out
