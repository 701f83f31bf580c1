"""
Export of a semantic segmentation model: a ``torch.export`` program and an ONNX file (torch's
dynamo-based exporter) of :class:`ExportableSegmentor`, the eager model's whole-image path
(normalise, pad, backbone, head with PointRend's subdivision, crop), batch, height and width
dynamic. Sliding windows and test-time augmentation are Python loops around that path: export
refuses a model that has them on rather than export something that predicts differently.
Load a ``.pt2`` with :func:`load_exported_program`, not ``torch.export.load``, which runs the
code of a crafted archive; the ONNX file (a protobuf of operators and tensors) has no such path.
"""
import io
import json
import logging
import re
import zipfile
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..files import atomic_write

__all__ = ["ExportableSegmentor", "ExportError", "UnsafeProgramError", "check_size_range",
           "compare_logits", "dynamic_shapes", "export_onnx", "export_program",
           "load_exported_program", "save_exported_program"]

class ExportError(ValueError):
    """A model or setting that cannot be exported, with what to change."""


class UnsafeProgramError(ValueError):
    """A ``.pt2`` archive that torch would unpickle objects from, or run native code of, to load
    it; the message names the file and the member."""


class ExportableSegmentor(nn.Module):
    """
    A tensor-in, tensor-out view of a :class:`GeneralizedSemanticSegmentor` in eval mode:
    ``forward(images)`` maps (B, 3, H, W) float32 images in ``INPUT.FORMAT``, 0-255, to the
    (B, K, H, W) float32 logits of the eager model (before resizing to an output size).
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


def dynamic_shapes(min_size: int, max_size: int):
    """``dynamic_shapes`` for :class:`ExportableSegmentor`: batch in [1, 1024], height and width
    in [min, max]."""
    return ({0: torch.export.Dim("batch", min=1, max=1024),
             2: torch.export.Dim("height", min=min_size, max=max_size),
             3: torch.export.Dim("width", min=min_size, max=max_size)},)


def check_size_range(min_size: int, max_size: int, stride: int) -> None:
    """
    Raise :class:`ExportError` unless ``stride <= min_size <= max_size`` (pixels; ``stride``: the
    model's ``size_divisibility``): an input smaller than one stride pads to one coarse cell, a
    size the exported graph's symbolic shapes cannot share with the others.
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


def export_program(model: nn.Module, example: torch.Tensor, min_size: int = 32,
                   max_size: int = 4096):
    """
    ``torch.export`` program of ``model`` (a :class:`GeneralizedSemanticSegmentor` in eval mode,
    e.g. after :func:`prepare_for_inference`) from (B, 3, H, W) float32 ``example`` images,
    accepting heights and widths in [min_size, max_size]: ``program.module()(images)`` ->
    (B, K, H, W) logits.
    """
    wrapper = ExportableSegmentor(model)
    check_size_range(min_size, max_size, model.size_divisibility)
    if example.ndim != 4 or example.shape[1] != 3:
        raise ExportError(f"the example input must be (B, 3, H, W), got {tuple(example.shape)}")
    if min(example.shape[-2:]) < min_size:
        raise ExportError(f"the example input {tuple(example.shape[-2:])} is smaller than the "
                          f"minimum size {min_size}")
    if example.shape[0] == 1:
        # traced with one image, torch.export would specialise the batch to 1
        example = torch.cat([example, example])
    # With autograd on (torch.export.load gives parameters that require grad) the graph holds no
    # in-place ``out=`` kernels, which refuse autograd: it runs with or without torch.no_grad().
    with torch.enable_grad():
        return torch.export.export(wrapper, (example,),
                                   dynamic_shapes=dynamic_shapes(min_size, max_size))


def export_onnx(model: nn.Module, example: torch.Tensor, path: str, min_size: int = 32,
                max_size: int = 4096, program=None) -> str:
    """
    Write ``path``, the ONNX file of ``model`` (``torch.onnx.export(dynamo=True)``; needs ``onnx``
    and ``onnxscript``): input ``images`` (B, 3, H, W), output ``sem_seg`` (B, K, H, W), float32,
    axes ``batch``, ``height``, ``width`` dynamic. ``program``: :func:`export_program`'s for this
    model and sizes if already made, translated as it is (else made here). Returns ``path``.
    """
    if program is None:
        program = export_program(model, example, min_size, max_size)
    # The program carries its size ranges; string names only rename its symbolic axes.
    names = {0: "batch", 2: "height", 3: "width"}
    # onnx_ir warns "Attribute type is ambiguous ..." about torch's exporter, not about us
    log = logging.getLogger("onnx_ir._convenience")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with torch.no_grad():
            torch.onnx.export(program, (), path, dynamo=True, input_names=["images"],
                              output_names=["sem_seg"], external_data=False,
                              dynamic_shapes=(names,))
    finally:
        log.setLevel(level)
    return path


def save_exported_program(program, path: str) -> str:
    """
    ``torch.export.save(program, path)``, written whole or not at all
    (:func:`pointrend_seg.files.atomic_write`); returns ``path``. The archive is made in memory:
    torch's zip writer aborts the process on a full disk instead of raising ``OSError``.
    """
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))
    return path


