"""
Export of a semantic segmentation model: a ``torch.export`` program and an ONNX file (torch's
dynamo-based exporter) of the whole model, subdivision included.

What the exported graph computes is :class:`ExportableSegmentor`: one batch of images of one size
in, logits at that size out, exactly the eager model's whole-image path (normalise, pad to
``size_divisibility``, backbone, head with PointRend's subdivision, crop). Batch, height and width
are dynamic; the number of subdivision points and steps, the classes and the weights are the only
static things. Sliding-window inference and test-time augmentation are Python loops over windows
and scales around that path and are not part of the graph (export refuses a model that has them
on, rather than exporting something that predicts differently).
"""
import contextlib
import logging
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ExportableSegmentor", "ExportError", "check_size_range", "compare_logits",
           "dynamic_shapes", "export_onnx", "export_program"]

logger = logging.getLogger(__name__)


class ExportError(ValueError):
    """A model or setting that cannot be exported, with what to change."""


class ExportableSegmentor(nn.Module):
    """
    A tensor-in, tensor-out view of a :class:`GeneralizedSemanticSegmentor` in eval mode.

    ``forward(images)``: (B, 3, H, W) float32 images in the model's ``INPUT.FORMAT`` (e.g. RGB),
    0-255, all of one size -> (B, K, H, W) float32 logits (``sem_seg`` of the eager model for an
    image of that size, before any resizing to a requested output size). The images of a batch
    are padded together, like one group of equal-sized images in the eager model.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        for attr in ("backbone", "sem_seg_head", "normalize", "size_divisibility"):
            if not hasattr(model, attr):
                raise ExportError(
                    f"cannot export {type(model).__name__}: export needs pointrend_seg's "
                    f"GeneralizedSemanticSegmentor (MODEL.META_ARCHITECTURE), which has {attr!r}"
                )
        if getattr(model, "sliding_window", None) is not None:
            raise ExportError("cannot export with sliding-window inference on: set "
                              "TEST.SLIDING_WINDOW.ENABLED False (export the whole-image model "
                              "and slide the windows around it)")
        if getattr(model, "test_augmentation", None) is not None:
            raise ExportError("cannot export with test-time augmentation on: set "
                              "TEST.AUG.ENABLED False")
        if model.training:
            raise ExportError("export needs a model in eval mode (call model.eval() first)")
        self.model = model
        self.eval()  # the wrapper too: exporters warn about a module in training mode

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        height, width = images.shape[-2:]
        x = m.normalize(images)  # (3, 1, 1) mean and std broadcast over the batch
        d = m.size_divisibility
        if d > 1:
            x = F.pad(x, (0, (-width) % d, 0, (-height) % d))
        logits, _ = m.sem_seg_head(m.backbone(x))
        # Crop with index_select, not slicing: slicing a symbolic size makes torch.export ask for a
        # bound (H <= padded H) that its solver cannot prove for every H.
        rows = torch.arange(height, device=logits.device)
        cols = torch.arange(width, device=logits.device)
        return logits.index_select(2, rows).index_select(3, cols)


def dynamic_shapes(min_size: int, max_size: int, dynamic_batch: bool = True):
    """``dynamic_shapes`` for :class:`ExportableSegmentor`: height and width in [min, max]."""
    dims = {2: torch.export.Dim("height", min=min_size, max=max_size),
            3: torch.export.Dim("width", min=min_size, max=max_size)}
    if dynamic_batch:
        dims[0] = torch.export.Dim("batch", min=1, max=1024)
    return (dims,)


def check_size_range(min_size: int, max_size: int, stride: int) -> None:
    """
    Raise :class:`ExportError` unless ``stride <= min_size <= max_size`` (pixels; ``stride``: the
    model's ``size_divisibility``, the multiple inputs are padded to). Smaller inputs than one
    stride make the padded canvas one coarse cell, a size the symbolic shapes of the exported
    graph cannot share with the others.
    """
    if not isinstance(min_size, int) or not isinstance(max_size, int):
        raise ExportError(f"--min-size / --max-size must be integers, got {min_size!r}, "
                          f"{max_size!r}")
    if min_size < max(stride, 2):
        raise ExportError(
            f"--min-size {min_size} is smaller than the model's output stride {stride} (inputs "
            f"are padded to a multiple of it): the exported graph accepts heights and widths "
            f"from {max(stride, 2)} on; use --min-size {max(stride, 2)} or more")
    if max_size < min_size:
        raise ExportError(f"--max-size {max_size} is smaller than --min-size {min_size}")


def _check_example(example: torch.Tensor, min_size: int, dynamic_batch: bool) -> torch.Tensor:
    """The example to trace with: a batch of one is doubled when the batch is dynamic (traced
    with one image, torch.export specialises the batch to 1)."""
    if example.ndim != 4 or example.shape[1] != 3:
        raise ExportError(f"the example input must be (B, 3, H, W), got {tuple(example.shape)}")
    if min(example.shape[-2:]) < min_size:
        raise ExportError(f"the example input {tuple(example.shape[-2:])} is smaller than the "
                          f"minimum size {min_size}")
    if dynamic_batch and example.shape[0] == 1:
        example = torch.cat([example, example])
    return example


def export_program(model: nn.Module, example: torch.Tensor, min_size: int = 32,
                   max_size: int = 4096, dynamic_batch: bool = True):
    """
    ``torch.export`` program of ``model`` (a :class:`GeneralizedSemanticSegmentor` in eval mode,
    e.g. after :func:`prepare_for_inference`) with dynamic batch, height and width.

    Args:
        example: (B, 3, H, W) float32 example images (values only guide tracing).
        min_size, max_size: the range of heights and widths the program accepts (pixels).

    Returns:
        torch.export.ExportedProgram: ``program.module()(images)`` -> (B, K, H, W) logits.
    """
    wrapper = ExportableSegmentor(model)
    check_size_range(min_size, max_size, model.size_divisibility)
    example = _check_example(example, min_size, dynamic_batch)
    # Traced with autograd on (as torch.export.load gives the parameters back, requiring grad):
    # the traced graph then holds no in-place ``out=`` kernels, which refuse autograd, and the
    # program runs with or without torch.no_grad().
    with torch.enable_grad():
        return torch.export.export(wrapper, (example,),
                                   dynamic_shapes=dynamic_shapes(min_size, max_size, dynamic_batch))


def export_onnx(model: nn.Module, example: torch.Tensor, path: str, min_size: int = 32,
                max_size: int = 4096, dynamic_batch: bool = True,
                opset_version: Optional[int] = None, program=None) -> str:
    """
    ONNX file of ``model`` by torch's dynamo-based exporter (``torch.onnx.export(dynamo=True)``),
    input ``images`` (B, 3, H, W) float32 and output ``sem_seg`` (B, K, H, W) float32, batch,
    height and width dynamic (axes named ``batch``, ``height``, ``width``). Needs the ``onnx``
    and ``onnxscript`` packages.

    Args:
        program: the ``torch.export.ExportedProgram`` of :func:`export_program` for this
            ``model`` and sizes, if already made (as by ``tools/export_model.py``): translated as
            it is, so both files hold the same graph. Without it, it is made here.

    Returns:
        str: ``path``.
    """
    if program is None:
        program = export_program(model, example, min_size, max_size, dynamic_batch)
    kwargs = {} if opset_version is None else {"opset_version": opset_version}
    # The program carries its size ranges; string names only rename its symbolic axes.
    names = {0: "batch", 2: "height", 3: "width"} if dynamic_batch else {2: "height", 3: "width"}
    with torch.no_grad(), _quiet_logger("onnx_ir._convenience"):
        # onnx_ir logs "Attribute type is ambiguous because it is an empty sequence ...
        # Defaulted to INTS" for empty attribute lists of torch's exporter: right, and not ours.
        torch.onnx.export(program, (), path, dynamo=True, input_names=["images"],
                          output_names=["sem_seg"], external_data=False, dynamic_shapes=(names,),
                          **kwargs)
    return path


@contextlib.contextmanager
def _quiet_logger(name: str):
    """Only errors from the logger ``name`` while active."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def compare_logits(got: torch.Tensor, expected: torch.Tensor) -> Tuple[float, float]:
    """(max |got - expected|, share of pixels whose argmax agrees) of two (B, K, H, W) logits."""
    if got.shape != expected.shape:
        raise ExportError(f"exported output {tuple(got.shape)} != eager {tuple(expected.shape)}")
    diff = (got.float() - expected.float()).abs().max().item()
    agree = (got.argmax(1) == expected.argmax(1)).float().mean().item()
    return diff, agree

