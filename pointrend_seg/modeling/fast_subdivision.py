"""
The speed work of PointRend's inference, apart from the method: :class:`FastPointRendSegHead` is a
:class:`PointRendSegHead` whose :meth:`~FastPointRendSegHead.inference` computes the same
subdivision faster with the same parameters. :func:`pointrend_seg.modeling.prepare_for_inference`
swaps it in, its handle's ``undo()`` back. Each change equals the plain head up to float rounding
(figures: ``tools/benchmark.py --models heads``, docs/benchmarks.md):

* a step whose every cell a later step re-predicts is skipped; a step that re-predicts every cell
  needs no upsampling nor selection;
* the point head's first layer is applied to the fine-grained maps once when they have fewer
  pixels than the points sampled from them (bilinear sampling is linear);
* the point MLP runs as batched products split at the coarse logits (:func:`mlp_point_logits`);
* on CPU, fine-grained maps are sampled channels_last and the uncertainty is a running top-2
  instead of a sort per location (both bit for bit);
* predictions are written back with one ``index_put_``.

There is no host synchronisation and no data-dependent shape (the numbers of points and steps are
the only constants): it runs asynchronously on CUDA and exports with symbolic sizes.
"""
from functools import reduce
from typing import Callable, List

import torch
from torch.fx.experimental.symbolic_shapes import statically_known_true
from torch.nn import functional as F

from .point_heads import MLPPointHead
from .point_sampling import calculate_uncertainty, grid_cell_centers, most_uncertain_cells
from .point_sampling import point_sample
from .semantic_heads import PointRendSegHead

__all__ = ["FastPointRendSegHead", "mlp_point_logits", "top2_uncertainty",
           "use_fast_subdivision"]


def top2_uncertainty(logits):
    """
    :func:`~pointrend_seg.modeling.point_sampling.calculate_uncertainty` ((N, K, ...) ->
    (N, 1, ...)) bit for bit, ties and infinities included, without a gradient; on CPU by a
    running top-2 (elementwise max / min) instead of a sort.
    """
    logits = logits.detach()
    if logits.device.type != "cpu":
        return calculate_uncertainty(logits)
    first, second = logits[:, 0], logits[:, 1]
    top1, top2 = torch.maximum(first, second), torch.minimum(first, second)
    scratch = torch.empty_like(top1)
    for k in range(2, logits.shape[1]):
        other = logits[:, k]
        torch.maximum(top2, torch.minimum(top1, other, out=scratch), out=top2)
        torch.maximum(top1, other, out=top1)
    return (top2 - top1).unsqueeze(1)


def _layers(point_head: MLPPointHead):
    return list(point_head.fc_layers) + [point_head.predictor]


def mlp_point_logits(point_head: MLPPointHead, fine_grained_features, coarse_logits,
                     fine_projected: bool = False):
    """
    ``point_head(fine_grained_features, coarse_logits)`` (N, K, P) without concatenations: a layer
    on ``[x, coarse_logits]`` is ``[W_c, b] [coarse_logits; 1]`` plus, in place, ``W_x x``. With
    ``fine_projected`` the first argument is already ``W_x x``, (N, first layer's outputs, P)
    (sampled from :func:`project_fine_features`).
    """
    n, num_classes, num_points = coarse_logits.shape
    coarse_and_one = torch.cat([coarse_logits, coarse_logits.new_ones(n, 1, num_points)], 1)
    x = fine_grained_features
    layers = _layers(point_head)
    for i, layer in enumerate(layers):
        weight = layer.weight[:, :, 0]
        if i == 0 or point_head.coarse_pred_each_layer:
            coarse_weight = torch.cat([weight[:, -num_classes:], layer.bias[:, None]], 1)
            out = torch.bmm(coarse_weight.expand(n, -1, -1), coarse_and_one)
            # In-place ops are not autocast: cast to the dtype autocast gave the product.
            if i == 0 and fine_projected:
                x = out.add_(x.to(out.dtype))
            else:
                x = out.baddbmm_(weight[:, :-num_classes].to(out.dtype).expand(n, -1, -1),
                                 x.to(out.dtype))
        else:
            # conv1d on CPU runs a batch of one on one thread and copies its input first
            x = torch.baddbmm(layer.bias.view(1, -1, 1), weight.expand(n, -1, -1), x)
        if i < len(layers) - 1:
            x = F.relu_(x)
    return x


def project_fine_features(point_head: MLPPointHead, feature_maps):
    """
    The first layer's product with each whole fine-grained map (N, C_i, H_i, W_i), in the order of
    the point head's input channels, as (N, first layer's outputs, H_i, W_i) each: sampled at
    points and summed, it equals the product with the sampled, concatenated features.
    """
    weight = _layers(point_head)[0].weight
    projected, start = [], 0
    for x in feature_maps:
        projected.append(F.conv2d(x, weight[:, start:start + x.shape[1], :, None]))
        start += x.shape[1]
    return projected


