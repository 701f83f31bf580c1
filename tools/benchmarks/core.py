"""
Speed benchmark of our models against Detectron2's reference projects, side by side in one
process (the library of ``tools/benchmark.py``; not part of the installed package). The pieces:
``models`` (what is measured), ``heads`` (the subdivision alone), ``timing`` (how),
``rows`` / ``report`` (results); this module runs them and re-exports their public names.

Measurements: inference (``eval()``, ``torch.inference_mode``) and training steps (forward,
backward, SGD step: fused on CUDA, foreach on CPU) are timed per iteration with
``time.perf_counter`` after ``warmup`` untimed iterations, with ``torch.cuda.synchronize`` around
each on CUDA; the median over ``repeats`` iterations is reported, with the peak CUDA memory and
the FLOPs of one iteration (``torch.utils.flop_counter``) and so the achieved TFLOP/s. Inputs are
created on the device beforehand (no host to device copy is timed). Ours is measured as built
and, as the variant "prepared", after ``prepare_for_inference`` (batch norm folded; with
``compile_mode`` also compiled). A failure of one model in one setting (AMP dtype errors, out of
memory) becomes a row with status ``"fails: <error>"``; the other rows are still measured.
"""
import copy
import datetime
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from .heads import build_head_pair, head_outputs, run_head_comparison
from .models import (
    DESCRIPTIONS,
    HEAD_NAMES,
    HEADS,
    MODEL_NAMES,
    NARROW_OPTS,
    NUM_CLASSES,
    OURS_DEEPLAB_CONFIG,
    OURS_POINTREND_CONFIG,
    REFERENCE_OF,
    SIZE_DIVISIBILITY,
    ModelSpec,
    build_ours,
    build_ref_deeplabv3,
    build_ref_pointrend_fpn,
    default_model_specs,
    make_inputs,
)
from .report import format_markdown, report_paths, write_report
from .rows import add_ratios, fail_row, new_row
from .timing import (
    AMP_MODES,
    autocast_context,
    count_flops,
    describe_failure,
    free_memory,
    hardware_info,
    is_cuda,
    summarize_timings,
    sync_for,
    time_fn,
    time_round_robin,
    timed_with_memory,
)

__all__ = [
    "AMP_MODES",
    "DESCRIPTIONS",
    "HEADS",
    "HEAD_NAMES",
    "MODEL_NAMES",
    "MODES",
    "NARROW_OPTS",
    "PREPARE_CHOICES",
    "REFERENCE_OF",
    "ModelSpec",
    "add_ratios",
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
    "make_optimizer",
    "measure_inference",
    "measure_training",
    "report_paths",
    "run_benchmark",
    "run_head_comparison",
    "run_model_benchmarks",
    "summarize_timings",
    "time_fn",
    "time_round_robin",
    "write_report",
]

MODES = ("inference", "train")
# Ours as built ("off") and/or after prepare_for_inference ("on").
PREPARE_CHOICES = ("off", "on")


def _with_flops(measurement: Dict, flops: Optional[int], batch: int) -> Dict:
    """Add ``gflop_per_img`` and ``tflops`` (achieved, from the median) to a measurement."""
    if flops:
        measurement["gflop_per_img"] = flops / batch / 1e9
        measurement["tflops"] = flops / 1e12 / (measurement["median_ms"] / 1e3)
    return measurement


def _inference_step(model, inputs, device, amp):
    def step():
        with torch.inference_mode(), autocast_context(device, amp):
            return model(inputs)

    return step


