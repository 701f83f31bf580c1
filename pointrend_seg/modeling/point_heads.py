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

from ..config import lookup, raise_config_problems

__all__ = ["POINT_HEAD_REGISTRY", "MLPPointHead", "LinearPointHead", "build_point_head"]

POINT_HEAD_REGISTRY = Registry("POINTREND_SEG_POINT_HEAD")
POINT_HEAD_REGISTRY.__doc__ = """
Point heads: ``forward(fine_grained_features (N, C, P), coarse_logits (N, K, P)) -> (N, K, P)``.
Built with ``obj(cfg, in_channels)`` (``@configurable``), ``in_channels`` = C.
"""


def pointwise(conv, x):
    """
    A kernel-size-1 ``nn.Conv1d`` applied as one batched matrix product: (N, C_in, P) ->
    (N, C_out, P). The same values (bit for bit on one thread), but CPU ``conv1d`` runs a batch
    of one image on a single thread and copies its input first; ``baddbmm`` uses every thread.
    """
    weight = conv.weight.squeeze(2)
    bias = conv.bias.view(1, -1, 1)
    return torch.baddbmm(bias, weight.expand(x.shape[0], -1, -1), x)


def _init_predictor(conv):
    nn.init.normal_(conv.weight, std=0.001)
    nn.init.zeros_(conv.bias)