def compare_logits(got: torch.Tensor, expected: torch.Tensor) -> Tuple[float, float]:
    """(max |got - expected|, share of pixels whose argmax agrees) of two (B, K, H, W) logits."""
    if got.shape != expected.shape:
        raise ExportError(f"exported output {tuple(got.shape)} != eager {tuple(expected.shape)}")
    diff = (got.float() - expected.float()).abs().max().item()
    agree = (got.argmax(1) == expected.argmax(1)).float().mean().item()
    return diff, agree


# The node targets besides torch.ops.* that torch.export's deserializer resolves without walking
# attributes (its _SYM_OPS); any other "torch.x.y" is looked up attribute by attribute
# (torch.os.system resolves), so it is refused.
_SYMBOLIC_TARGET = re.compile(
    r"^(_operator\.(getitem|add|sub|mul|truediv|floordiv|mod|pow|neg|pos|eq|ne|lt|le|gt|ge|and_|"
    r"or_|not_|lshift|rshift|abs)|math\.(trunc|ceil|floor|sqrt)|torch\.sym_[a-z_]+)$")


def load_exported_program(path: str):
    """
    ``torch.export.load(path)`` for a ``.pt2`` archive that loads as data only; otherwise
    :class:`UnsafeProgramError` naming the file and the member, before torch reads anything.

    Refused, as torch would run code of them: members under ``data/aotinductor/`` (native
    libraries); weights or constants marked ``use_pickle``, custom / opaque object constants; a
    pickle (example inputs, legacy weight / constant files) that ``torch.load(weights_only=True)``
    refuses (torch retries it with ``weights_only=False``); an archive without ``archive_version``,
    with members of torch's older ``.pt2`` format or a member name twice; graph nodes whose
    target is neither an operator nor symbolic-size arithmetic. The bytes checked are the bytes
    loaded.
    """
    from torch.export.pt2_archive import PT2ArchiveReader
    from torch.export.pt2_archive import constants as pt2

    with open(path, "rb") as f:
        data = f.read()

    def refuse(member, why):
        raise UnsafeProgramError(
            f"refused to load {path}: {member} {why}, so loading it could run code from the "
            "file. Export the model again with tools/export_model.py, or use the ONNX file")

    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        reader = PT2ArchiveReader(io.BytesIO(data))
        records = reader.get_file_names()
    except Exception as e:  # not a zip, or not torch's archive layout
        raise UnsafeProgramError(f"{path} is not a torch.export archive: {type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if len(set(names)) != len(names):
        refuse("the archive", "holds a member name twice")
    if pt2.ARCHIVE_VERSION_PATH not in records or any(
            n.split("/")[-1] == "version" or n.split("/")[-1].startswith("serialized_")
            for n in names if n.count("/") <= 1):
        refuse("the archive", f"is not in the {pt2.ARCHIVE_FORMAT_VALUE} format of this torch "
                              "(torch falls back to its older format)")
    for name in records:
        if name.startswith(pt2.AOTINDUCTOR_DIR):
            refuse(name, "is AOTInductor code (a native library torch would load)")
    models = [n[len(pt2.MODELS_DIR):-len(".json")] for n in records
              if n.startswith(pt2.MODELS_DIR) and n.endswith(".json")]
    for model in models:
        for directory, config in ((pt2.WEIGHTS_DIR, pt2.WEIGHTS_CONFIG_FILENAME_FORMAT),
                                  (pt2.CONSTANTS_DIR, pt2.CONSTANTS_CONFIG_FILENAME_FORMAT)):
            legacy = f"{directory}{model}.pt"
            if legacy in records:
                _check_weights_only(reader.read_bytes(legacy), legacy, refuse)
            config = config.format(model)
            if config not in records:
                continue
            for fqn, meta in json.loads(reader.read_string(config)).get("config", {}).items():
                member = f"{config} ({fqn}: {meta.get('path_name')})"
                if meta.get("use_pickle"):
                    refuse(member, "is marked use_pickle (torch.export.load unpickles it)")
                if str(meta.get("path_name", "")).startswith(
                        (pt2.CUSTOM_OBJ_FILENAME_PREFIX, pt2.OPAQUE_OBJ_FILENAME_PREFIX)):
                    refuse(member, "is a custom / opaque object constant (pickled)")
        inputs = pt2.SAMPLE_INPUTS_FILENAME_FORMAT.format(model)
        if inputs in records:
            _check_weights_only(reader.read_bytes(inputs), inputs, refuse)
        graph = json.loads(reader.read_string(f"{pt2.MODELS_DIR}{model}.json"))
        for target in _node_targets(graph):
            if not (target.startswith("torch.ops.") or _SYMBOLIC_TARGET.match(target)):
                refuse(f"{pt2.MODELS_DIR}{model}.json", f"calls {target!r}, which is not an "
                       "operator (torch looks it up as a Python function the program calls)")
    return torch.export.load(io.BytesIO(data))


def _check_weights_only(payload: bytes, member: str, refuse) -> None:
    try:
        torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:
        lines = [line.strip() for line in str(e).splitlines() if "GLOBAL" in line
                 or "Unsupported" in line] or [type(e).__name__]
        refuse(member, f"is a pickle that torch.load(weights_only=True) refuses ({lines[0]}), "
                       "which torch retries with weights_only=False")


def _node_targets(tree):
    """Every graph node's ``target`` in a serialized program (nested graphs included)."""
    if isinstance(tree, dict):
        if isinstance(tree.get("target"), str) and "inputs" in tree and "outputs" in tree:
            yield tree["target"]
        for value in tree.values():
            yield from _node_targets(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _node_targets(value)
