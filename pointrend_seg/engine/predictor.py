"""Detectron2's ``DefaultPredictor`` for our configs, with weights loaded by :class:`SafeCheckpointer`."""
from detectron2.engine import DefaultPredictor

from ..modeling import prepare_for_inference
from .checkpoint import SafeCheckpointer

__all__ = ["build_predictor"]


def build_predictor(cfg) -> DefaultPredictor:
    """
    Detectron2's ``DefaultPredictor`` (one BGR image in, ``{"sem_seg": (K, H, W)}`` out, resized
    per ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``), whose ``MODEL.WEIGHTS`` are loaded by
    :class:`SafeCheckpointer` instead of ``DetectionCheckpointer``: ``.pth`` files with
    ``weights_only``, and weights that fill less than half of the backbone refused
    (:class:`BackboneMismatchError`) instead of a model that predicts noise. The loaded model is
    then prepared for inference (``MODEL.INFERENCE.*``, :func:`prepare_for_inference`: batch norm
    folded, ...); ``predictor.inference_handle.undo()`` restores the model as loaded.
    """
    weights = cfg.MODEL.WEIGHTS
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = ""  # DefaultPredictor loads nothing; the safe checkpointer below does
    predictor = DefaultPredictor(cfg)
    predictor.cfg.MODEL.WEIGHTS = weights
    predictor.cfg.freeze()
    SafeCheckpointer(predictor.model).load(weights)
    predictor.inference_handle = prepare_for_inference(predictor.model, cfg)
    return predictor
