"""
Speed benchmark of our models against Detectron2's reference projects, side by side in one
process (the library of ``tools/benchmark.py``; not part of the installed package).

Models (random weights, ``MODEL.WEIGHTS`` empty, 19 classes, built after ``torch.manual_seed``):

* ``ours_pointrend``: DeepLabV3-R103-OS16 + PointRend (``configs/cityscapes/..._os16_pointrend.yaml``);
* ``ours_deeplabv3``: the same without PointRend (``..._os16.yaml``, bilinear upsampling);
* ``ref_deeplabv3``: Detectron2's DeepLab project, ``SemanticSegmentor`` + ``DeepLabV3Head`` on
  ``build_resnet_deeplab_backbone`` (R-103, deeplab stem, OS16, multi-grid 1-2-4), with
  ``INPUT.CROP.ENABLED False`` so that its ASPP pools globally (any input size);
* ``ref_pointrend_fpn``: Detectron2's PointRend project, ``SemanticSegmentor`` +
  ``PointRendSemSegHead`` (``SemSegFPNHead`` coarse head) on R-101-FPN, as its Semantic FPN
  Cityscapes config;
* ``heads``: our ``PointRendSegHead.inference`` and the reference ``PointRendSemSegHead``
  subdivision on identical coarse logits and fine features, with the point head's weights copied
  from ours into the reference's, same number of points and steps (the point machinery alone).

Ratios compare ours with its reference (``REFERENCE_OF``) under the same mode and setting:
our time per image divided by the reference's (below 1: ours is faster).

Measurements: inference (``eval()``, ``torch.inference_mode``) and training steps (forward,
backward, SGD step) are timed per iteration with ``time.perf_counter`` after ``warmup``
untimed iterations, with ``torch.cuda.synchronize`` around each on CUDA; the median over
``repeats`` iterations is reported. Inputs are created on the device beforehand (no host to
device copy is timed). A failure of one model in one setting (AMP dtype errors, out of memory)
becomes a row with status ``"fails: <error>"``; the other rows are still measured.
"""
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

__all__ = [
    "AMP_MODES",
    "HEADS",
    "HEAD_NAMES",
    "MODEL_NAMES",
    "REFERENCE_OF",
    "ModelSpec",
    "autocast_context",
    "build_head_pair",
    "build_ours",
    "build_ref_deeplabv3",
    "build_ref_pointrend_fpn",
    "default_model_specs",
    "describe_failure",
    "format_markdown",
    "hardware_info",
    "head_outputs",
    "make_inputs",
    "measure_inference",
    "measure_training",
    "run_benchmark",
    "run_head_comparison",
    "run_model_benchmarks",
    "summarize_timings",
    "time_fn",
    "write_report",
]

# Shipped configs (pointrend_seg.model_zoo), or paths to YAML files.
OURS_POINTREND_CONFIG = "cityscapes/deeplabv3_R103_os16_pointrend.yaml"
OURS_DEEPLAB_CONFIG = "cityscapes/deeplabv3_R103_os16.yaml"

MODEL_NAMES = ("ours_pointrend", "ours_deeplabv3", "ref_deeplabv3", "ref_pointrend_fpn")
HEADS = "heads"  # the name of the head-level comparison in ``--models``
HEAD_NAMES = ("head_ours", "head_ref")
# ours -> the reference it is compared with
REFERENCE_OF = {
    "ours_pointrend": "ref_pointrend_fpn",
    "ours_deeplabv3": "ref_deeplabv3",
    "head_ours": "head_ref",
}
AMP_MODES = ("none", "bf16", "fp16")
NUM_CLASSES = 19
IGNORE_VALUE = 255
# Input sizes must be multiples of this: the FPN reference pads to 32, the DeepLab reference
# does not pad at all and needs a multiple of its stride (16).
SIZE_DIVISIBILITY = 32

DESCRIPTIONS = {
    "ours_pointrend": "ours: GeneralizedSemanticSegmentor, DeepLabV3 R-103 OS16 + PointRendSegHead",
    "ours_deeplabv3": "ours: GeneralizedSemanticSegmentor, DeepLabV3 R-103 OS16 + BilinearSegHead "
                      "(bilinear)",
    "ref_deeplabv3": "detectron2 DeepLab project: SemanticSegmentor + DeepLabV3Head, "
                     "build_resnet_deeplab_backbone R-103 OS16",
    "ref_pointrend_fpn": "detectron2 PointRend project: SemanticSegmentor + PointRendSemSegHead "
                         "(SemSegFPNHead), R-101-FPN",
    "head_ours": "ours: PointRendSegHead.inference (subdivision only)",
    "head_ref": "detectron2 PointRendSemSegHead subdivision (same coarse logits, features, "
                "point-head weights)",
}

