"""The semantic-segmentation meta-architecture (Detectron2's ``META_ARCH_REGISTRY``)."""
from typing import Dict, List

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone, build_sem_seg_head
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList

from ..config_check import check_model_config

from .test_time import multi_scale_flip_inference, sliding_window_inference

__all__ = ["PointRendSemanticSegmentor"]


@META_ARCH_REGISTRY.register()
class PointRendSemanticSegmentor(nn.Module):
    """
    Backbone + semantic-segmentation head, with Detectron2's standard inputs and outputs.

    Input: a list of dicts with ``image`` (C, H, W) in ``INPUT.FORMAT``, in training ``sem_seg``
    (H, W) int64 labels, and optionally ``height``/``width`` (output size, default the input's).
    Output (inference): one dict per image, ``{"sem_seg": (K, height, width) logits}``, so
    Detectron2's evaluators work unchanged.

    Images of a batch are padded (``ImageList``) to a multiple of the backbone's largest stride,
    labels with the ignore value; predictions are cropped back before resizing to
    ``height``/``width``.

    Inference options (``TEST.*``): sliding-window inference for large images and multi-scale +
    flip test-time augmentation (then ``sem_seg`` holds mean class probabilities, not logits).
    """

    @configurable
    def __init__(
        self, *, backbone: Backbone, sem_seg_head: nn.Module, pixel_mean: List[float],
        pixel_std: List[float], size_divisibility: int = -1, sliding_window=None,
        test_augmentation=None,
    ):
        """
        Args:
            backbone: a Detectron2 backbone.
            sem_seg_head: a head with Detectron2's ``forward(features, targets)`` interface and an
                ``ignore_value`` attribute.
            pixel_mean, pixel_std: per-channel normalisation, in ``INPUT.FORMAT`` order.
            size_divisibility: pad inputs to a multiple of this; -1 uses the largest stride of
                the backbone's outputs.
            sliding_window: None, or dict(window=(h, w), stride=(h, w), blend="mean"|"hann").
            test_augmentation: None, or dict(min_sizes=[...], max_size=int, flip=bool).
        """
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        if size_divisibility < 0:
            size_divisibility = max(s.stride for s in backbone.output_shape().values())
        self.size_divisibility = size_divisibility
        self.sliding_window = sliding_window
        self.test_augmentation = test_augmentation
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        backbone_shape = backbone.output_shape()
        # Cross-key checks (classes, feature names, crop vs stride); raises ConfigError.
        check_model_config(cfg, backbone_shape)
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
        """(C, H, W) image in ``INPUT.FORMAT`` -> normalised float image on the model's device."""
        return (image.to(self.device) - self.pixel_mean) / self.pixel_std

    def preprocess_images(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise and pad the images of a batch."""
        images = [self.normalize(x["image"]) for x in batched_inputs]
        return ImageList.from_tensors(images, self.size_divisibility)

    def predict_whole(self, image):
        """(C, H, W) normalised image -> (K, H, W) logits: pad, backbone, head, crop."""
        images = ImageList.from_tensors([image], self.size_divisibility)
        logits, _ = self.sem_seg_head(self.backbone(images.tensor))
        return logits[0, :, : image.shape[-2], : image.shape[-1]]

    def predict_windowed(self, image):
        """Like :meth:`predict_whole`, window by window when sliding-window inference is on."""
        if self.sliding_window is None:
            return self.predict_whole(image)
        return sliding_window_inference(self.predict_whole, image, **self.sliding_window)

    def inference_with_test_time_strategies(self, x: Dict):
        """One image through sliding windows and/or multi-scale + flip TTA."""
        image = self.normalize(x["image"])
        if self.test_augmentation is not None:
            scores = multi_scale_flip_inference(self.predict_windowed, image, **self.test_augmentation)
        else:
            scores = self.predict_windowed(image)
        height, width = x.get("height", image.shape[-2]), x.get("width", image.shape[-1])
        return {"sem_seg": sem_seg_postprocess(scores, scores.shape[-2:], height, width)}

    def forward(self, batched_inputs: List[Dict]):
        if not self.training and (
            self.sliding_window is not None or self.test_augmentation is not None
        ):
            return [self.inference_with_test_time_strategies(x) for x in batched_inputs]
        images = self.preprocess_images(batched_inputs)
        features = self.backbone(images.tensor)
        if self.training:
            targets = ImageList.from_tensors(
                [x["sem_seg"].to(self.device) for x in batched_inputs],
                self.size_divisibility,
                self.sem_seg_head.ignore_value,
            ).tensor
            _, losses = self.sem_seg_head(features, targets)
            return losses
        results, _ = self.sem_seg_head(features)
        processed = []
        for result, x, image_size in zip(results, batched_inputs, images.image_sizes):
            height = x.get("height", image_size[0])
            width = x.get("width", image_size[1])
            processed.append({"sem_seg": sem_seg_postprocess(result, image_size, height, width)})
        return processed