def measure_inference(model: nn.Module, inputs, *, device, amp="none", warmup=2,
                      repeats=5) -> Dict:
    """
    Time ``model(inputs)`` in eval mode under ``torch.inference_mode`` (and autocast).

    Returns:
        :func:`summarize_timings` of the batch, plus ``peak_mem_mb`` (CUDA, else None),
        ``gflop_per_img`` and ``tflops``.
    """
    model.eval()
    step = _inference_step(model, inputs, device, amp)
    times, peak = timed_with_memory(
        device, lambda: time_fn(step, warmup=warmup, repeats=repeats, sync=sync_for(device))
    )
    result = dict(summarize_timings(times, len(inputs)), peak_mem_mb=peak)
    return _with_flops(result, count_flops(step), len(inputs))


def make_optimizer(params, device, lr=1e-4):
    """
    SGD (momentum 0.9, weight decay 1e-4) with the fastest implementation available: ``fused``
    on CUDA, ``foreach`` otherwise. Returns (optimizer, implementation name).
    """
    kind = "fused" if is_cuda(device) else "foreach"
    try:
        optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4,
                                    **{kind: True})
    except (RuntimeError, TypeError, ValueError):  # not supported by this build / device
        kind = "for-loop"
        optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    return optimizer, kind


def measure_training(model: nn.Module, inputs, *, device, amp="none", warmup=2, repeats=5,
                     lr=1e-4) -> Dict:
    """
    Time training iterations: forward (autocast) returning a loss dict, backward of the sum
    (with a ``GradScaler`` for fp16), SGD step (:func:`make_optimizer`).

    Returns:
        :func:`summarize_timings` of the batch, plus ``peak_mem_mb`` (CUDA, else None),
        ``optimizer``, ``gflop_per_img`` (forward + backward) and ``tflops``.
    """
    from detectron2.utils.events import EventStorage

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, kind = make_optimizer(params, device, lr)
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
            return time_fn(step, warmup=warmup, repeats=repeats, sync=sync_for(device))

    try:
        times, peak = timed_with_memory(device, run)
        with EventStorage(0):
            flops = count_flops(step)
    finally:
        optimizer.zero_grad(set_to_none=True)
        del optimizer
    result = dict(summarize_timings(times, len(inputs)), peak_mem_mb=peak, optimizer=f"SGD {kind}")
    return _with_flops(result, flops, len(inputs))


def _inference_variants(spec: ModelSpec, prepare: Sequence[str], compile_mode: str):
    """(variant name, InferenceOptions or None) to measure ``spec`` with in inference."""
    from pointrend_seg.modeling.inference import InferenceOptions

    if not spec.preparable:
        return [("", None)]
    variants = [("", None)] if "off" in prepare else []
    if "on" in prepare:
        # The memory format is the run's setting (the model is converted before), so the
        # transform leaves it alone.
        variants.append(("prepared", InferenceOptions(fold_bn=True, channels_last=False)))
        if compile_mode:
            variants.append((f"prepared+compile={compile_mode}",
                             InferenceOptions(fold_bn=True, channels_last=False,
                                              compile=compile_mode)))
    return variants


