"""
Point heads: per-point classifiers applied to features sampled at P points. Shapes: N images,
C fine-grained feature channels, K classes, P points.
"""
import torch
from fvcore.nn import weight_init
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.utils.registry import Registry

from ..config import check_arguments, is_int, lookup

__all__ = ["POINT_HEAD_REGISTRY", "MLPPointHead", "LinearPointHead", "build_point_head"]

POINT_HEAD_REGISTRY = Registry("POINTREND_SEG_POINT_HEAD")
POINT_HEAD_REGISTRY.__doc__ = """
Point heads: ``forward(fine_grained_features (N, C, P), coarse_logits (N, K, P)) -> (N, K, P)``.
Built with ``obj(cfg, in_channels)`` (``@configurable``), ``in_channels`` = C.
"""


def _init_predictor(conv):
    """A predictor's initialisation (weight normal with std 0.001, zero bias); returns ``conv``."""
    nn.init.normal_(conv.weight, std=0.001)
    nn.init.zeros_(conv.bias)
    return conv


@POINT_HEAD_REGISTRY.register()
class MLPPointHead(nn.Module):
    """
    The paper's point head, Detectron2's ``StandardPointHead`` with its parameter names
    (``fc1``..``fcN``, ``predictor``): an MLP of ``num_fc`` 1x1 Conv1d + ReLU layers on the
    fine-grained features and coarse logits (again before every later layer with
    ``coarse_pred_each_layer``), then a linear predictor.
    """

    @configurable
    def __init__(
        self, *, in_channels: int, num_classes: int, fc_dim: int, num_fc: int,
        coarse_pred_each_layer: bool,
    ):
        super().__init__()
        hidden = is_int(num_fc) and num_fc > 0
        check_arguments("MLPPointHead", [
            ("MODEL.POINT_HEAD.NUM_FC", "num_fc", num_fc, is_int(num_fc) and num_fc >= 0,
             "an integer >= 0 (hidden layers of the point head's MLP)"),
            ("MODEL.POINT_HEAD.FC_DIM", "fc_dim", fc_dim,
             not hidden or (is_int(fc_dim) and fc_dim >= 1),
             f"an integer >= 1 (the width of the MLP's {num_fc} hidden layers)"),
        ])
        self.coarse_pred_each_layer = coarse_pred_each_layer
        self.fc_layers = []
        channels = in_channels + num_classes
        for k in range(num_fc):
            # Filled as soon as created (Detectron2 creates all, then fills): the order of the
            # random draws this project's seeded models were made with.
            fc = nn.Conv1d(channels, fc_dim, kernel_size=1)
            weight_init.c2_msra_fill(fc)
            self.add_module(f"fc{k + 1}", fc)
            self.fc_layers.append(fc)
            channels = fc_dim + (num_classes if coarse_pred_each_layer else 0)
        self.predictor = _init_predictor(nn.Conv1d(channels, num_classes, kernel_size=1))

    @classmethod
    def from_config(cls, cfg, in_channels):
        p = cfg.MODEL.POINT_HEAD
        return {
            "in_channels": in_channels,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "fc_dim": p.FC_DIM,
            "num_fc": p.NUM_FC,
            "coarse_pred_each_layer": p.COARSE_PRED_EACH_LAYER,
        }

    def forward(self, fine_grained_features, coarse_logits):
        x = torch.cat([fine_grained_features, coarse_logits], dim=1)
        for layer in self.fc_layers:
            x = F.relu(layer(x))
            if self.coarse_pred_each_layer:
                x = torch.cat([x, coarse_logits], dim=1)
        return self.predictor(x)


@POINT_HEAD_REGISTRY.register()
class LinearPointHead(nn.Module):
    """A single linear layer on ``[fine_grained_features, coarse_logits]``; a cheap baseline."""

    @configurable
    def __init__(self, *, in_channels: int, num_classes: int):
        super().__init__()
        self.predictor = _init_predictor(
            nn.Conv1d(in_channels + num_classes, num_classes, kernel_size=1))

    @classmethod
    def from_config(cls, cfg, in_channels):
        return {"in_channels": in_channels, "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}

    def forward(self, fine_grained_features, coarse_logits):
        return self.predictor(torch.cat([fine_grained_features, coarse_logits], dim=1))


def build_point_head(cfg, in_channels: int):
    """The head named by ``cfg.MODEL.POINT_HEAD.NAME`` for ``in_channels`` feature channels."""
    return lookup(POINT_HEAD_REGISTRY, "MODEL.POINT_HEAD.NAME", cfg.MODEL.POINT_HEAD.NAME)(
        cfg, in_channels)
