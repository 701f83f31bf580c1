"""Pixel and point losses (cross-entropy with an ignore label, DeepLab's hard pixel mining)."""
import torch
from torch.nn import functional as F

__all__ = ["cross_entropy_with_ignore"]


def cross_entropy_with_ignore(logits, labels, ignore_value: int, top_k_fraction: float = 1.0):
    """
    Mean cross-entropy of (N, K, ...) ``logits`` over the positions of (N, ...) int64 ``labels``
    that are not ``ignore_value``; 0 (with a gradient path) when all are. With ``top_k_fraction``
    below 1 only that hardest fraction is averaged (DeepLab's "hard pixel mining", which needs a
    host synchronisation to size its top-k; plain cross-entropy has none).
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