def run_model_benchmarks(specs: Sequence[ModelSpec], *, device="cpu", size=(256, 512), batch=1,
                         amps=("none",), channels_last=False, repeats=5, warmup=2,
                         modes=("inference",), prepare=("off",), compile_mode="",
                         interleave=False, seed=0, num_classes=NUM_CLASSES,
                         log=None) -> List[Dict]:
    """
    Build each model in turn and measure, for every AMP mode, inference (for preparable models
    in the variants of ``prepare`` / ``compile_mode``) and/or training (``modes``), on the same
    inputs for all models.

    Args:
        interleave: time all inference rows side by side, iteration by iteration
            (:func:`timing.time_round_robin`): every model (and a prepared copy of ours) stays
            in memory, and no peak memory is reported. For machines whose speed drifts (shared
            CPUs); otherwise each model is measured in one block and freed afterwards.

    Returns:
        rows (:func:`rows.new_row`); a failing build or measurement gives rows whose ``status``
        is ``"fails: ..."``.
    """
    from pointrend_seg.modeling.inference import prepare_for_inference

    log = log or (lambda msg: None)
    rows = []
    interleaved = []  # (row, step, model) timed together at the end
    infer_inputs = (make_inputs(batch, size, device=device, seed=seed, num_classes=num_classes)
                    if "inference" in modes else None)
    train_inputs = (make_inputs(batch, size, device=device, seed=seed, num_classes=num_classes,
                                with_labels=True) if "train" in modes else None)
    for spec in specs:
        plan = []  # (mode, variant, options, amp)
        if "inference" in modes:
            for variant, options in _inference_variants(spec, prepare, compile_mode):
                plan += [("inference", variant, options, amp) for amp in amps]
        if "train" in modes:
            plan += [("train", "", None, amp) for amp in amps]
        plan = [(mode, variant, options, amp,
                 new_row(spec.name, mode, batch=batch, size=size, amp=amp,
                         channels_last=channels_last, variant=variant,
                         description=spec.description, reference=spec.reference))
                for mode, variant, options, amp in plan]
        rows.extend(p[-1] for p in plan)
        log(f"building {spec.name}")
        try:
            model = spec.build(device)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
        except Exception as e:  # noqa: BLE001  (recorded, the other models still run)
            for p in plan:
                fail_row(p[-1], e, device)
            continue
        copies = {}  # prepared copies of the model for interleaved timing, by variant
        for mode, variant, options, amp, row in plan:
            log(f"{spec.name}: {mode} {variant} {row['setting']}")
            torch.manual_seed(seed)
            handle = None
            try:
                if mode == "inference" and interleave:
                    if options is not None and variant not in copies:
                        copies[variant] = copy.deepcopy(model).eval()
                        prepare_for_inference(copies[variant], options)
                    timed_model = copies.get(variant, model).eval()
                    step = _inference_step(timed_model, infer_inputs, device, amp)
                    step()  # a setting that fails, fails here
                    flops = count_flops(step)
                    row["gflop_per_img"] = flops / batch / 1e9 if flops else None
                    interleaved.append((row, step, timed_model))
                elif mode == "inference":
                    model.eval()
                    if options is not None:
                        handle = prepare_for_inference(model, options)
                    row.update(measure_inference(model, infer_inputs, device=device, amp=amp,
                                                 warmup=warmup, repeats=repeats))
                else:
                    row.update(measure_training(model, train_inputs, device=device, amp=amp,
                                                warmup=warmup, repeats=repeats))
            except Exception as e:  # noqa: BLE001
                fail_row(row, e, device)
            finally:
                if handle is not None:
                    handle.undo()
        del model, copies
        free_memory(device)
    if interleaved:
        log(f"timing {len(interleaved)} inference rows side by side")
        for _, _, timed_model in interleaved:
            timed_model.eval()  # a training row of the same model came after its step was made
        results = time_round_robin([step for _, step, _ in interleaved], warmup=warmup,
                                   repeats=repeats, sync=sync_for(device))
        for (row, _, _), result in zip(interleaved, results):
            if isinstance(result, Exception):
                fail_row(row, result, device)
                continue
            gflop = row["gflop_per_img"]
            row.update(summarize_timings(result[0], batch))
            if gflop is not None:
                row["tflops"] = gflop * batch / 1e3 / (row["median_ms"] / 1e3)
    return rows