# Narrow R-50 variants, for smoke tests only (``narrow=True``): never for reported numbers.
_NARROW_BACKBONE = [
    "MODEL.RESNETS.DEPTH", 50, "MODEL.RESNETS.STEM_OUT_CHANNELS", 32,
    "MODEL.RESNETS.WIDTH_PER_GROUP", 16, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
]
NARROW_OPTS = {
    "ours_pointrend": _NARROW_BACKBONE + [
        "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", 64, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 64,
        "MODEL.POINT_HEAD.FC_DIM", 64,
    ],
    "ours_deeplabv3": _NARROW_BACKBONE + [
        "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", 64, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 64,
    ],
    "ref_deeplabv3": _NARROW_BACKBONE + [
        "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", 64, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 64,
    ],
    "ref_pointrend_fpn": _NARROW_BACKBONE + [
        "MODEL.FPN.OUT_CHANNELS", 64, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 64,
        "MODEL.POINT_HEAD.FC_DIM", 64,
    ],
}


# ---------------------------------------------------------------------------------------------
# timing primitives
# ---------------------------------------------------------------------------------------------


def time_fn(fn: Callable[[], object], *, warmup: int, repeats: int,
            sync: Optional[Callable[[], None]] = None, clock=time.perf_counter) -> List[float]:
    """
    Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed.

    Args:
        sync: called after every timed call (and once after the warm-ups) before reading the
            clock, e.g. ``torch.cuda.synchronize``.
        clock: returns seconds.

    Returns:
        the ``repeats`` durations in seconds.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        if sync is not None:
            sync()
        times.append(clock() - start)
    return times


def summarize_timings(seconds: Sequence[float], batch: int) -> Dict:
    """
    Median of per-iteration times of a batch of ``batch`` images.

    Returns:
        dict: ``median_ms`` (per iteration), ``ms_per_img``, ``images_per_s``, ``times_ms``
        (all iterations, in order).
    """
    if not seconds:
        raise ValueError("no timings")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    median_s = statistics.median(seconds)
    return {
        "median_ms": median_s * 1e3,
        "ms_per_img": median_s * 1e3 / batch,
        "images_per_s": batch / median_s if median_s > 0 else math.inf,
        "times_ms": [s * 1e3 for s in seconds],
    }


def autocast_context(device: str, amp: str):
    """``torch.autocast`` for ``amp`` "bf16" / "fp16" on ``device``'s type; a no-op for "none"."""
    if amp == "none":
        return contextlib.nullcontext()
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if amp not in dtypes:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    return torch.autocast(device_type=torch.device(device).type, dtype=dtypes[amp])


def describe_failure(exc: BaseException, max_chars: int = 300) -> str:
    """``"fails: <ExceptionType>: <first line of the message>"``, shortened."""
    lines = str(exc).strip().splitlines()
    message = lines[0] if lines else ""
    if len(message) > max_chars:
        message = message[: max_chars - 3] + "..."
    return f"fails: {type(exc).__name__}: {message}" if message else f"fails: {type(exc).__name__}"


def _is_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def _sync_for(device):
    if _is_cuda(device):
        dev = torch.device(device)
        return lambda: torch.cuda.synchronize(dev)
    return None


def _free_memory(device):
    gc.collect()
    if _is_cuda(device):
        torch.cuda.empty_cache()


def _timed_with_memory(device, run: Callable[[], List[float]]):
    """(times, peak MiB or None): CUDA peak allocated memory during ``run``."""
    if _is_cuda(device):
        _free_memory(device)
        torch.cuda.reset_peak_memory_stats(torch.device(device))
    times = run()
    peak = None
    if _is_cuda(device):
        peak = torch.cuda.max_memory_allocated(torch.device(device)) / 2 ** 20
    return times, peak


def hardware_info(device: str) -> str:
    """The GPU name on CUDA, else the CPU model from /proc/cpuinfo (with the core count)."""
    if _is_cuda(device):
        return torch.cuda.get_device_name(torch.device(device))
    name = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    return f"{name} ({os.cpu_count()} logical cores)"


# ---------------------------------------------------------------------------------------------
# inputs and measurements
# ---------------------------------------------------------------------------------------------


def make_inputs(batch: int, size, *, device, seed: int = 0, num_classes: int = NUM_CLASSES,
                with_labels: bool = False, ignore_fraction: float = 0.05) -> List[Dict]:
    """
    Detectron2-style inputs: ``batch`` dicts with ``image`` (3, H, W) float32 in [0, 255] and,
    with ``with_labels``, ``sem_seg`` (H, W) int64 in [0, num_classes) with a fraction of
    ``IGNORE_VALUE``. Deterministic in ``seed``; created on ``device``.
    """
    h, w = size
    gen = torch.Generator().manual_seed(seed)
    inputs = []
    for _ in range(batch):
        x = {"image": (torch.rand(3, h, w, generator=gen) * 255).to(device)}
        if with_labels:
            labels = torch.randint(0, num_classes, (h, w), generator=gen)
            labels[torch.rand(h, w, generator=gen) < ignore_fraction] = IGNORE_VALUE
            x["sem_seg"] = labels.to(device)
        inputs.append(x)
    return inputs


