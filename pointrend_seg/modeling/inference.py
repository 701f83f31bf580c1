"""
Inference transforms of a model in eval mode, applied by :func:`prepare_for_inference` and undone
exactly by the handle it returns:

* **fast subdivision**: every ``PointRendSegHead`` with an ``MLPPointHead`` becomes a
  :class:`~pointrend_seg.modeling.fast_subdivision.FastPointRendSegHead` (same parameters, equal
  up to float rounding);
* **batch norm folded** into the Detectron2 ``Conv2d`` it follows (``BatchNorm2d``, its sync
  variants - the same affine map in eval mode - and ``FrozenBatchNorm2d``): weight ``W * s``, bias
  ``(b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)``, computed in float64. Group norm and
  batch norm without running statistics are left alone;
* **channels_last** 4-d parameters and buffers (so activations);
* **torch.compile** of ``backbone`` and ``sem_seg_head``.

A forward in training mode raises until :meth:`InferenceHandle.undo`, which puts the original
parameters, norms and submodules back (the state dict bit-identical). The handle is also a context
manager (``with prepare_for_inference(model, cfg): ...``); a caller that never trains the model
again may drop it, freeing the original weights.
"""
import dataclasses
import logging
from typing import Callable, List, Optional

import torch
from torch import nn

from detectron2.layers import Conv2d, FrozenBatchNorm2d

from ..config import ConfigError
from .fast_subdivision import use_fast_subdivision

__all__ = ["COMPILE_MODES", "InferenceHandle", "InferenceOptions", "fold_batch_norms",
           "prepare_for_inference"]

logger = logging.getLogger(__name__)

# MODEL.INFERENCE.COMPILE values besides "" (off): the modes of torch.compile.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Submodules compiled (those of GeneralizedSemanticSegmentor and Detectron2's meta-archs): the
# pre- and post-processing around them is Python over lists of images.
COMPILED_CHILDREN = ("backbone", "sem_seg_head")


@dataclasses.dataclass(frozen=True)
class InferenceOptions:
    """What :func:`prepare_for_inference` does (``MODEL.INFERENCE.*``); ``compile``: "" (off) or
    one of ``COMPILE_MODES``, with the ``torch.compile`` backend ``compile_backend``."""

    fold_bn: bool = True
    channels_last: bool = False
    compile: str = ""
    compile_backend: str = "inductor"
    fast_subdivision: bool = True

    def __post_init__(self):
        if self.compile and self.compile not in COMPILE_MODES:
            raise ConfigError(
                f"MODEL.INFERENCE.COMPILE must be '' (off) or one of {list(COMPILE_MODES)}, "
                f"got {self.compile!r}"
            )

    @classmethod
    def from_config(cls, cfg, device) -> "InferenceOptions":
        """The options of ``cfg.MODEL.INFERENCE`` for a model on ``device`` ("auto" resolved)."""
        c = cfg.MODEL.INFERENCE
        choices = {"auto": torch.device(device).type == "cuda", "on": True, "off": False}
        if c.CHANNELS_LAST not in choices:
            raise ConfigError(
                f"MODEL.INFERENCE.CHANNELS_LAST must be one of {list(choices)}, "
                f"got {c.CHANNELS_LAST!r}"
            )
        return cls(fold_bn=bool(c.FOLD_BN), channels_last=choices[c.CHANNELS_LAST],
                   compile=c.COMPILE)


class InferenceHandle:
    """
    What :func:`prepare_for_inference` applied: ``options``, the counts ``num_fast_heads``,
    ``num_folded`` and ``num_channels_last``, and the names of the ``compiled`` submodules.
    :meth:`undo` reverts it (later calls do nothing); a context manager that undoes on exit.
    """

    def __init__(self, options: InferenceOptions):
        self.options = options
        self.num_fast_heads = 0
        self.num_folded = 0
        self.num_channels_last = 0
        self.compiled: List[str] = []
        self._undo_steps: List[Callable[[], None]] = []

    @property
    def active(self) -> bool:
        return bool(self._undo_steps)

    def undo(self) -> None:
        """Restore the model exactly as it was before :func:`prepare_for_inference`."""
        while self._undo_steps:
            self._undo_steps.pop()()

    def __enter__(self) -> "InferenceHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.undo()


def _batch_norm_affine(norm: nn.Module):
    """(scale, shift) in float64 of an eval-mode batch norm, or None if it cannot be folded."""
    if not isinstance(norm, FrozenBatchNorm2d) and not (
            isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.running_mean is not None):
        return None
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    if norm.weight is not None:  # affine=False: weight and bias are None (1 and 0)
        scale = scale * norm.weight.detach().double()
    shift = -norm.running_mean.double() * scale
    if norm.bias is not None:
        shift = shift + norm.bias.detach().double()
    return scale, shift