def run_benchmark(*, models: Sequence[str] = MODEL_NAMES + (HEADS,), device="cpu", size=None,
                  batch=1, amps=("none",), channels_last=False, repeats=5, warmup=2,
                  modes=("inference",), prepare=PREPARE_CHOICES, compile_mode="",
                  interleave=False, seed=0, narrow=False,
                  ours_config=OURS_POINTREND_CONFIG,
                  ours_baseline_config=OURS_DEEPLAB_CONFIG, num_classes=NUM_CLASSES,
                  cudnn_benchmark=False, specs: Optional[Sequence[ModelSpec]] = None,
                  log=None) -> Dict:
    """
    The whole benchmark: models (``models``, or explicit ``specs``), then the head comparison
    (``"heads"`` in ``models``: our head as built and prepared, and Detectron2's).

    Args:
        size: (H, W), default 1024x2048 on CUDA and 256x512 on CPU; multiples of 32.
        modes: "inference" and/or "train".
        prepare: "off" (ours as built) and/or "on" (after ``prepare_for_inference``).
        compile_mode: also measure ours prepared and compiled with this ``torch.compile``
            mode (and a compiled head).
        interleave: time the models' inference rows side by side (see
            :func:`run_model_benchmarks`); the heads always are.

    Returns:
        dict(meta=..., rows=[...]) for :func:`format_markdown` / :func:`write_report`.
    """
    device = str(device)
    if is_cuda(device) and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if size is None:
        size = (1024, 2048) if is_cuda(device) else (256, 512)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or any(s <= 0 or s % SIZE_DIVISIBILITY for s in size):
        raise ValueError(
            f"size {size} must be two positive multiples of {SIZE_DIVISIBILITY} (the FPN "
            "reference pads to 32; the DeepLab reference does not pad and needs its stride)"
        )
    for amp in amps:
        if amp not in AMP_MODES:
            raise ValueError(f"amp must be in {AMP_MODES}, got {amp!r}")
    for name, values, choices in (("modes", modes, MODES), ("prepare", prepare, PREPARE_CHOICES)):
        if not values or any(v not in choices for v in values):
            raise ValueError(f"{name} must be a non-empty subset of {choices}, got {values}")
    models = tuple(dict.fromkeys(models))  # drop repeats, keep the order
    unknown = [m for m in models if m not in MODEL_NAMES + (HEADS,)]
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {list(MODEL_NAMES) + [HEADS]}")
    if is_cuda(device):
        torch.backends.cudnn.benchmark = bool(cudnn_benchmark)

    if specs is None:
        specs = default_model_specs([m for m in models if m != HEADS], seed=seed, narrow=narrow,
                                    ours_config=ours_config,
                                    ours_baseline_config=ours_baseline_config)
    common = dict(device=device, size=size, batch=batch, amps=tuple(amps),
                  channels_last=channels_last, repeats=repeats, warmup=warmup, seed=seed,
                  num_classes=num_classes, log=log)
    rows = run_model_benchmarks(specs, modes=tuple(modes), prepare=tuple(prepare),
                                compile_mode=compile_mode, interleave=interleave, **common)
    head_info = None
    if HEADS in models:
        head_opts = NARROW_OPTS["ours_pointrend"] if narrow else []
        rows += run_head_comparison(config_file=ours_config, opts=head_opts,
                                    compile_mode=compile_mode, **common)
        head_info = {"config_file": ours_config,
                     "opts": [str(v) for v in head_opts]}
    add_ratios(rows)

    import detectron2
    import detectron2.modeling

    train_rows = [r for r in rows if r["mode"] == "train" and r.get("optimizer")]
    meta = {
        "hardware": hardware_info(device),
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if is_cuda(device) else None,
        "detectron2": detectron2.__version__ + (
            " (main)" if hasattr(detectron2.modeling, "ViT") else ""),
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "size": list(size), "batch": batch, "repeats": repeats, "warmup": warmup,
        "amps": list(amps), "channels_last": bool(channels_last), "modes": list(modes),
        "prepare": list(prepare), "compile_mode": compile_mode, "interleave": bool(interleave),
        "seed": seed, "num_classes": num_classes, "narrow": bool(narrow),
        "cudnn_benchmark": bool(cudnn_benchmark) if is_cuda(device) else None,
        "optimizer": train_rows[0]["optimizer"] if train_rows else None,
        "models": {s.name: dict(description=s.description, reference=s.reference, **s.info)
                   for s in specs},
        "heads": head_info,
    }
    return {"meta": meta, "rows": rows}
