"""The optimizer of a run (``Trainer.build_optimizer``)."""
import torch

from detectron2.solver import get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping

from ..config import ConfigError

__all__ = ["build_optimizer"]


def build_optimizer(cfg, model) -> torch.optim.Optimizer:
    """SGD (as Detectron2's ``build_optimizer``) or AdamW (``SOLVER.OPTIMIZER`` "ADAMW"), with
    Detectron2's parameter groups and gradient clipping; fused for a CUDA model."""
    name = str(cfg.SOLVER.OPTIMIZER).upper()
    if name == "SGD":
        optimizer_class = torch.optim.SGD
        options = {"momentum": cfg.SOLVER.MOMENTUM, "nesterov": cfg.SOLVER.NESTEROV}
    elif name == "ADAMW":
        optimizer_class, options = torch.optim.AdamW, {}
    else:
        raise ConfigError(
            f"SOLVER.OPTIMIZER must be 'SGD' or 'ADAMW', got {cfg.SOLVER.OPTIMIZER!r}")
    if next(model.parameters()).is_cuda:
        options["fused"] = True
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS)
    return maybe_add_gradient_clipping(cfg, optimizer_class)(
        params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY, **options)