def measure_inference(model: nn.Module, inputs, *, device, amp="none", warmup=2,
                      repeats=5) -> Dict:
    """
    Time ``model(inputs)`` in eval mode under ``torch.inference_mode`` (and autocast).

    Returns:
        :func:`summarize_timings` of the batch, plus ``peak_mem_mb`` (CUDA, else None).
    """
    model.eval()

    def step():
        with torch.inference_mode(), autocast_context(device, amp):
            return model(inputs)

    times, peak = _timed_with_memory(
        device, lambda: time_fn(step, warmup=warmup, repeats=repeats, sync=_sync_for(device))
    )
    return dict(summarize_timings(times, len(inputs)), peak_mem_mb=peak)


def measure_training(model: nn.Module, inputs, *, device, amp="none", warmup=2, repeats=5,
                     lr=1e-4) -> Dict:
    """
    Time training iterations: forward (autocast) returning a loss dict, backward of the sum
    (with a ``GradScaler`` for fp16), SGD step (momentum 0.9, weight decay 1e-4).

    Returns:
        :func:`summarize_timings` of the batch, plus ``peak_mem_mb`` (CUDA, else None).
    """
    from detectron2.utils.events import EventStorage

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=(amp == "fp16"))

    def step():
        with autocast_context(device, amp):
            losses = model(inputs)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def run():
        with EventStorage(0):
            return time_fn(step, warmup=warmup, repeats=repeats, sync=_sync_for(device))

    try:
        times, peak = _timed_with_memory(device, run)
    finally:
        optimizer.zero_grad(set_to_none=True)
        del optimizer
    return dict(summarize_timings(times, len(inputs)), peak_mem_mb=peak)


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------


@dataclass
class ModelSpec:
    """A model of the benchmark: ``build(device)`` returns it on ``device`` (random weights)."""

    name: str
    build: Callable[[str], nn.Module]
    description: str = ""
    reference: Optional[str] = None
    info: Dict = field(default_factory=dict)


def _build_from_cfg(cfg, seed):
    from detectron2.modeling import build_model

    torch.manual_seed(seed)
    model = build_model(cfg)
    model.eval()
    return model


def resolve_config_file(config_file: str) -> str:
    """A YAML path as given, or else a config shipped with the package
    (``pointrend_seg.model_zoo``, e.g. "cityscapes/deeplabv3_R103_os16.yaml")."""
    from pointrend_seg import model_zoo

    return config_file if os.path.isfile(config_file) else model_zoo.get_config_file(config_file)


def _ours_cfg(config_file, device, opts=(), num_classes=NUM_CLASSES):
    import pointrend_seg  # noqa: F401  (registers our components)
    from pointrend_seg.config import build_config

    base = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", str(device),
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", num_classes]
    return build_config(resolve_config_file(config_file), base + list(opts))


def build_ours(config_file: str, device: str, opts=(), seed: int = 0,
               num_classes: int = NUM_CLASSES) -> nn.Module:
    """Our model from a YAML config + ``KEY VALUE`` overrides, random weights, on ``device``."""
    return _build_from_cfg(_ours_cfg(config_file, device, opts, num_classes), seed)


def _merge(cfg, pairs):
    """Merge a flat ``[KEY, VALUE, ...]`` list; values are strings (parsed) or Python objects."""
    cfg.merge_from_list(list(pairs))
    return cfg