def _write_points(logits, indices, values):
    """
    ``logits[b, :, indices[b, p]] = values[b, :, p]`` in place for contiguous (N, K, H, W)
    ``logits``, (N, P) distinct flat ``indices``, (N, K, P) ``values`` (a ``scatter_`` is slower).
    """
    n, k, h, w = logits.shape
    rows = torch.arange(n * k, device=logits.device).view(n, k, 1) * (h * w)
    flat = (rows + indices.unsqueeze(1)).reshape(-1)
    logits.view(-1).index_put_((flat,), values.reshape(-1).to(logits.dtype))


class FastPointRendSegHead(PointRendSegHead):
    """:class:`PointRendSegHead` with the fast :meth:`inference` (module docstring)."""

    def _repredicts_every_cell(self, h, w, step: int) -> bool:
        """Whether step ``step`` (1-based) of (h, w) coarse logits provably re-predicts all its
        cells (with symbolic sizes: False, and the step runs the general way)."""
        return statically_known_true(self.subdivision_num_points >= h * 2 ** step * w * 2 ** step)

    def _first_needed_step(self, h, w) -> int:
        """The last step that re-predicts every cell (its inputs are the coarse logits and the
        fine features, not the steps before it), else step 1."""
        return max((step for step in range(1, self.num_subdivision_steps() + 1)
                    if self._repredicts_every_cell(h, w, step)), default=1)

    def _point_predictor(self, features, coarse_logits, first_step: int):
        """``coords (N, P, 2) -> point logits (N, K, P)`` for the steps from ``first_step`` on,
        projecting the maps first when that is cheaper (module docstring)."""
        h, w = coarse_logits.shape[-2:]
        maps = [features[f] for f in self.in_features]
        num_points = sum(torch.sym_min(self.subdivision_num_points, h * w * 4 ** step)
                         for step in range(first_step, self.num_subdivision_steps() + 1))
        pixels = sum(x.shape[-2] * x.shape[-1] for x in maps)
        channels = _layers(self.point_head)[0].out_channels
        projected = (channels * len(maps) <= sum(x.shape[1] for x in maps)
                     and statically_known_true(pixels < num_points))
        if projected:
            maps = project_fine_features(self.point_head, maps)

        def predict(coords):
            fine = [point_sample(x, coords, align_corners=False) for x in maps]
            # one map: itself (no copy); projected maps add up, features concatenate
            fine = reduce(torch.add, fine) if projected or len(fine) == 1 else torch.cat(fine, 1)
            coarse = point_sample(coarse_logits, coords, align_corners=False)
            return mlp_point_logits(self.point_head, fine, coarse, fine_projected=projected)

        return predict

    def inference(self, coarse_logits, features, on_step=None):
        """:meth:`PointRendSegHead.inference`, faster; ``on_step`` is called for the steps run
        (not for the skipped ones, whose cells a later step re-predicts)."""
        coarse_logits = coarse_logits.float().contiguous()  # the write-back indexes its storage
        if coarse_logits.device.type == "cpu":
            features = {f: features[f].contiguous(memory_format=torch.channels_last)
                        for f in self.in_features}
        n, k, h, w = coarse_logits.shape
        logits = coarse_logits
        first = self._first_needed_step(h, w)
        predict = self._point_predictor(features, coarse_logits, first)
        for step in range(first, self.num_subdivision_steps() + 1):
            if self._repredicts_every_cell(h, w, step):
                size = (h * 2 ** step, w * 2 ** step)
                indices = torch.arange(size[0] * size[1], device=logits.device).expand(n, -1)
                coords = grid_cell_centers(indices, *size)
                logits = predict(coords).float().reshape(n, k, *size)
            else:
                logits = F.interpolate(logits, scale_factor=2, mode="bilinear",
                                       align_corners=False)
                indices = most_uncertain_cells(top2_uncertainty(logits),
                                               self.subdivision_num_points)
                coords = grid_cell_centers(indices, *logits.shape[-2:])
                _write_points(logits, indices, predict(coords))
            if on_step is not None:
                on_step(indices, coords, logits)
        return self.fill_canvas(logits, coarse_logits)


def use_fast_subdivision(model: torch.nn.Module) -> List[Callable[[], None]]:
    """
    Make every :class:`PointRendSegHead` (not a subclass) of ``model`` with an
    :class:`MLPPointHead` a :class:`FastPointRendSegHead` by changing its class, as
    ``torch.nn.utils.parametrize`` does (its parameters, hooks and attributes stay the same
    objects); one undo function per head.
    """
    undo = []
    for module in model.modules():
        if type(module) is PointRendSegHead and isinstance(module.point_head, MLPPointHead):
            module.__class__ = FastPointRendSegHead
            undo.append(lambda module=module: setattr(module, "__class__", PointRendSegHead))
    return undo
