"""
Semantic-segmentation heads (Detectron2's ``SEM_SEG_HEADS_REGISTRY``): a coarse head plus either
plain bilinear upsampling (``BilinearSegHead``, the DeepLab baseline) or PointRend's point loss and
adaptive subdivision (``PointRendSegHead``).

Both follow Detectron2's head interface ``forward(features, targets=None)``: in training
``(None, losses)``, in inference ``(logits, {})`` with logits (N, K, s * h, s * w) for coarse logits
(N, K, h, w) of stride s, i.e. at the resolution of the (padded) input when its size is a
multiple of s, which ``GeneralizedSemanticSegmentor`` guarantees by padding.
"""
import math
from typing import Dict, List, NamedTuple, Tuple

import torch
from torch import nn
from torch.fx.experimental.symbolic_shapes import statically_known_true
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ..config import raise_config_problems

from .coarse_heads import build_coarse_head
from .features import missing_feature_problems
from .losses import cross_entropy_with_ignore
from .point_heads import build_point_head
from .point_sampling import (
    build_point_sampler,
    grid_cell_centers,
    point_sample,
    sample_point_labels,
)

__all__ = ["BilinearSegHead", "CoarseSegHead", "PointRendSegHead", "SubdivisionStep",
           "SubdivisionTrace", "TracedStep"]


