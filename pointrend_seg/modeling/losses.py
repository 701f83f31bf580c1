"""Pixel and point losses (cross-entropy with an ignore label, DeepLab's hard pixel mining)."""
import torch
from torch.nn import functional as F

__all__ = ["cross_entropy_with_ignore"]


def cross_entropy_with_ignore(logits, labels, ignore_value: int, top_k_fraction: float = 1.0):
    """
    Mean cross-entropy over the labelled (not ignored) positions.

    Args:
        logits (Tensor): (N, K, ...) class logits.
        labels (Tensor): (N, ...) int64 labels in [0, K) or ``ignore_value``.
        ignore_value (int): label excluded from the loss.
        top_k_fraction (float): in (0, 1]; below 1, only the hardest fraction of the labelled
            positions is averaged (DeepLab's bootstrapped cross-entropy, "hard pixel mining").

    Returns:
        Tensor: scalar; 0 (with a gradient path) when every position is ignored.

    Plain cross-entropy (``top_k_fraction`` 1) is computed without a host synchronisation: the
    sum over labelled positions divided by their count (at least 1). Hard pixel mining needs the
    number of labelled positions on the host to size its top-k.
    """
    if top_k_fraction >= 1.0:
        total = F.cross_entropy(logits.float(), labels, ignore_index=ignore_value, reduction="sum")
        return total / (labels != ignore_value).sum().clamp(min=1)
    losses = F.cross_entropy(logits.float(), labels, ignore_index=ignore_value, reduction="none")
    losses = losses[labels != ignore_value]
    if losses.numel() == 0:
        return logits.sum() * 0.0
    k = max(1, int(top_k_fraction * losses.numel()))
    return torch.topk(losses, k).values.mean()
