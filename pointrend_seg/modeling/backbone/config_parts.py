"""
Callables that Python configs pass as arguments, built by a ``LazyCall`` node rather than a
``functools.partial``, so that ``LazyConfig.save`` writes plain YAML that ``tools/demo.py --run``
and ``tools/export_model.py --run`` read back (a safe YAML reader refuses a ``partial``).
"""
from functools import partial

from torch import nn

__all__ = ["layer_norm", "vit_lr_decay"]


def layer_norm(eps: float = 1e-5):
    """``nn.LayerNorm`` with ``eps``: a ``norm_layer`` for Detectron2's ViT / MViT
    (called with the number of channels)."""
    return partial(nn.LayerNorm, eps=eps)


def vit_lr_decay(num_layers: int = 12, lr_decay_rate: float = 1.0):
    """ViTDet's layer-wise LR decay (Detectron2 main's ``get_vit_lr_decay_rate``) as the
    ``lr_factor_func`` of ``get_default_optimizer_params``: parameter name -> LR factor."""
    from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate

    return partial(get_vit_lr_decay_rate, num_layers=num_layers, lr_decay_rate=lr_decay_rate)