def ref_deeplabv3_cfg(device: str, opts=(), num_classes: int = NUM_CLASSES):
    """Detectron2 DeepLab project's Cityscapes DeepLabV3-R103-OS16 (mg124) config, random weights."""
    from detectron2.config import get_cfg
    from detectron2.projects import deeplab  # noqa: F401  (registers backbone and heads)
    from detectron2.projects.deeplab import add_deeplab_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    return _merge(cfg, [
        "MODEL.META_ARCHITECTURE", "SemanticSegmentor",
        "MODEL.WEIGHTS", "",
        "MODEL.DEVICE", str(device),
        "MODEL.PIXEL_MEAN", [123.675, 116.280, 103.530],
        "MODEL.PIXEL_STD", [58.395, 57.120, 57.375],
        "MODEL.BACKBONE.NAME", "build_resnet_deeplab_backbone",
        "MODEL.BACKBONE.FREEZE_AT", 0,
        "MODEL.RESNETS.DEPTH", 101,
        "MODEL.RESNETS.NORM", "SyncBN",
        "MODEL.RESNETS.OUT_FEATURES", ["res5"],
        "MODEL.RESNETS.RES5_DILATION", 2,
        "MODEL.RESNETS.RES5_MULTI_GRID", [1, 2, 4],
        "MODEL.RESNETS.STEM_TYPE", "deeplab",
        "MODEL.RESNETS.STEM_OUT_CHANNELS", 128,
        "MODEL.RESNETS.STRIDE_IN_1X1", False,
        "MODEL.SEM_SEG_HEAD.NAME", "DeepLabV3Head",
        "MODEL.SEM_SEG_HEAD.IN_FEATURES", ["res5"],
        "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", 256,
        "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS", [6, 12, 18],
        "MODEL.SEM_SEG_HEAD.ASPP_DROPOUT", 0.1,
        "MODEL.SEM_SEG_HEAD.CONVS_DIM", 256,
        "MODEL.SEM_SEG_HEAD.COMMON_STRIDE", 16,
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", num_classes,
        "MODEL.SEM_SEG_HEAD.LOSS_TYPE", "hard_pixel_mining",
        "MODEL.SEM_SEG_HEAD.NORM", "SyncBN",
        # Global image pooling in ASPP (a crop-size pool kernel would fix the input size).
        "INPUT.CROP.ENABLED", False,
    ] + list(opts))


def build_ref_deeplabv3(device: str, opts=(), seed: int = 0,
                        num_classes: int = NUM_CLASSES) -> nn.Module:
    return _build_from_cfg(ref_deeplabv3_cfg(device, opts, num_classes), seed)


def ref_pointrend_fpn_cfg(device: str, opts=(), num_classes: int = NUM_CLASSES):
    """Detectron2 PointRend project's Semantic FPN R-101 Cityscapes config, random weights."""
    from detectron2.config import get_cfg
    from detectron2.projects import point_rend  # noqa: F401  (registers the heads)
    from detectron2.projects.point_rend import add_pointrend_config

    cfg = get_cfg()
    add_pointrend_config(cfg)
    return _merge(cfg, [
        "MODEL.META_ARCHITECTURE", "SemanticSegmentor",
        "MODEL.WEIGHTS", "",
        "MODEL.DEVICE", str(device),
        "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",
        "MODEL.BACKBONE.FREEZE_AT", 0,
        "MODEL.RESNETS.DEPTH", 101,
        "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"],
        "MODEL.FPN.IN_FEATURES", ["res2", "res3", "res4", "res5"],
        "MODEL.SEM_SEG_HEAD.NAME", "PointRendSemSegHead",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", num_classes,
        "MODEL.POINT_HEAD.NUM_CLASSES", num_classes,
        "MODEL.POINT_HEAD.FC_DIM", 256,
        "MODEL.POINT_HEAD.NUM_FC", 3,
        "MODEL.POINT_HEAD.IN_FEATURES", ["p2"],
        "MODEL.POINT_HEAD.TRAIN_NUM_POINTS", 2048,
        "MODEL.POINT_HEAD.SUBDIVISION_STEPS", 2,
        "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", 8192,
        "MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME", "SemSegFPNHead",
    ] + list(opts))


def build_ref_pointrend_fpn(device: str, opts=(), seed: int = 0,
                            num_classes: int = NUM_CLASSES) -> nn.Module:
    return _build_from_cfg(ref_pointrend_fpn_cfg(device, opts, num_classes), seed)


def default_model_specs(names: Sequence[str] = MODEL_NAMES, *, seed: int = 0, narrow=False,
                        ours_config: str = OURS_POINTREND_CONFIG,
                        ours_baseline_config: str = OURS_DEEPLAB_CONFIG,
                        extra_opts: Optional[Dict[str, Sequence]] = None) -> List[ModelSpec]:
    """
    The benchmark's models, in ``names`` order.

    Args:
        narrow: narrow R-50 variants of every model (``NARROW_OPTS``), for smoke tests.
        extra_opts: per model name, ``KEY VALUE`` overrides applied last.
    """
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {list(MODEL_NAMES)}")
    extra_opts = extra_opts or {}

    def opts_of(name):
        return list(NARROW_OPTS[name] if narrow else []) + list(extra_opts.get(name, []))

    builders = {
        "ours_pointrend": lambda d: build_ours(ours_config, d, opts_of("ours_pointrend"), seed),
        "ours_deeplabv3": lambda d: build_ours(
            ours_baseline_config, d, opts_of("ours_deeplabv3"), seed
        ),
        "ref_deeplabv3": lambda d: build_ref_deeplabv3(d, opts_of("ref_deeplabv3"), seed),
        "ref_pointrend_fpn": lambda d: build_ref_pointrend_fpn(
            d, opts_of("ref_pointrend_fpn"), seed
        ),
    }
    config_files = {"ours_pointrend": ours_config, "ours_deeplabv3": ours_baseline_config}
    specs = []
    for name in names:
        info = {"opts": [str(v) for v in opts_of(name)], "narrow": bool(narrow)}
        if name in config_files:
            info["config_file"] = config_files[name]
        description = DESCRIPTIONS[name] + (" [narrow R-50 variant]" if narrow else "")
        specs.append(ModelSpec(name, builders[name], description, REFERENCE_OF.get(name), info))
    return specs


