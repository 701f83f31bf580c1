"""Optimizers of our LazyConfigs (``cfg.optimizer``; ``params.model`` is set to the model before
it is instantiated, as Detectron2's ``tools/lazyconfig_train_net.py`` does): SGD with momentum
for the DeepLab recipes, AdamW for the CPU demo; norm layers without weight decay."""
import torch

from detectron2.config import LazyCall as L
from detectron2.solver.build import get_default_optimizer_params

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
