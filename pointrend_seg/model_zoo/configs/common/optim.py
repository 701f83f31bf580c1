"""Optimizers of our LazyConfigs (``cfg.optimizer``; ``params.model`` is set to the model before
it is instantiated, as Detectron2's ``tools/lazyconfig_train_net.py`` does): SGD with momentum
for the DeepLab recipes, AdamW for the CPU demo; norm layers without weight decay; AdamW with the rules of each transformer backbone
(:func:`vit_adamw`, :func:`swin_adamw`, :func:`mvitv2_adamw`); DeepLab's poly LR schedule
(:func:`poly_lr_multiplier`)."""
import copy

import torch

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from detectron2.solver.build import get_default_optimizer_params
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler

from pointrend_seg.modeling.backbone.config_parts import vit_lr_decay

SGD = L(torch.optim.SGD)(
    params=L(get_default_optimizer_params)(weight_decay_norm=0.0),
    lr=0.01,
    momentum=0.9,
    weight_decay=1e-4,
)

AdamW = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(base_lr="${..lr}", weight_decay_norm=0.0),
    lr=0.002,
    weight_decay=1e-4,
)


# ---- AdamW with each transformer backbone's own rules (the same for every dataset) -----------
def _adamw(lr, weight_decay, no_weight_decay=(), lr_factor_func=None):
    """A copy of :data:`AdamW` with ``lr``, ``weight_decay``, no weight decay on the parameters
    named ``no_weight_decay`` and, if given, a per-parameter ``lr_factor_func``."""
    optimizer = copy.deepcopy(AdamW)
    optimizer.update(lr=lr, weight_decay=weight_decay)
    optimizer.params.overrides = {name: {"weight_decay": 0.0} for name in no_weight_decay}
    if lr_factor_func is not None:
        optimizer.params.lr_factor_func = lr_factor_func
    return optimizer


def vit_adamw(num_layers=12, lr_decay_rate=0.7, lr=1e-4):
    """ViTDet's rules: layer-wise LR decay ``lr_decay_rate`` over the ``num_layers`` blocks, no
    weight decay on the position embedding. Detectron2 ``main`` only (its ViT)."""
    return _adamw(lr, 0.1, ["pos_embed"],
                  L(vit_lr_decay)(num_layers=num_layers, lr_decay_rate=lr_decay_rate))


def swin_adamw(lr=1e-4):
    """Swin's rules (as ViTDet's Swin configs): no weight decay on the relative position bias
    tables."""
    return _adamw(lr, 0.05, ["relative_position_bias_table"])


def mvitv2_adamw(lr=1.6e-4):
    """MViTv2's rules: no weight decay on position embeddings and relative positions."""
    return _adamw(lr, 0.1, ["pos_embed", "rel_pos_h", "rel_pos_w"])


def poly_lr_multiplier(max_iter: int, warmup_iters: int = 0, power: float = 0.9,
                       warmup_factor: float = 0.001):
    """
    DeepLab's poly schedule as the LazyConfig ``lr_multiplier`` (an fvcore parameter scheduler
    over the run, 0 to 1): ``(1 - t) ** power`` after a linear warmup of ``warmup_iters`` from
    ``warmup_factor`` (the YAML configs' ``WarmupPolyLR``).
    """
    return L(WarmupParamScheduler)(
        scheduler=L(PolynomialDecayParamScheduler)(base_value=1.0, power=power),
        warmup_length=warmup_iters / max_iter,
        warmup_factor=warmup_factor,
    )