def fold_batch_norms(model: nn.Module) -> List[Callable[[], None]]:
    """
    Fold every foldable batch norm of a Detectron2 ``Conv2d`` into its convolution, in place, in
    eval mode; one undo function per convolution (restoring its weight, bias and norm objects).
    """
    undo = []
    for conv in model.modules():
        if not isinstance(conv, Conv2d) or conv.norm is None:
            continue
        affine = _batch_norm_affine(conv.norm)
        if affine is None:
            continue
        scale, shift = affine
        weight, bias, norm = conv.weight, conv.bias, conv.norm
        new_weight = weight.detach().double() * scale.view(-1, 1, 1, 1)
        if bias is not None:
            shift = shift + bias.detach().double() * scale
        conv.weight = nn.Parameter(new_weight.to(weight.dtype), requires_grad=weight.requires_grad)
        conv.bias = nn.Parameter(shift.to(weight.dtype), requires_grad=weight.requires_grad)
        conv.norm = None

        def restore(conv=conv, weight=weight, bias=bias, norm=norm):
            conv.weight, conv.bias, conv.norm = weight, bias, norm  # bias may be None

        undo.append(restore)
    return undo


def _to_channels_last(model: nn.Module) -> List[Callable[[], None]]:
    """Convert 4-d parameters and buffers to channels_last in place; one undo per tensor."""
    undo = []
    tensors = list(model.parameters()) + list(model.buffers())
    for t in tensors:
        if t.dim() != 4 or t.is_contiguous(memory_format=torch.channels_last):
            continue
        original = t.data
        t.data = t.data.contiguous(memory_format=torch.channels_last)

        def restore(t=t, original=original):
            t.data = original

        undo.append(restore)
    return undo


def _compile_children(model: nn.Module, mode: str, backend: str):
    """Replace ``backbone`` / ``sem_seg_head`` by compiled wrappers; (names, undo functions)."""
    names = [n for n in COMPILED_CHILDREN if isinstance(getattr(model, n, None), nn.Module)]
    if not names:
        raise ValueError(
            f"MODEL.INFERENCE.COMPILE={mode!r}: {type(model).__name__} has none of the "
            f"submodules {list(COMPILED_CHILDREN)} that are compiled"
        )
    undo = []
    for name in names:
        original = getattr(model, name)
        setattr(model, name, torch.compile(original, mode=mode, backend=backend))
        undo.append(lambda name=name, original=original: setattr(model, name, original))
    return names, undo


def _refuse_training(module, args):
    if module.training:
        raise RuntimeError(
            f"{type(module).__name__} is prepared for inference (batch norm folded / compiled): "
            "call undo() on the handle of prepare_for_inference before training it"
        )


def prepare_for_inference(model: nn.Module, cfg_or_options=None,
                          device: Optional[torch.device] = None) -> InferenceHandle:
    """
    Apply the inference transforms to ``model`` (in eval mode), in place.

    Args:
        model: e.g. a ``GeneralizedSemanticSegmentor``, or a ``DistributedDataParallel`` of one.
        cfg_or_options: a config (its ``MODEL.INFERENCE`` keys), an :class:`InferenceOptions`,
            or None for the defaults (fold batch norm, channels_last on CUDA, no compilation).
        device: resolves "auto" keys; default: the device of the model's parameters.
    """
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    if model.training:
        raise RuntimeError(
            "prepare_for_inference needs a model in eval mode (call model.eval() first): "
            "batch norm is folded with its running statistics"
        )
    if device is None:
        device = next((t.device for t in model.parameters()), torch.device("cpu"))
    if cfg_or_options is None:
        options = InferenceOptions(channels_last=torch.device(device).type == "cuda")
    elif isinstance(cfg_or_options, InferenceOptions):
        options = cfg_or_options
    else:
        options = InferenceOptions.from_config(cfg_or_options, device)

    handle = InferenceHandle(options)
    steps = handle._undo_steps
    transforms = [(options.fast_subdivision, "num_fast_heads", use_fast_subdivision),
                  (options.fold_bn, "num_folded", fold_batch_norms),
                  (options.channels_last, "num_channels_last", _to_channels_last)]
    try:
        for enabled, counter, transform in transforms:
            if enabled:
                undo = transform(model)
                setattr(handle, counter, len(undo))
                steps.extend(undo)
        if options.compile:
            handle.compiled, compiled = _compile_children(model, options.compile,
                                                          options.compile_backend)
            steps.extend(compiled)
        steps.append(model.register_forward_pre_hook(_refuse_training).remove)
    except Exception:
        handle.undo()
        raise
    logger.info(
        "prepared %s for inference: %d fast PointRend heads, %d batch norms folded, %d tensors "
        "channels_last, compiled: %s", type(model).__name__, handle.num_fast_heads,
        handle.num_folded, handle.num_channels_last, handle.compiled or "none",
    )
    return handle