# ---------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------


def _setting_label(batch, size, amp, channels_last):
    label = f"b{batch} {size[0]}x{size[1]} {'fp32' if amp == 'none' else amp}"
    return label + (" channels-last" if channels_last else "")


def _row(name, mode, *, batch, size, amp, channels_last, description="", reference=None):
    return {
        "model": name, "mode": mode, "description": description,
        "setting": _setting_label(batch, size, amp, channels_last),
        "batch": batch, "size": list(size), "amp": amp, "channels_last": bool(channels_last),
        "status": "ok", "median_ms": None, "ms_per_img": None, "images_per_s": None,
        "peak_mem_mb": None, "times_ms": None, "reference": reference, "ratio_vs_reference": None,
    }


def _fill(row, measurement):
    row.update(measurement)
    return row


def _fail(row, exc, device):
    row["status"] = describe_failure(exc)
    _free_memory(device)
    return row


def run_model_benchmarks(specs: Sequence[ModelSpec], *, device="cpu", size=(256, 512), batch=1,
                         amps=("none",), channels_last=False, repeats=5, warmup=2, train=False,
                         seed=0, num_classes=NUM_CLASSES, log=None) -> List[Dict]:
    """
    Build each model in turn (and free it afterwards) and measure inference for every AMP mode,
    then (``train``) a training step for every AMP mode, on the same inputs for all models.

    Returns:
        rows (dicts, see :func:`_row`); a failing build or measurement gives rows whose
        ``status`` is ``"fails: ..."``.
    """
    log = log or (lambda msg: None)
    rows = []
    modes = ["inference"] + (["train"] if train else [])
    infer_inputs = make_inputs(batch, size, device=device, seed=seed, num_classes=num_classes)
    train_inputs = (make_inputs(batch, size, device=device, seed=seed, num_classes=num_classes,
                                with_labels=True) if train else None)
    for spec in specs:
        new_rows = {(mode, amp): _row(spec.name, mode, batch=batch, size=size, amp=amp,
                                      channels_last=channels_last, description=spec.description,
                                      reference=spec.reference)
                    for mode in modes for amp in amps}
        rows.extend(new_rows.values())
        log(f"building {spec.name}")
        try:
            model = spec.build(device)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
        except Exception as e:  # noqa: BLE001  (recorded, the other models still run)
            for row in new_rows.values():
                _fail(row, e, device)
            continue
        for (mode, amp), row in new_rows.items():
            log(f"{spec.name}: {mode} {row['setting']}")
            torch.manual_seed(seed)
            try:
                if mode == "inference":
                    _fill(row, measure_inference(model, infer_inputs, device=device, amp=amp,
                                                 warmup=warmup, repeats=repeats))
                else:
                    _fill(row, measure_training(model, train_inputs, device=device, amp=amp,
                                                warmup=warmup, repeats=repeats))
            except Exception as e:  # noqa: BLE001
                _fail(row, e, device)
        del model
        _free_memory(device)
    return rows


class _GivenCoarseLogits(nn.Module):
    """Stands in for the reference head's coarse head: ``layers(features)`` returns the logits
    passed in ``features[COARSE_KEY]`` (the reference then only runs its subdivision)."""

    COARSE_KEY = "__coarse_logits__"

    def layers(self, features):
        return features[self.COARSE_KEY]


