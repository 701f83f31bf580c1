"""
Timing primitives of the benchmark: timed calls with device synchronisation, medians, peak CUDA
memory, FLOP counts, autocast contexts, failure descriptions and the hardware name.
"""
import contextlib
import gc
import math
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

__all__ = [
    "AMP_MODES",
    "autocast_context",
    "count_flops",
    "describe_failure",
    "free_memory",
    "hardware_info",
    "is_cuda",
    "summarize_timings",
    "sync_for",
    "time_fn",
    "time_round_robin",
    "timed_with_memory",
]

AMP_MODES = ("none", "bf16", "fp16")



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


def time_round_robin(fns: Sequence[Callable[[], object]], *, warmup: int, repeats: int,
                     sync: Optional[Callable[[], None]] = None, device=None,
                     clock=time.perf_counter):
    """
    Time several functions side by side: ``warmup`` untimed rounds, then ``repeats`` rounds
    calling each function once, in turn. On a machine whose speed drifts (shared cores, turbo),
    the functions see the same conditions, so their ratios are steadier than with one block of
    iterations per function.

    Args:
        sync: called after every call before reading the clock.
        device: on CUDA, also each function's peak allocated memory.

    Returns:
        one (durations in seconds, peak MiB or None) per function, or the exception it raised
        (it is then left out of the later rounds).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    results = [([], None) for _ in fns]
    failed = {}
    cuda = device is not None and is_cuda(device)

    def call(i, timed):
        if cuda:
            torch.cuda.reset_peak_memory_stats(torch.device(device))
        start = clock()
        try:
            fns[i]()
            if sync is not None:
                sync()
        except Exception as e:  # noqa: BLE001  (recorded for this function only)
            failed[i] = e
            return
        elapsed = clock() - start
        times, peak = results[i]
        if cuda:
            now = torch.cuda.max_memory_allocated(torch.device(device)) / 2 ** 20
            peak = now if peak is None else max(peak, now)
        results[i] = (times + [elapsed] if timed else times, peak)

    for round_ in range(warmup + repeats):
        for i in range(len(fns)):
            if i not in failed:
                call(i, timed=round_ >= warmup)
    return [failed.get(i, results[i]) for i in range(len(fns))]


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


def is_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def sync_for(device):
    if is_cuda(device):
        dev = torch.device(device)
        return lambda: torch.cuda.synchronize(dev)
    return None


def free_memory(device):
    gc.collect()
    if is_cuda(device):
        torch.cuda.empty_cache()


def timed_with_memory(device, run: Callable[[], List[float]]):
    """(times, peak MiB or None): CUDA peak allocated memory during ``run``."""
    if is_cuda(device):
        free_memory(device)
        torch.cuda.reset_peak_memory_stats(torch.device(device))
    times = run()
    peak = None
    if is_cuda(device):
        peak = torch.cuda.max_memory_allocated(torch.device(device)) / 2 ** 20
    return times, peak


def hardware_info(device: str) -> str:
    """The GPU name on CUDA, else the CPU model from /proc/cpuinfo (with the core count)."""
    if is_cuda(device):
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


def _batched_product_flops(self_shape, a_shape, b_shape, *args, **kwargs) -> int:
    """FLOPs of ``self += a @ b`` for (B, M, K) @ (B, K, N): multiply + add."""
    batch, m, k = a_shape
    return 2 * batch * m * k * b_shape[-1]


def count_flops(fn: Callable[[], object]) -> Optional[int]:
    """
    Floating-point operations of one call of ``fn`` (``torch.utils.flop_counter``: matrix
    products, in place or not, and convolutions, forward and backward; elementwise work is not
    counted), or None when they cannot be counted (e.g. a compiled model).
    """
    from torch.utils.flop_counter import FlopCounterMode

    # torch registers only the functional baddbmm; our point head accumulates in place.
    in_place = {torch.ops.aten.baddbmm_: _batched_product_flops}
    try:
        with FlopCounterMode(display=False, custom_mapping=in_place) as counter:
            fn()
    except Exception:  # noqa: BLE001  (a figure that cannot be counted is left out)
        return None
    return counter.get_total_flops()
