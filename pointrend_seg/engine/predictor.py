"""A model for inference, loaded one way for every use and both config kinds
(:func:`load_inference_model`), and a predictor with Detectron2's ``DefaultPredictor`` contract
and a memory-bounded way to get class ids (:meth:`SemSegPredictor.predict_labels`)."""
import numpy as np
import torch

from detectron2.data.transforms import NoOpTransform

from ..config import ConfigError
from ..modeling import prepare_for_inference
from ..modeling.postprocessing import resized_argmax
from .checkpoint import SafeCheckpointer
from .run_config import as_run_config

__all__ = ["SemSegPredictor", "build_predictor", "load_inference_model", "require_weights"]


def load_inference_model(cfg, *, resume: bool = False, partial_weights: bool = False,
                         weights=None):
    """
    The model of ``cfg`` (either kind) in eval mode, ``weights`` (default ``MODEL.WEIGHTS``; with
    ``resume`` the checkpoint ``last_checkpoint`` names) loaded by :class:`SafeCheckpointer`; not
    yet prepared for inference (:func:`prepare_for_inference`: each use does that).

    Raises:
        IncompleteWeightsError: the weights leave model tensors uninitialised (e.g. another
            ``MODEL.POINT_HEAD.FC_DIM``), unless ``partial_weights`` (``--partial-weights``).
        ConfigError: there is nothing to load (:func:`require_weights`).
    """
    run = as_run_config(cfg)
    model = run.build_model()
    checkpointer = SafeCheckpointer(model, save_dir=run.settings.OUTPUT_DIR,
                                    require_all_weights=not partial_weights)
    path = run.settings.MODEL.WEIGHTS if weights is None else weights
    if not (resume and checkpointer.has_checkpoint()):
        require_weights(run, path, resume_dir=run.settings.OUTPUT_DIR if resume else None)
    checkpointer.resume_or_load(path, resume=resume)
    return model.eval()


def require_weights(cfg, weights, *, tool: bool = False, resume_dir=None) -> None:
    """A ConfigError if ``weights`` is empty (the model would be a random one), naming ``cfg``'s
    weights key, the folder ``resume_dir`` without a checkpoint and, with ``tool``, ``--run`` /
    ``--weights``."""
    if weights:
        return
    key = as_run_config(cfg).key_names.get("MODEL.WEIGHTS", "MODEL.WEIGHTS")
    raise ConfigError(
        f"{key} is empty" + (f" and {resume_dir} has no last_checkpoint to resume from"
                             if resume_dir else "")
        + ": there are no weights to load, the model would be a random one. Give the trained "
        "model, e.g. " + ("--run OUTPUT_DIR, --weights output/model_final.pth or " if tool else "")
        + f"{key}{' ' if key == 'MODEL.WEIGHTS' else '='}output/model_final.pth")


class SemSegPredictor:
    """Detectron2's ``DefaultPredictor`` contract - ``predictor(image_bgr)`` -> ``{"sem_seg": (K,
    H, W) logits}`` of an (H, W, 3) BGR uint8 image, resized by ``aug`` as the test mapper does -
    plus :meth:`predict_labels`, class ids in memory bounded by the model's input size. Made by
    :func:`build_predictor`."""

    def __init__(self, model, aug, input_format: str, cfg=None):
        self.model, self.aug, self.input_format, self.cfg = model, aug, input_format, cfg

    def model_input(self, original_image: np.ndarray) -> torch.Tensor:
        """(3, h, w) float32 image in ``input_format``, resized as ``__call__`` resizes it, from
        an (H, W, 3) BGR uint8 image."""
        # resized before the channels are reordered (which resizing ignores): no large copy
        image = self.aug.get_transform(original_image).apply_image(original_image)
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        return torch.as_tensor(image.astype("float32").transpose(2, 0, 1))

    def __call__(self, original_image: np.ndarray) -> dict:
        height, width = original_image.shape[:2]
        with torch.no_grad():
            return self.model([{"image": self.model_input(original_image), "height": height,
                                "width": width}])[0]

    def predict_labels(self, original_image: np.ndarray) -> np.ndarray:
        """(H, W) class ids of an (H, W, 3) BGR uint8 image (uint8; int16 / int32 over 256
        classes): ``self(image)["sem_seg"].argmax(0)`` up to float ties, but the logits at the
        model's input size are resized and reduced band by band
        (:func:`~pointrend_seg.modeling.postprocessing.resized_argmax`): no (K, H, W) array."""
        height, width = original_image.shape[:2]
        image = self.model_input(original_image)
        with torch.no_grad():
            # height / width = the model input's size: sem_seg_postprocess does not resize.
            logits = self.model([{"image": image, "height": image.shape[1],
                                  "width": image.shape[2]}])[0]["sem_seg"]
            return resized_argmax(logits, height, width).numpy()


def build_predictor(cfg, *, partial_weights: bool = False, weights=None) -> SemSegPredictor:
    """A :class:`SemSegPredictor` of ``cfg`` (either kind): :func:`load_inference_model` (also
    for what it refuses), then :func:`prepare_for_inference` (``MODEL.INFERENCE.*``);
    ``predictor.inference_handle.undo()`` restores the model as loaded."""
    run = as_run_config(cfg)
    model = load_inference_model(run, partial_weights=partial_weights, weights=weights)
    mapper = run.mapper(False)
    resize = next(iter(mapper.augmentations.augs), None)
    predictor = SemSegPredictor(model, resize or _NoResize(), mapper.image_format, run.settings)
    predictor.inference_handle = prepare_for_inference(model, run.settings)
    return predictor


class _NoResize:
    def get_transform(self, image):
        return NoOpTransform()