def build_head_pair(*, device="cpu", size=(256, 512), batch=1, config_file=OURS_POINTREND_CONFIG,
                    opts=(), seed=0, num_classes=NUM_CLASSES):
    """
    Our ``PointRendSegHead`` (from ``config_file`` + ``opts``) and Detectron2's
    ``PointRendSemSegHead`` configured alike (point-head layers, coarse predictions at each layer,
    fine feature maps, subdivision points N and steps), the point-head weights copied from ours,
    plus inputs for both: random coarse logits (batch, K, H/s, W/s) at our coarse stride s and
    random fine features shaped like the backbone's (channels, stride).

    Returns:
        dict(ours, ref, coarse_logits, features, num_points, steps, stride).
    """
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import build_backbone, build_sem_seg_head
    from detectron2.projects.point_rend import add_pointrend_config
    from detectron2.projects.point_rend.semantic_seg import PointRendSemSegHead

    from pointrend_seg.modeling import MLPPointHead, PointRendSegHead

    cfg = _ours_cfg(config_file, device, opts, num_classes)
    torch.manual_seed(seed)
    shapes = build_backbone(cfg).output_shape()  # channels and strides only
    ours = build_sem_seg_head(cfg, shapes)
    if not isinstance(ours, PointRendSegHead) or not isinstance(ours.point_head, MLPPointHead):
        raise ValueError(
            f"{config_file}: the head comparison needs MODEL.SEM_SEG_HEAD.NAME PointRendSegHead "
            f"with MODEL.POINT_HEAD.NAME MLPPointHead (got {cfg.MODEL.SEM_SEG_HEAD.NAME}, "
            f"{cfg.MODEL.POINT_HEAD.NAME})"
        )
    steps, num_points, stride = (ours.num_subdivision_steps(), ours.subdivision_num_points,
                                 ours.output_stride)
    p = cfg.MODEL.POINT_HEAD
    ref_cfg = get_cfg()
    add_pointrend_config(ref_cfg)
    _merge(ref_cfg, [
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", num_classes,
        "MODEL.SEM_SEG_HEAD.IN_FEATURES", list(p.IN_FEATURES),
        "MODEL.POINT_HEAD.NUM_CLASSES", num_classes,
        "MODEL.POINT_HEAD.IN_FEATURES", list(p.IN_FEATURES),
        "MODEL.POINT_HEAD.FC_DIM", p.FC_DIM,
        "MODEL.POINT_HEAD.NUM_FC", p.NUM_FC,
        "MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER", p.COARSE_PRED_EACH_LAYER,
        "MODEL.POINT_HEAD.SUBDIVISION_STEPS", steps,
        "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", num_points,
    ])
    fine_shapes = {f: ShapeSpec(channels=shapes[f].channels, stride=shapes[f].stride)
                   for f in p.IN_FEATURES}
    ref = PointRendSemSegHead(ref_cfg, fine_shapes)
    ref.coarse_sem_seg_head = _GivenCoarseLogits()  # its own coarse head is not compared
    ref.point_head.load_state_dict(ours.point_head.state_dict())
    ours.to(device).eval()
    ref.to(device).eval()

    h, w = size
    if h % stride or w % stride:
        raise ValueError(f"--size {h} {w} must be a multiple of the coarse stride {stride}")
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, num_classes, h // stride, w // stride, generator=gen) * 3
    features = {
        f: torch.randn(batch, s.channels, h // s.stride, w // s.stride, generator=gen)
        for f, s in fine_shapes.items()
    }
    return {
        "ours": ours, "ref": ref, "coarse_logits": coarse.to(device),
        "features": {f: x.to(device) for f, x in features.items()},
        "num_points": num_points, "steps": steps, "stride": stride,
    }


def head_outputs(pair, amp="none", device="cpu"):
    """(ours, ref) full-resolution logits of one run of both heads on the pair's inputs."""
    with torch.inference_mode(), autocast_context(device, amp):
        ours = pair["ours"].inference(pair["coarse_logits"], pair["features"])
    with torch.inference_mode(), autocast_context(device, amp):
        ref, _ = pair["ref"](_ref_features(pair))
    return ours, ref


def _ref_features(pair):
    return {**pair["features"], _GivenCoarseLogits.COARSE_KEY: pair["coarse_logits"]}


def run_head_comparison(*, device="cpu", size=(256, 512), batch=1, amps=("none",),
                        channels_last=False, repeats=5, warmup=2, seed=0,
                        config_file=OURS_POINTREND_CONFIG, opts=(), num_classes=NUM_CLASSES,
                        log=None) -> List[Dict]:
    """
    Time our ``PointRendSegHead.inference`` and the reference subdivision on the same inputs
    (:func:`build_head_pair`) for each AMP mode. Rows ``head_ours`` carry
    ``max_abs_diff_vs_ref``, the largest difference between the two outputs (``None`` if either
    failed), and both carry ``num_points`` / ``steps``.
    """
    log = log or (lambda msg: None)
    rows = []
    kw = dict(batch=batch, size=size, channels_last=channels_last)
    try:
        pair = build_head_pair(device=device, size=size, batch=batch, config_file=config_file,
                               opts=opts, seed=seed, num_classes=num_classes)
    except Exception as e:  # noqa: BLE001
        for amp in amps:
            for name in HEAD_NAMES:
                rows.append(_fail(_row(name, "head-inference", amp=amp, **kw,
                                       description=DESCRIPTIONS[name],
                                       reference=REFERENCE_OF.get(name)), e, device))
        return rows
    if channels_last:
        pair["features"] = {f: x.contiguous(memory_format=torch.channels_last)
                            for f, x in pair["features"].items()}
        pair["coarse_logits"] = pair["coarse_logits"].contiguous(memory_format=torch.channels_last)
    calls = {
        "head_ours": lambda: pair["ours"].inference(pair["coarse_logits"], pair["features"]),
        "head_ref": lambda: pair["ref"](_ref_features(pair)),
    }
    for amp in amps:
        outputs = {}
        amp_rows = {}
        for name in HEAD_NAMES:
            row = _row(name, "head-inference", amp=amp, **kw, description=DESCRIPTIONS[name],
                       reference=REFERENCE_OF.get(name))
            row.update(num_points=pair["num_points"], steps=pair["steps"])
            amp_rows[name] = row
            rows.append(row)
            log(f"{name}: {row['setting']}")
            torch.manual_seed(seed)
            try:
                with torch.inference_mode(), autocast_context(device, amp):
                    out = calls[name]()
                outputs[name] = out[0] if isinstance(out, tuple) else out

                def step(fn=calls[name]):
                    with torch.inference_mode(), autocast_context(device, amp):
                        return fn()

                times, peak = _timed_with_memory(
                    device,
                    lambda: time_fn(step, warmup=warmup, repeats=repeats, sync=_sync_for(device)),
                )
                _fill(row, dict(summarize_timings(times, batch), peak_mem_mb=peak))
            except Exception as e:  # noqa: BLE001
                _fail(row, e, device)
        diff = None
        if len(outputs) == 2:
            a, b = outputs["head_ours"], outputs["head_ref"]
            if a.shape == b.shape:
                diff = (a.float() - b.float()).abs().max().item()
            else:
                amp_rows["head_ours"]["output_mismatch"] = (
                    f"output shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
                )
        amp_rows["head_ours"]["max_abs_diff_vs_ref"] = diff
    del pair
    _free_memory(device)
    return rows


def add_ratios(rows: List[Dict]) -> List[Dict]:
    """
    ``ratio_vs_reference`` = our ms/img / the reference's ms/img, for rows with a ``reference``
    measured under the same mode, batch, size, AMP and memory format (None if either failed).
    """
    index = {(r["model"], r["mode"], r["setting"]): r for r in rows}
    for r in rows:
        ref = index.get((r["reference"], r["mode"], r["setting"])) if r["reference"] else None
        ok = ref is not None and r["ms_per_img"] is not None and ref["ms_per_img"] is not None
        r["ratio_vs_reference"] = r["ms_per_img"] / ref["ms_per_img"] if ok else None
    return rows


def run_benchmark(*, models: Sequence[str] = MODEL_NAMES + (HEADS,), device="cpu", size=None,
                  batch=1, amps=("none",), channels_last=False, repeats=5, warmup=2,
                  train=False, seed=0, narrow=False, ours_config=OURS_POINTREND_CONFIG,
                  ours_baseline_config=OURS_DEEPLAB_CONFIG, num_classes=NUM_CLASSES,
                  cudnn_benchmark=False, specs: Optional[Sequence[ModelSpec]] = None,
                  log=None) -> Dict:
    """
    The whole benchmark: models (``models``, or explicit ``specs``), then the head comparison
    (``"heads"`` in ``models``).

    Args:
        size: (H, W), default 1024x2048 on CUDA and 256x512 on CPU; multiples of 32.

    Returns:
        dict(meta=..., rows=[...]) for :func:`format_markdown` / :func:`write_report`.
    """
    device = str(device)
    if _is_cuda(device) and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if size is None:
        size = (1024, 2048) if _is_cuda(device) else (256, 512)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or any(s <= 0 or s % SIZE_DIVISIBILITY for s in size):
        raise ValueError(
            f"size {size} must be two positive multiples of {SIZE_DIVISIBILITY} (the FPN "
            "reference pads to 32; the DeepLab reference does not pad and needs its stride)"
        )
    for amp in amps:
        if amp not in AMP_MODES:
            raise ValueError(f"amp must be in {AMP_MODES}, got {amp!r}")
    models = tuple(dict.fromkeys(models))  # drop repeats, keep the order
    unknown = [m for m in models if m not in MODEL_NAMES + (HEADS,)]
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {list(MODEL_NAMES) + [HEADS]}")
    if _is_cuda(device):
        torch.backends.cudnn.benchmark = bool(cudnn_benchmark)

    if specs is None:
        specs = default_model_specs([m for m in models if m != HEADS], seed=seed, narrow=narrow,
                                    ours_config=ours_config,
                                    ours_baseline_config=ours_baseline_config)
    common = dict(device=device, size=size, batch=batch, amps=tuple(amps),
                  channels_last=channels_last, repeats=repeats, warmup=warmup, seed=seed,
                  num_classes=num_classes, log=log)
    rows = run_model_benchmarks(specs, train=train, **common)
    head_info = None
    if HEADS in models:
        head_opts = NARROW_OPTS["ours_pointrend"] if narrow else []
        rows += run_head_comparison(config_file=ours_config, opts=head_opts, **common)
        head_info = {"config_file": ours_config,
                     "opts": [str(v) for v in head_opts]}
    add_ratios(rows)

    import detectron2

    meta = {
        "hardware": hardware_info(device),
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if _is_cuda(device) else None,
        "detectron2": detectron2.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "size": list(size), "batch": batch, "repeats": repeats, "warmup": warmup,
        "amps": list(amps), "channels_last": bool(channels_last), "train": bool(train),
        "seed": seed, "num_classes": num_classes, "narrow": bool(narrow),
        "cudnn_benchmark": bool(cudnn_benchmark) if _is_cuda(device) else None,
        "models": {s.name: dict(description=s.description, reference=s.reference, **s.info)
                   for s in specs},
        "heads": head_info,
    }
    return {"meta": meta, "rows": rows}


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def _fmt(value, digits):
    return "-" if value is None else f"{value:.{digits}f}"


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def format_markdown(report: Dict) -> str:
    """A header (hardware, versions, threads, date, settings) and one table row per result."""
    m = report["meta"]
    torch_line = f"torch {m['torch']}" + (f" (CUDA {m['cuda']})" if m.get("cuda") else "")
    lines = [
        "# pointrend_seg speed benchmark",
        "",
        f"**{m['hardware']}** | {torch_line} | detectron2 {m['detectron2']} | "
        f"{m['threads']} threads | {m['date']}",
        "",
        f"Device `{m['device']}`, input {m['size'][0]}x{m['size'][1]}, batch {m['batch']}, "
        f"{m['warmup']} warm-up + {m['repeats']} timed iterations, median; random weights, "
        f"{m['num_classes']} classes, seed {m['seed']}"
        + (", cudnn.benchmark on" if m.get("cudnn_benchmark") else "")
        + (". **Narrow R-50 smoke-test models: not representative.**" if m.get("narrow") else "."),
        "",
        "| model | mode | setting | ms/img (median) | images/s | peak mem (MiB) | vs reference |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        if r["status"] != "ok":
            ms, ips, mem = _cell(r["status"]), "-", "-"
        else:
            ms, ips, mem = _fmt(r["ms_per_img"], 2), _fmt(r["images_per_s"], 2), \
                _fmt(r["peak_mem_mb"], 0)
        ratio = "-"
        if r["ratio_vs_reference"] is not None:
            ratio = f"{r['ratio_vs_reference']:.2f}x {r['reference']}"
        elif r["reference"]:
            ratio = f"n/a ({r['reference']})"
        lines.append(f"| {r['model']} | {r['mode']} | {r['setting']} | {ms} | {ips} | {mem} | "
                     f"{ratio} |")
    lines += ["", "vs reference: our ms/img divided by the reference's in the same mode and "
              "setting (below 1: ours is faster).", ""]
    notes = []
    for r in report["rows"]:
        if r["model"] == "head_ours":
            diff = r.get("max_abs_diff_vs_ref")
            notes.append(
                f"heads ({r['setting']}): N = {r.get('num_points')} points, "
                f"{r.get('steps')} steps; max |ours - reference| = "
                + (r.get("output_mismatch") or ("n/a" if diff is None else f"{diff:.2e}"))
            )
    by_key = {(r["model"], r["mode"], r["setting"]): r for r in report["rows"]}
    for (name, mode, setting), r in by_key.items():
        base = by_key.get(("ours_deeplabv3", mode, setting))
        if name == "ours_pointrend" and base and r["ms_per_img"] and base["ms_per_img"]:
            notes.append(f"PointRend cost ({mode}, {setting}): ours_pointrend / ours_deeplabv3 = "
                         f"{r['ms_per_img'] / base['ms_per_img']:.2f}x")
    if notes:
        lines += [f"- {n}" for n in notes] + [""]
    lines.append("Models:")
    for name, info in m["models"].items():
        extra = f" ({info['config_file']})" if info.get("config_file") else ""
        lines.append(f"- `{name}`: {info['description']}{extra}")
    if m.get("heads"):
        lines.append(f"- `head_ours` / `head_ref`: {DESCRIPTIONS['head_ours']} / "
                     f"{DESCRIPTIONS['head_ref']} ({m['heads']['config_file']})")
    return "\n".join(lines) + "\n"


def write_report(report: Dict, output: str) -> List[str]:
    """
    Write ``<output>.json`` and ``<output>.md`` (a trailing ``.json`` / ``.md`` in ``output`` is
    replaced). Returns the two paths.
    """
    stem, ext = os.path.splitext(output)
    if ext.lower() not in (".json", ".md"):
        stem = output
    folder = os.path.dirname(stem)
    if folder:
        os.makedirs(folder, exist_ok=True)
    json_path, md_path = stem + ".json", stem + ".md"
    with open(json_path, "w") as f:
        json.dump(report, f, indent=1, allow_nan=True)
    with open(md_path, "w") as f:
        f.write(format_markdown(report))
    return [json_path, md_path]
