"""
Semantic-segmentation heads (Detectron2's ``SEM_SEG_HEADS_REGISTRY``): a coarse head plus bilinear
upsampling (``BilinearSegHead``, the DeepLab baseline) or PointRend (``PointRendSegHead``). Both
have Detectron2's ``forward(features, targets=None)``: ``(None, losses)`` in training, else
``(logits, {})``, logits (N, K, s * h, s * w) for coarse logits (N, K, h, w) at stride s.
"""
import math
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ..config import check_arguments, is_int, is_number, raise_config_problems

from .coarse_heads import build_coarse_head, missing_feature_problems
from .losses import cross_entropy_with_ignore
from .point_heads import build_point_head
from .point_sampling import (
    calculate_uncertainty,
    grid_cell_centers,
    most_uncertain_cells,
    point_sample,
    sample_point_labels,
    training_point_coords,
)

__all__ = ["BilinearSegHead", "PointRendSegHead", "SubdivisionTrace", "TracedStep"]


_LOSS_WEIGHT_RULE = ("a finite number >= 0 (0 turns the loss off; a negative one is gradient "
                     "ascent)")


def _is_loss_weight(value) -> bool:
    return is_number(value) and 0 <= value < math.inf


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
        """``coarse_head``: features -> (N, K, h, w) logits, with an ``output_stride``;
        ``hard_pixel_top_k``: the fraction, in (0, 1], of hardest labelled pixels the loss
        averages (1: plain cross-entropy)."""
        super().__init__()
        check_arguments(type(self).__name__, [
            ("MODEL.SEM_SEG_HEAD.HARD_PIXEL_TOP_K", "hard_pixel_top_k", hard_pixel_top_k,
             is_number(hard_pixel_top_k) and 0.0 < hard_pixel_top_k <= 1.0,
             "in (0, 1] (the share of the hardest pixels the loss averages; 1: plain "
             "cross-entropy)"),
            ("MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "ignore_value", ignore_value,
             is_int(ignore_value), "an integer (the label value no loss counts)"),
            ("MODEL.SEM_SEG_HEAD.LOSS_WEIGHT", "loss_weight", loss_weight,
             _is_loss_weight(loss_weight), _LOSS_WEIGHT_RULE),
        ])
        self.coarse_head = coarse_head
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.hard_pixel_top_k = hard_pixel_top_k

    @classmethod
    def config_problems(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> List[str]:
        """One message per problem of the YAML keys that the constructor does not see
        (``NUM_CLASSES`` with ``IGNORE_VALUE``, ``LOSS_TYPE``)."""
        h = cfg.MODEL.SEM_SEG_HEAD
        problems = []
        if h.NUM_CLASSES == 1:
            # the losses, the uncertainty (top-2 margin) and the evaluators need >= 2 classes
            problems.append(
                "MODEL.SEM_SEG_HEAD.NUM_CLASSES=1: a foreground/background task has 2 classes "
                "here (one logit per class, softmax): set MODEL.SEM_SEG_HEAD.NUM_CLASSES 2 with "
                "masks of 0 = background, 1 = foreground. Masks of 0/255 need the label map "
                "255 -> 1 first (folder datasets: --label-map 255:1)"
                + (": with MODEL.SEM_SEG_HEAD.IGNORE_VALUE=255 their foreground would be ignored"
                   if h.IGNORE_VALUE == 255 else "")
            )
        elif h.NUM_CLASSES == 0:
            problems.append(
                "MODEL.SEM_SEG_HEAD.NUM_CLASSES=0 must be an integer >= 2 here: 0 means the "
                "dataset's number of classes, which pointrend_seg's tools fill in "
                "(pointrend_seg.engine.as_run_config, after the dataset is registered): build "
                "the model there, or set MODEL.SEM_SEG_HEAD.NUM_CLASSES")
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
        """``coarse_logits`` (N, K, h, w); ``targets`` (N, H, W) int64, H <= s * h, W <= s * w."""
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


class TracedStep(NamedTuple):
    """
    One subdivision step of one image: ``xy`` (P, 2) float, the (x, y) pixel centres of the cells
    it re-predicted (cells wholly in the padding left out); ``cell`` (height, width) in pixels; the
    ``grid`` (H, W) over the padded canvas; ``labels`` (ceil(H_img / cell_h), ceil(W_img / cell_w))
    int64, the argmax after the step.
    """

    xy: torch.Tensor
    cell: Tuple[float, float]
    grid: Tuple[int, int]
    labels: torch.Tensor


class SubdivisionTrace(NamedTuple):
    """
    What :meth:`PointRendSegHead.trace_subdivision` recorded for one image: ``coarse_labels``
    (h, w) int64 argmax of the coarse logits (stride ``coarse_stride``), ``steps`` (one
    :class:`TracedStep` per step the inference ran) and the final ``logits`` (K, H, W) float32.
    """

    coarse_labels: torch.Tensor
    coarse_stride: int
    steps: List[TracedStep]
    logits: torch.Tensor


@SEM_SEG_HEADS_REGISTRY.register()
class PointRendSegHead(BilinearSegHead):
    """
    PointRend (Kirillov et al., CVPR 2020) on a coarse head, as the paper states it: training adds
    the point head's ``loss_sem_seg_point``; inference is adaptive subdivision.
    ``prepare_for_inference`` swaps in a faster :meth:`inference` with the same weights
    (:mod:`pointrend_seg.modeling.fast_subdivision`).
    """

    @configurable
    def __init__(
        self, *, point_head: nn.Module, in_features: List[str], train_num_points: int,
        oversample_ratio: float, importance_sample_ratio: float, subdivision_num_points: int,
        subdivision_steps: int = -1, point_loss_weight: float = 1.0, **kwargs,
    ):
        """
        Args:
            point_head: (N, C, P) fine features and (N, K, P) coarse logits -> (N, K, P) logits.
            in_features: the maps sampled as fine-grained features (e.g. ["res2"]).
            train_num_points: points per image of the point loss (P).
            oversample_ratio, importance_sample_ratio: the paper's k >= 1 and beta in [0, 1]
                (:func:`~pointrend_seg.modeling.point_sampling.training_point_coords`).
            subdivision_num_points: cells re-predicted per image at each subdivision step.
            subdivision_steps: the number of 2x steps; -1: log2 of the coarse stride.
            kwargs: the arguments of :class:`BilinearSegHead`.
        """
        super().__init__(**kwargs)
        without = "; for a model without PointRend use MODEL.SEM_SEG_HEAD.NAME BilinearSegHead"
        check_arguments("PointRendSegHead", [
            ("MODEL.POINT_HEAD.TRAIN_NUM_POINTS", "train_num_points", train_num_points,
             is_int(train_num_points) and train_num_points >= 1,
             "an integer >= 1 (the points of the point loss per image)" + without),
            ("MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", "subdivision_num_points",
             subdivision_num_points, is_int(subdivision_num_points) and subdivision_num_points >= 1,
             "an integer >= 1 (the points re-predicted per subdivision step)" + without),
            ("MODEL.POINT_HEAD.SUBDIVISION_STEPS", "subdivision_steps", subdivision_steps,
             is_int(subdivision_steps) and subdivision_steps >= -1,
             "-1 (log2 of the coarse stride: up to the input resolution) or an integer >= 0 "
             "(0: bilinear upsampling only)"),
            ("MODEL.POINT_HEAD.OVERSAMPLE_RATIO", "oversample_ratio", oversample_ratio,
             is_number(oversample_ratio) and oversample_ratio >= 1, ">= 1 (k: k * N candidates)"),
            ("MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO", "importance_sample_ratio",
             importance_sample_ratio,
             is_number(importance_sample_ratio) and 0.0 <= importance_sample_ratio <= 1.0,
             "in [0, 1] (beta: the share of the most uncertain candidates)"),
            ("MODEL.POINT_HEAD.LOSS_WEIGHT", "point_loss_weight", point_loss_weight,
             _is_loss_weight(point_loss_weight), _LOSS_WEIGHT_RULE),
        ])
        self.point_head = point_head
        self.in_features = list(in_features)
        self.train_num_points = train_num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.subdivision_num_points = subdivision_num_points
        self.subdivision_steps = subdivision_steps
        self.point_loss_weight = point_loss_weight

    @classmethod
    def config_problems(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> List[str]:
        """:class:`BilinearSegHead`'s problems plus those of ``MODEL.POINT_HEAD``'s
        ``IN_FEATURES``, ``SUBDIVISION_STEPS`` and ``NUM_CLASSES`` (Detectron2 PointRend's key)."""
        problems = super().config_problems(cfg, input_shape)
        p = cfg.MODEL.POINT_HEAD
        problems += missing_feature_problems(cfg, "MODEL.POINT_HEAD.IN_FEATURES", p.IN_FEATURES,
                                             input_shape)
        if p.SUBDIVISION_STEPS == 0:  # a YAML config names the model without PointRend
            problems.append(
                "MODEL.POINT_HEAD.SUBDIVISION_STEPS=0 must be -1 (log2 of the coarse stride: up "
                "to the input resolution) or an integer >= 1; for a model without PointRend "
                "use MODEL.SEM_SEG_HEAD.NAME BilinearSegHead")
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
        # empty: the backbone output of the smallest stride (e.g. res2, or p2 of an FPN)
        in_features = list(p.IN_FEATURES) or [min(input_shape, key=lambda f: input_shape[f].stride)]
        in_channels = sum(input_shape[f].channels for f in in_features)
        ret.update(
            point_head=build_point_head(cfg, in_channels),
            in_features=in_features,
            train_num_points=p.TRAIN_NUM_POINTS,
            oversample_ratio=p.OVERSAMPLE_RATIO,
            importance_sample_ratio=p.IMPORTANCE_SAMPLE_RATIO,
            subdivision_num_points=p.SUBDIVISION_NUM_POINTS,
            subdivision_steps=p.SUBDIVISION_STEPS,
            point_loss_weight=p.LOSS_WEIGHT,
        )
        return ret

    def point_logits(self, features, coarse_logits, point_coords):
        """The point head at ``point_coords`` (N, P, 2): (N, K, P)."""
        fine = torch.cat([point_sample(features[f], point_coords, align_corners=False)
                          for f in self.in_features], dim=1)
        coarse = point_sample(coarse_logits, point_coords, align_corners=False)
        return self.point_head(fine, coarse)

    def losses(self, coarse_logits, targets, features):
        losses = super().losses(coarse_logits, targets, features)
        with torch.no_grad():
            point_coords = training_point_coords(
                coarse_logits.float(), self.train_num_points, self.oversample_ratio,
                self.importance_sample_ratio)
        point_logits = self.point_logits(features, coarse_logits, point_coords)
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

    def inference(self, coarse_logits, features, on_step: Optional[Callable] = None):
        """
        Adaptive subdivision: :meth:`num_subdivision_steps` times {2x bilinear upsampling; the
        point head re-predicts the ``subdivision_num_points`` most uncertain cells}, in float32
        whatever the autocast dtype. (N, K, h, w) coarse logits at stride s -> (N, K, s * h,
        s * w) float32. ``on_step(indices (N, P), centres (N, P, 2), logits)`` is called after
        each step.
        """
        coarse_logits = coarse_logits.float()
        logits = coarse_logits
        for _ in range(self.num_subdivision_steps()):
            logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
            n, k, h, w = logits.shape
            uncertainty = calculate_uncertainty(logits)
            indices = most_uncertain_cells(uncertainty, self.subdivision_num_points)
            coords = grid_cell_centers(indices, h, w)
            point_logits = self.point_logits(features, coarse_logits, coords).float()
            logits = logits.reshape(n, k, h * w).scatter(
                2, indices.unsqueeze(1).expand(-1, k, -1), point_logits).view(n, k, h, w)
            if on_step is not None:
                on_step(indices, coords, logits)
        return self.fill_canvas(logits, coarse_logits)

    def fill_canvas(self, logits, coarse_logits):
        """The last step's ``logits``, resized to the canvas if fewer steps than log2(s) ran."""
        canvas = self.canvas_size(coarse_logits)
        if tuple(logits.shape[-2:]) != canvas:
            logits = F.interpolate(logits, size=canvas, mode="bilinear", align_corners=False)
        return logits

    def trace_subdivision(self, features, image_size) -> SubdivisionTrace:
        """
        One image's inference, recording the subdivision (for
        :func:`pointrend_seg.visualization.draw_subdivision_figure`), from the features of
        ``GeneralizedSemanticSegmentor.backbone_features`` and the (H, W) of the image in the
        padding. The trace's logits equal the model's for the image alone.
        """
        height, width = image_size
        coarse = self.coarse_head(features)
        canvas_h, canvas_w = self.canvas_size(coarse)
        steps = []

        def record(indices, coords, logits):
            grid = tuple(logits.shape[-2:])
            cell = (canvas_h / grid[0], canvas_w / grid[1])
            xy = coords[0] * coords.new_tensor([canvas_w, canvas_h])
            # cells that overlap the image (their top-left corner in it)
            inside = (xy[:, 0] - cell[1] / 2 < width) & (xy[:, 1] - cell[0] / 2 < height)
            labels = logits[0, :, : math.ceil(height / cell[0]), : math.ceil(width / cell[1])]
            steps.append(TracedStep(xy[inside], cell, grid, labels.argmax(0)))

        logits = self.inference(coarse, features, on_step=record)
        s = self.output_stride
        return SubdivisionTrace(
            coarse_labels=coarse[0, :, : math.ceil(height / s), : math.ceil(width / s)].argmax(0),
            coarse_stride=s, steps=steps, logits=logits[0, :, :height, :width],
        )
