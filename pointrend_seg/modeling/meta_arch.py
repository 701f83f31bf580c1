"""The semantic-segmentation meta-architecture (Detectron2's ``META_ARCH_REGISTRY``)."""
import math
from typing import Dict, List, Tuple

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import (
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    SEM_SEG_HEADS_REGISTRY,
    Backbone,
    build_backbone,
    build_sem_seg_head,
)
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList

from ..config import ConfigError, check_arguments, check_pointrend_seg_keys, is_number, lookup

from .test_time import check_sliding_window, multi_scale_flip_inference, sliding_window_inference

__all__ = ["GeneralizedSemanticSegmentor"]


@META_ARCH_REGISTRY.register()
class GeneralizedSemanticSegmentor(nn.Module):
    """
    Backbone + any semantic-segmentation head (with or without PointRend), with Detectron2's
    inputs and outputs: dicts with ``image`` (C, H, W) in ``INPUT.FORMAT``, in training ``sem_seg``
    (H, W) int64 labels, optionally the output ``height`` / ``width`` (default: the input's); in
    inference one ``{"sem_seg": (K, height, width) logits}`` per image. Inference is
    batch-independent (:meth:`predict_logits`); ``TEST.*`` adds sliding windows and multi-scale
    + flip augmentation (``sem_seg`` then holds mean class probabilities).
    """

    @configurable
    def __init__(
        self, *, backbone: Backbone, sem_seg_head: nn.Module, pixel_mean: List[float],
        pixel_std: List[float], size_divisibility: int = -1, sliding_window=None,
        test_augmentation=None,
    ):
        """
        Args:
            sem_seg_head: with Detectron2's ``forward(features, targets)`` and ``ignore_value``.
            pixel_mean, pixel_std: per-channel normalisation, in ``INPUT.FORMAT`` order.
            size_divisibility: pad inputs to a multiple of this; -1: the backbone's largest stride.
            sliding_window: None, or dict(window=(h, w), stride=(h, w), blend="mean"|"hann").
            test_augmentation: None, or dict(min_sizes=[...], max_size=int, flip=bool).
        """
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        if size_divisibility < 0:
            size_divisibility = max(s.stride for s in backbone.output_shape().values())
        self.size_divisibility = size_divisibility
        if sliding_window is not None:  # here, so that Python configs are checked too
            check_sliding_window(**sliding_window)
        self.sliding_window = sliding_window
        self.test_augmentation = test_augmentation
        check_arguments("GeneralizedSemanticSegmentor", [
            ("MODEL.PIXEL_MEAN", "pixel_mean", list(pixel_mean),
             all(is_number(v) and math.isfinite(v) for v in pixel_mean), "finite numbers"),
            ("MODEL.PIXEL_STD", "pixel_std", list(pixel_std),
             all(is_number(v) and 0 < v < math.inf for v in pixel_std),
             "finite positive numbers (a division: inf makes a channel 0)")])
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        check_pointrend_seg_keys(cfg)  # a clear error for a config without our keys
        # Names Detectron2 would look up with a KeyError: a ConfigError naming the key.
        lookup(BACKBONE_REGISTRY, "MODEL.BACKBONE.NAME", cfg.MODEL.BACKBONE.NAME)
        lookup(SEM_SEG_HEADS_REGISTRY, "MODEL.SEM_SEG_HEAD.NAME", cfg.MODEL.SEM_SEG_HEAD.NAME)
        backbone = build_backbone(cfg)
        backbone_shape = backbone.output_shape()
        _check_crop_size(cfg, max(s.stride for s in backbone_shape.values()))
        return {
            "backbone": backbone,
            "sem_seg_head": build_sem_seg_head(cfg, backbone_shape),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "sliding_window": dict(
                window=tuple(cfg.TEST.SLIDING_WINDOW.SIZE),
                stride=tuple(cfg.TEST.SLIDING_WINDOW.STRIDE),
                blend=cfg.TEST.SLIDING_WINDOW.BLEND,
            ) if cfg.TEST.SLIDING_WINDOW.ENABLED else None,
            "test_augmentation": dict(
                min_sizes=list(cfg.TEST.AUG.MIN_SIZES), max_size=cfg.TEST.AUG.MAX_SIZE,
                flip=cfg.TEST.AUG.FLIP,
            ) if cfg.TEST.AUG.ENABLED else None,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def normalize(self, image):
        """(C, H, W) image (or (B, C, H, W) images) in ``INPUT.FORMAT`` -> normalised float, on the
        model's device."""
        return (image.to(self.device) - self.pixel_mean) / self.pixel_std

    def predict_logits(self, images: List[torch.Tensor]) -> List[torch.Tensor]:
        """
        (K, H, W) float32 logits of each normalised (C, H, W) image at its own resolution. Each
        image is padded only to the next multiple of ``size_divisibility``, as if it ran alone
        (equal padded sizes share a batch): with a common canvas, a larger neighbour's padding
        would reach every logit through ASPP's image pooling and the dilated convolutions.
        """
        groups: Dict[Tuple[int, int], List[int]] = {}
        d = self.size_divisibility
        for i, image in enumerate(images):
            padded = tuple(s if d <= 1 else -(-s // d) * d for s in image.shape[-2:])
            groups.setdefault(padded, []).append(i)
        outputs: List[torch.Tensor] = [None] * len(images)
        for indices in groups.values():
            batch = ImageList.from_tensors([images[i] for i in indices], self.size_divisibility)
            logits, _ = self.sem_seg_head(self.backbone(batch.tensor))
            for i, x, (h, w) in zip(indices, logits, batch.image_sizes):
                outputs[i] = x[:, :h, :w]
        return outputs

    def backbone_features(self, image: torch.Tensor):
        """(features, (H, W)): the backbone features of one (C, H, W) image in ``INPUT.FORMAT``
        (not normalised) alone, padded as the whole-image path pads it, and its size."""
        batch = ImageList.from_tensors([self.normalize(image)], self.size_divisibility)
        return self.backbone(batch.tensor), tuple(image.shape[-2:])

    def predict_whole(self, image):
        """(C, H, W) normalised image -> (K, H, W) logits: pad, backbone, head, crop."""
        return self.predict_logits([image])[0]

    def predict_windowed(self, image):
        """Like :meth:`predict_whole`, window by window when sliding-window inference is on."""
        if self.sliding_window is None:
            return self.predict_whole(image)
        return sliding_window_inference(self.predict_whole, image, **self.sliding_window)

    def forward(self, batched_inputs: List[Dict]):
        if self.training:
            return self.losses(batched_inputs)
        # Lazy: sliding windows and TTA take (and normalise) one image at a time.
        images = (self.normalize(x["image"]) for x in batched_inputs)
        if self.sliding_window is None and self.test_augmentation is None:
            scores = self.predict_logits(list(images))
        elif self.test_augmentation is None:
            scores = map(self.predict_windowed, images)
        else:
            scores = (multi_scale_flip_inference(self.predict_windowed, image,
                                                 **self.test_augmentation) for image in images)
        return [{"sem_seg": sem_seg_postprocess(s, s.shape[-2:], x.get("height", s.shape[-2]),
                                                x.get("width", s.shape[-1]))}
                for s, x in zip(scores, batched_inputs)]

    def losses(self, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        """
        Training losses of a batch padded to one canvas, the labels with the ignore value: the
        losses ignore the padding, the convolutions and ASPP's pooling of a smaller image see it
        (zeros after normalisation), as in Detectron2's ``SemanticSegmentor``.
        """
        images = ImageList.from_tensors([self.normalize(x["image"]) for x in batched_inputs],
                                        self.size_divisibility)
        targets = ImageList.from_tensors([x["sem_seg"].to(self.device) for x in batched_inputs],
                                         self.size_divisibility,
                                         self.sem_seg_head.ignore_value).tensor
        _, losses = self.sem_seg_head(self.backbone(images.tensor), targets)
        return losses


def _check_crop_size(cfg, stride: int) -> None:
    """An "absolute" ``INPUT.CROP.SIZE`` must be a multiple of the output stride: another size
    would put ignore-valued padding into every training batch."""
    crop = cfg.INPUT.CROP
    if not (crop.ENABLED and crop.TYPE == "absolute"):
        return
    size = list(crop.SIZE)
    if len(size) != 2 or any(not isinstance(s, int) or s <= 0 for s in size):
        raise ConfigError(f"INPUT.CROP.SIZE={size} must be two positive integers (h, w)")
    if any(s % stride for s in size):
        suggestion = [max(stride, round(s / stride) * stride) for s in size]
        r = cfg.MODEL.RESNETS
        raise ConfigError(
            f"INPUT.CROP.SIZE={size} (INPUT.CROP.TYPE 'absolute') is not a multiple of the "
            f"model's output stride {stride} (the largest stride of the backbone outputs, set by "
            f"MODEL.RESNETS.RES4_DILATION={r.RES4_DILATION} / RES5_DILATION={r.RES5_DILATION}); "
            f"every crop would be padded to a multiple of {stride}. Use e.g. INPUT.CROP.SIZE "
            f"{suggestion}"
        )