@SEM_SEG_HEADS_REGISTRY.register()
class BilinearSegHead(nn.Module):
    """
    A coarse head whose logits are upsampled bilinearly to the input resolution, trained with
    (optionally hard-pixel-mined) cross-entropy at the resolution of the labels.
    """

    @configurable
    def __init__(
        self, *, coarse_head: nn.Module, ignore_value: int, loss_weight: float = 1.0,
        hard_pixel_top_k: float = 1.0,
    ):
        """
        Args:
            coarse_head: a module mapping features to (N, K, h, w) logits with attribute
                ``output_stride``.
            ignore_value: label value excluded from every loss.
            loss_weight: weight of ``loss_sem_seg``.
            hard_pixel_top_k: fraction of the hardest pixels the loss averages (1: plain CE).
        """
        super().__init__()
        self.coarse_head = coarse_head
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.hard_pixel_top_k = hard_pixel_top_k

    @classmethod
    def config_problems(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> List[str]:
        """
        What is wrong with this head's keys (``MODEL.SEM_SEG_HEAD.NUM_CLASSES``, ``IGNORE_VALUE``,
        ``LOSS_TYPE``, ``HARD_PIXEL_TOP_K``), one message per problem naming keys and values.
        """
        h = cfg.MODEL.SEM_SEG_HEAD
        problems = []
        if h.NUM_CLASSES == 1:
            # One class (a single sigmoid logit) is not supported: the losses, the uncertainty
            # (top-2 margin) and the evaluators work on >= 2 softmax classes.
            problems.append(
                "MODEL.SEM_SEG_HEAD.NUM_CLASSES=1: a foreground/background task has 2 classes "
                "here (one logit per class, softmax): set MODEL.SEM_SEG_HEAD.NUM_CLASSES 2 with "
                "masks of 0 = background, 1 = foreground. Masks of 0/255 need the label map "
                "255 -> 1 first (folder datasets: --label-map 255:1)"
                + (": with MODEL.SEM_SEG_HEAD.IGNORE_VALUE=255 their foreground would be ignored"
                   if h.IGNORE_VALUE == 255 else "")
            )
        elif not isinstance(h.NUM_CLASSES, int) or h.NUM_CLASSES < 2:
            problems.append(
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={h.NUM_CLASSES!r} must be an integer >= 2 "
                "(a foreground/background task has 2 classes)"
            )
        elif 0 <= h.IGNORE_VALUE < h.NUM_CLASSES:
            problems.append(
                f"MODEL.SEM_SEG_HEAD.IGNORE_VALUE={h.IGNORE_VALUE} is a class id "
                f"(MODEL.SEM_SEG_HEAD.NUM_CLASSES={h.NUM_CLASSES}): pixels of that class would "
                "be ignored by the losses"
            )
        if h.LOSS_TYPE not in ("cross_entropy", "hard_pixel_mining"):
            problems.append(
                "MODEL.SEM_SEG_HEAD.LOSS_TYPE must be 'cross_entropy' or 'hard_pixel_mining', "
                f"got {h.LOSS_TYPE!r}"
            )
        elif h.LOSS_TYPE == "hard_pixel_mining" and not 0.0 < h.HARD_PIXEL_TOP_K <= 1.0:
            problems.append(
                f"MODEL.SEM_SEG_HEAD.HARD_PIXEL_TOP_K must be in (0, 1], got {h.HARD_PIXEL_TOP_K}"
            )
        return problems

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        raise_config_problems(cls.config_problems(cfg, input_shape))
        h = cfg.MODEL.SEM_SEG_HEAD
        return {
            "coarse_head": build_coarse_head(cfg, input_shape),
            "ignore_value": h.IGNORE_VALUE,
            "loss_weight": h.LOSS_WEIGHT,
            "hard_pixel_top_k": h.HARD_PIXEL_TOP_K if h.LOSS_TYPE == "hard_pixel_mining" else 1.0,
        }

    @property
    def output_stride(self) -> int:
        return self.coarse_head.output_stride

    def forward(self, features, targets=None):
        coarse_logits = self.coarse_head(features)
        if self.training:
            return None, self.losses(coarse_logits, targets, features)
        return self.inference(coarse_logits, features), {}

    def canvas_size(self, coarse_logits):
        """(H, W) of the input canvas covered by the coarse logits: stride x their size."""
        s = self.output_stride
        return coarse_logits.shape[-2] * s, coarse_logits.shape[-1] * s

    def losses(self, coarse_logits, targets, features):
        """
        Args:
            coarse_logits (Tensor): (N, K, h, w).
            targets (Tensor): (N, H, W) int64 labels, H <= s * h and W <= s * w.
        """
        logits = F.interpolate(
            coarse_logits, size=self.canvas_size(coarse_logits), mode="bilinear",
            align_corners=False,
        )[..., : targets.shape[-2], : targets.shape[-1]]
        loss = cross_entropy_with_ignore(logits, targets, self.ignore_value, self.hard_pixel_top_k)
        return {"loss_sem_seg": loss * self.loss_weight}

    def inference(self, coarse_logits, features):
        """Bilinear upsampling of the coarse logits to the canvas: (N, K, s * h, s * w) float32."""
        return F.interpolate(
            coarse_logits.float(), size=self.canvas_size(coarse_logits), mode="bilinear",
            align_corners=False,
        )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def point_feature_names(cfg, input_shape: Dict[str, ShapeSpec]) -> List[str]:
    """``MODEL.POINT_HEAD.IN_FEATURES``, or if it is empty the backbone output of the smallest
    stride (e.g. res2, or p2 of an FPN)."""
    names = list(cfg.MODEL.POINT_HEAD.IN_FEATURES)
    return names or [min(input_shape, key=lambda f: input_shape[f].stride)]


class TracedStep(NamedTuple):
    """
    One subdivision step of one image: the centres ``xy`` (P, 2) float of the cells it
    re-predicted, in pixels of the image (``(x, y)``; cells wholly in the padding left out), the
    cell size ``cell`` (height, width) in pixels, the step's ``grid`` (H, W) over the padded canvas,
    and ``labels`` (ceil(H_img / cell_h), ceil(W_img / cell_w)) int64, the argmax after the step.
    """

    xy: torch.Tensor
    cell: Tuple[float, float]
    grid: Tuple[int, int]
    labels: torch.Tensor


class SubdivisionTrace(NamedTuple):
    """
    What :meth:`PointRendSegHead.trace_subdivision` recorded for one image: ``coarse_labels``
    (h, w) int64 argmax of the coarse logits (stride ``coarse_stride``), ``steps`` (one
    :class:`TracedStep` per step run; steps whose every cell a later step re-predicts are
    skipped, as in inference) and the final ``logits`` (K, H, W) float32.
    """

    coarse_labels: torch.Tensor
    coarse_stride: int
    steps: List[TracedStep]
    logits: torch.Tensor


@SEM_SEG_HEADS_REGISTRY.register()
class PointRendSegHead(BilinearSegHead):
    """
    PointRend (Kirillov et al., CVPR 2020) on a coarse head.

    Training adds ``loss_sem_seg_point``: cross-entropy of the point head at points chosen by the
    sampler (over-generation k, importance fraction beta), against labels sampled there with
    nearest interpolation. Inference repeats {2x bilinear upsampling; re-predict the N most
    uncertain cells with the point head} from the coarse stride up to the input resolution.
    """

    @configurable
    def __init__(
        self, *, point_head: nn.Module, point_sampler, in_features: List[str],
        train_num_points: int, subdivision_num_points: int, subdivision_steps: int = -1,
        point_loss_weight: float = 1.0, **kwargs,
    ):
        """
        Args:
            point_head: maps (N, C, P) fine features and (N, K, P) coarse logits to (N, K, P).
            point_sampler: provides ``training_points`` / ``subdivision_points``.
            in_features: feature maps sampled as fine-grained features (e.g. ["res2"]).
            train_num_points: points per image in training.
            subdivision_num_points: points re-predicted per subdivision step.
            subdivision_steps: number of 2x steps; -1 derives it from the coarse stride
                (log2 s: 4 at stride 16, 3 at stride 8).
            point_loss_weight: weight of ``loss_sem_seg_point``.
            kwargs: the arguments of :class:`BilinearSegHead`.
        """
        super().__init__(**kwargs)
        self.point_head = point_head
        self.point_sampler = point_sampler
        self.in_features = list(in_features)
        self.train_num_points = train_num_points
        self.subdivision_num_points = subdivision_num_points
        self.subdivision_steps = subdivision_steps
        self.point_loss_weight = point_loss_weight

    @classmethod
    def config_problems(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> List[str]:
        """
        The problems of :class:`BilinearSegHead` plus: ``MODEL.POINT_HEAD.IN_FEATURES`` must be
        backbone outputs, and a ``MODEL.POINT_HEAD.NUM_CLASSES`` (a key of Detectron2's PointRend
        project, not ours) must equal ``MODEL.SEM_SEG_HEAD.NUM_CLASSES``: the point head refines
        the coarse logits class by class.
        """
        problems = super().config_problems(cfg, input_shape)
        p = cfg.MODEL.POINT_HEAD
        problems += missing_feature_problems(cfg, "MODEL.POINT_HEAD.IN_FEATURES", p.IN_FEATURES,
                                             input_shape)
        for key in ("TRAIN_NUM_POINTS", "SUBDIVISION_NUM_POINTS"):
            value = p[key]
            if not _is_int(value) or value < 1:
                problems.append(
                    f"MODEL.POINT_HEAD.{key}={value!r} must be an integer >= 1 (the points "
                    + ("of the point loss per image" if key.startswith("TRAIN")
                       else "re-predicted per subdivision step")
                    + "); for a model without PointRend use MODEL.SEM_SEG_HEAD.NAME "
                    "BilinearSegHead")
        steps = p.SUBDIVISION_STEPS
        if not _is_int(steps) or (steps < 1 and steps != -1):
            problems.append(
                f"MODEL.POINT_HEAD.SUBDIVISION_STEPS={steps!r} must be -1 (log2 of the coarse "
                "stride: up to the input resolution) or an integer >= 1; for a model without "
                "PointRend use MODEL.SEM_SEG_HEAD.NAME BilinearSegHead")
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        point_classes = p.get("NUM_CLASSES", None)
        if point_classes is not None and point_classes != num_classes:
            problems.append(
                f"MODEL.POINT_HEAD.NUM_CLASSES={point_classes} differs from "
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={num_classes}: pointrend_seg's point head "
                "predicts MODEL.SEM_SEG_HEAD.NUM_CLASSES classes (it refines the coarse logits "
                "class by class); remove MODEL.POINT_HEAD.NUM_CLASSES or make it equal"
            )
        return problems

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        p = cfg.MODEL.POINT_HEAD
        in_features = point_feature_names(cfg, input_shape)
        in_channels = sum(input_shape[f].channels for f in in_features)
        ret.update(
            point_head=build_point_head(cfg, in_channels),
            point_sampler=build_point_sampler(cfg),
            in_features=in_features,
            train_num_points=p.TRAIN_NUM_POINTS,
            subdivision_num_points=p.SUBDIVISION_NUM_POINTS,
            subdivision_steps=p.SUBDIVISION_STEPS,
            point_loss_weight=p.LOSS_WEIGHT,
        )
        return ret

    def trace_subdivision(self, features, image_size) -> SubdivisionTrace:
        """
        One image's inference, recording the subdivision (for pictures of the points, e.g.
        :func:`pointrend_seg.visualization.draw_subdivision_figure`).

        Args:
            features: the backbone features of the image alone, padded to a multiple of the
                backbone stride (``GeneralizedSemanticSegmentor.backbone_features``).
            image_size: (H, W) of the image inside that padding.

        Returns:
            SubdivisionTrace: the coarse prediction, each step run (its points in pixels of the
            image; cells wholly in the padding left out) and the final logits, equal to the
            model's for the image alone.
        """
        height, width = image_size
        coarse = self.coarse_head(features)
        logits, steps = self.inference(coarse, features, return_points=True)
        canvas_h, canvas_w = self.canvas_size(coarse)
        s = self.output_stride
        traced = []
        for step in steps:
            xy = step.coords[0] * step.coords.new_tensor([canvas_w, canvas_h])
            cell = (canvas_h / step.size[0], canvas_w / step.size[1])
            # cells that overlap the image (their top-left corner in it)
            inside = (xy[:, 0] - cell[1] / 2 < width) & (xy[:, 1] - cell[0] / 2 < height)
            rows, cols = (math.ceil(height / cell[0]), math.ceil(width / cell[1]))
            traced.append(TracedStep(xy[inside], cell, step.size, step.labels[0, :rows, :cols]))
        return SubdivisionTrace(
            coarse_labels=coarse[0, :, : math.ceil(height / s), : math.ceil(width / s)].argmax(0),
            coarse_stride=s, steps=traced, logits=logits[0, :, :height, :width],
        )

    def predict_points(self, features, coarse_logits, point_coords):
        """
        Point-head logits at ``point_coords`` (N, P, 2): (N, K, P).
        """
        fine = [point_sample(features[f], point_coords) for f in self.in_features]
        fine = fine[0] if len(fine) == 1 else torch.cat(fine, dim=1)  # no copy of a single map
        coarse = point_sample(coarse_logits, point_coords)
        return self.point_head(fine, coarse)

    def losses(self, coarse_logits, targets, features):
        losses = super().losses(coarse_logits, targets, features)
        point_coords = self.point_sampler.training_points(coarse_logits, self.train_num_points)
        point_logits = self.predict_points(features, coarse_logits, point_coords)
        # Points are normalised over the canvas; labels beyond the targets are padding (ignored).
        canvas_h, canvas_w = self.canvas_size(coarse_logits)
        targets = F.pad(
            targets, (0, canvas_w - targets.shape[-1], 0, canvas_h - targets.shape[-2]),
            value=self.ignore_value,
        )
        point_labels = sample_point_labels(targets, point_coords)
        point_loss = cross_entropy_with_ignore(point_logits, point_labels, self.ignore_value)
        losses["loss_sem_seg_point"] = point_loss * self.point_loss_weight
        return losses

    def num_subdivision_steps(self) -> int:
        if self.subdivision_steps >= 0:
            return self.subdivision_steps
        return max(0, math.ceil(math.log2(self.output_stride)))

    def _repredicts_every_cell(self, h, w, step: int) -> bool:
        """
        Whether subdivision step ``step`` (1-based) of (h, w) coarse logits re-predicts all its
        cells. Only a provable answer counts: with symbolic sizes (torch.export) it is False and
        the step runs the general way (same result).
        """
        cells = h * 2 ** step * w * 2 ** step
        return statically_known_true(self.subdivision_num_points >= cells)

    def _first_needed_step(self, h, w) -> int:
        """
        The first step whose result is not overwritten: the last one that re-predicts every cell
        (its point-head inputs are the coarse logits and fine features, not the steps before
        it), else step 1.
        """
        first = 1
        for step in range(1, self.num_subdivision_steps() + 1):
            if self._repredicts_every_cell(h, w, step):
                first = step
        return first

    def _point_predictor(self, features, coarse_logits, first_step: int):
        """
        ``coords (N, P, 2) -> point logits (N, K, P)`` for the inference from ``first_step`` on:
        :meth:`predict_points`, or, when the point head can project its fine-grained features
        and the maps have fewer pixels than the points the steps will sample (small images,
        e.g. on CPU), the same from the projected maps (their first-layer product computed once
        per pixel instead of once per point; equal up to float rounding).
        """
        h, w = coarse_logits.shape[-2:]
        maps = [features[f] for f in self.in_features]
        channels = getattr(self.point_head, "fine_projection_channels", None)
        if channels is not None:
            num_points = sum(torch.sym_min(self.subdivision_num_points, h * w * 4 ** step)
                             for step in range(first_step, self.num_subdivision_steps() + 1))
            pixels = sum(x.shape[-2] * x.shape[-1] for x in maps)
            fewer_channels = channels * len(maps) <= sum(x.shape[1] for x in maps)
            if fewer_channels and statically_known_true(pixels < num_points):
                projected = self.point_head.project_fine_features(maps)

                def predict(coords):
                    fine = point_sample(projected[0], coords)
                    for x in projected[1:]:
                        fine = fine + point_sample(x, coords)
                    coarse = point_sample(coarse_logits, coords)
                    return self.point_head(fine, coarse, fine_projected=True)

                return predict
        return lambda coords: self.predict_points(features, coarse_logits, coords)

    def inference(self, coarse_logits, features, return_points: bool = False):
        """
        Adaptive subdivision: :meth:`num_subdivision_steps` times {2x bilinear upsampling; the
        point head re-predicts the ``subdivision_num_points`` most uncertain cells}. The logits
        stay float32 whatever the autocast dtype of the point head. There is no host
        synchronisation and no data-dependent shape (the number of points and of steps are the
        only constants), so it runs asynchronously on CUDA and exports with symbolic h and w.

        Args:
            coarse_logits (Tensor): (N, K, h, w) at stride s.
            features (dict[str, Tensor]): the fine-grained maps named by ``in_features``.
            return_points: also return the points each step re-predicted (for visualisation);
                off, nothing is recorded.

        Steps whose every cell a later step re-predicts (while N >= the number of cells) are
        skipped: their result would be overwritten. A step that re-predicts every cell needs no
        upsampling nor selection. On small images the point head's first layer may be applied
        to the fine-grained maps once instead of to every point (:meth:`_point_predictor`).

        Returns:
            Tensor: (N, K, s * h, s * w) float32 logits; with ``return_points``, a tuple
            (logits, steps) with one :class:`SubdivisionStep` per step run (the skipped ones
            re-predicted nothing that survives).
        """
        # Contiguous: the write-back below indexes the flat storage.
        coarse_logits = coarse_logits.float().contiguous()
        if coarse_logits.device.type == "cpu":
            # grid_sample on CPU is ~3x faster on channels_last maps (same values, bit for bit):
            # one copy per image instead of one slow sampling per step and map.
            features = {f: features[f].contiguous(memory_format=torch.channels_last)
                        for f in self.in_features}
        n, k, h, w = coarse_logits.shape
        logits = coarse_logits
        steps = []
        first = self._first_needed_step(h, w)
        predict = self._point_predictor(features, coarse_logits, first)
        for step in range(first, self.num_subdivision_steps() + 1):
            if self._repredicts_every_cell(h, w, step):
                # Every cell is re-predicted: no upsampling or selection to do.
                size = (h * 2 ** step, w * 2 ** step)
                point_indices = torch.arange(size[0] * size[1], device=logits.device)
                point_indices = point_indices.expand(n, -1)
                point_coords = grid_cell_centers(point_indices, *size)
                logits = predict(point_coords).float().reshape(n, k, *size)
            else:
                logits = F.interpolate(logits, scale_factor=2, mode="bilinear",
                                       align_corners=False)
                point_indices, point_coords = self.point_sampler.subdivision_points(
                    logits, self.subdivision_num_points
                )
                _write_points(logits, point_indices, predict(point_coords))
            if return_points:
                steps.append(SubdivisionStep(point_indices, point_coords,
                                             tuple(logits.shape[-2:]), logits.argmax(1)))
        canvas = self.canvas_size(coarse_logits)
        if tuple(logits.shape[-2:]) != canvas:
            logits = F.interpolate(logits, size=canvas, mode="bilinear", align_corners=False)
        return (logits, steps) if return_points else logits


class SubdivisionStep(NamedTuple):
    """
    The points one subdivision step re-predicted: flat ``indices`` (N, P) into its
    ``size`` (H, W) grid, their normalised cell centres ``coords`` (N, P, 2) (``(x, y)`` in
    [0, 1] over the padded canvas), and ``labels`` (N, H, W) int64, the argmax of the logits
    after the step.
    """

    indices: torch.Tensor
    coords: torch.Tensor
    size: Tuple[int, int]
    labels: torch.Tensor


def _write_points(logits, indices, values):
    """
    ``logits[b, :, cell] = values[b, :, p]`` for ``cell = indices[b, p]``, in place.

    Args:
        logits (Tensor): (N, K, H, W) contiguous float32.
        indices (Tensor): (N, P) flat indices into H x W, distinct within an image.
        values (Tensor): (N, K, P), any float dtype.
    """
    n, k, h, w = logits.shape
    # One flat index per written value (b, class, point): a single index_put_ (faster than a
    # scatter_ along the last dim on CPU, the same on CUDA).
    rows = torch.arange(n * k, device=logits.device).view(n, k, 1) * (h * w)
    flat = (rows + indices.unsqueeze(1)).reshape(-1)
    logits.view(-1).index_put_((flat,), values.reshape(-1).to(logits.dtype))


@SEM_SEG_HEADS_REGISTRY.register()
class CoarseSegHead(BilinearSegHead):
    """Former name of :class:`BilinearSegHead`, registered so that configs naming it keep
    working."""