@POINT_HEAD_REGISTRY.register()
class MLPPointHead(nn.Module):
    """
    The paper's point head: ``num_fc`` layers of ``fc_dim`` channels (1x1 Conv1d + ReLU, i.e. the
    same MLP at every point), then a linear predictor. Input: fine-grained features concatenated
    with the coarse logits; with ``coarse_pred_each_layer`` the coarse logits are concatenated
    again before every later layer and the predictor.

    Parameter names (``fc1``..``fcN``, ``predictor``) match Detectron2's ``StandardPointHead``.
    """

    @configurable
    def __init__(
        self, *, in_channels: int, num_classes: int, fc_dim: int, num_fc: int,
        coarse_pred_each_layer: bool,
    ):
        super().__init__()
        self.num_fc = num_fc
        self.coarse_pred_each_layer = coarse_pred_each_layer
        extra = num_classes if coarse_pred_each_layer else 0
        channels = in_channels + num_classes
        for k in range(num_fc):
            fc = nn.Conv1d(channels, fc_dim, kernel_size=1, bias=True)
            weight_init.c2_msra_fill(fc)
            self.add_module(f"fc{k + 1}", fc)
            channels = fc_dim + extra
        self.predictor = nn.Conv1d(channels, num_classes, kernel_size=1)
        _init_predictor(self.predictor)

    @classmethod
    def from_config(cls, cfg, in_channels):
        p = cfg.MODEL.POINT_HEAD
        problems = []
        if not isinstance(p.NUM_FC, int) or isinstance(p.NUM_FC, bool) or p.NUM_FC < 0:
            problems.append(f"MODEL.POINT_HEAD.NUM_FC={p.NUM_FC!r} must be an integer >= 0 "
                            "(hidden layers of the point head's MLP)")
        elif p.NUM_FC > 0 and (not isinstance(p.FC_DIM, int) or isinstance(p.FC_DIM, bool)
                               or p.FC_DIM < 1):
            problems.append(f"MODEL.POINT_HEAD.FC_DIM={p.FC_DIM!r} must be an integer >= 1 "
                            f"(the width of the MLP's {p.NUM_FC} hidden layers)")
        raise_config_problems(problems)
        return {
            "in_channels": in_channels,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "fc_dim": cfg.MODEL.POINT_HEAD.FC_DIM,
            "num_fc": cfg.MODEL.POINT_HEAD.NUM_FC,
            "coarse_pred_each_layer": cfg.MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER,
        }

    @property
    def fine_projection_channels(self) -> int:
        """Channels of :meth:`project_fine_features`' maps (the first layer's outputs)."""
        return self.fc1.out_channels if self.num_fc else self.predictor.out_channels

    def project_fine_features(self, feature_maps):
        """
        The first layer's product with the fine-grained features, applied to whole maps: a 1x1
        convolution of each map with its block of the weight. Bilinear sampling is linear, so
        sampling these maps at points and summing equals that product with the sampled
        (concatenated) features; it is cheaper when the maps have fewer pixels than the points
        later sampled from them.

        Args:
            feature_maps (list[Tensor]): (N, C_i, H_i, W_i) in the order of the point head's
                input channels (sum of C_i = C).

        Returns:
            list[Tensor]: (N, :attr:`fine_projection_channels`, H_i, W_i).
        """
        weight = (self.fc1 if self.num_fc else self.predictor).weight
        projected, start = [], 0
        for x in feature_maps:
            channels = x.shape[1]
            projected.append(F.conv2d(x, weight[:, start:start + channels, :, None]))
            start += channels
        return projected

    def forward(self, fine_grained_features, coarse_logits, fine_projected: bool = False):
        """
        (N, C, P) fine-grained features and (N, K, P) coarse logits -> (N, K, P) logits. With
        ``fine_projected``, the first argument is instead the first layer's product with them,
        (N, :attr:`fine_projection_channels`, P) (sampled from :meth:`project_fine_features`).

        A layer applied to ``[x, coarse_logits]`` is computed as ``[W_c, b] [coarse_logits; 1]``
        plus, accumulated in place, ``W_x x``: no concatenated copy of the (P x C) inputs and no
        broadcast copy of the bias is made (equal to the concatenation up to float rounding;
        those copies cost a third of the head's time on CPU).
        """
        n, num_classes, num_points = coarse_logits.shape
        coarse_and_one = torch.cat([coarse_logits, coarse_logits.new_ones(n, 1, num_points)], 1)
        x = fine_grained_features
        layers = [getattr(self, f"fc{k + 1}") for k in range(self.num_fc)] + [self.predictor]
        for i, layer in enumerate(layers):
            weight = layer.weight[:, :, 0]
            if i == 0 or self.coarse_pred_each_layer:
                coarse_weight = torch.cat([weight[:, -num_classes:], layer.bias[:, None]], 1)
                out = torch.bmm(coarse_weight.expand(n, -1, -1), coarse_and_one)
                # In-place ops are not autocast: cast to the dtype autocast gave the product.
                if i == 0 and fine_projected:
                    x = out.add_(x.to(out.dtype))
                else:
                    x = out.baddbmm_(weight[:, :-num_classes].to(out.dtype).expand(n, -1, -1),
                                     x.to(out.dtype))
            else:
                x = pointwise(layer, x)
            if layer is not self.predictor:
                # In place: the products' backward needs their inputs, not their output.
                x = F.relu(x, inplace=True)
        return x


@POINT_HEAD_REGISTRY.register()
class LinearPointHead(nn.Module):
    """
    A single linear layer on ``[fine_grained_features, coarse_logits]`` (the walk-through this
    project started from); a cheap baseline for the MLP.
    """

    @configurable
    def __init__(self, *, in_channels: int, num_classes: int):
        super().__init__()
        self.predictor = nn.Conv1d(in_channels + num_classes, num_classes, kernel_size=1)
        _init_predictor(self.predictor)

    @classmethod
    def from_config(cls, cfg, in_channels):
        return {"in_channels": in_channels, "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}

    def forward(self, fine_grained_features, coarse_logits):
        return pointwise(self.predictor, torch.cat([fine_grained_features, coarse_logits], dim=1))


def build_point_head(cfg, in_channels: int):
    """Build the head named by ``cfg.MODEL.POINT_HEAD.NAME`` for ``in_channels`` feature channels."""
    return lookup(POINT_HEAD_REGISTRY, "MODEL.POINT_HEAD.NAME", cfg.MODEL.POINT_HEAD.NAME)(
        cfg, in_channels)
