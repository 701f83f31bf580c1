"""
Result rows of the benchmark (plain dicts, JSON-ready) and the ratios between them.

A row is one model in one mode ("inference", "train", "head-inference") and one setting (batch,
size, AMP dtype, memory format), optionally a ``variant`` of that model ("prepared": after
``prepare_for_inference``; "prepared+compile=default": also compiled). Failures are
rows too, with ``status`` "fails: <error>".
"""
from typing import Dict, List

from .timing import describe_failure, free_memory

__all__ = ["add_ratios", "fail_row", "new_row", "setting_label"]


def setting_label(batch, size, amp, channels_last) -> str:
    """e.g. "b4 1024x2048 bf16 channels-last"."""
    label = f"b{batch} {size[0]}x{size[1]} {'fp32' if amp == 'none' else amp}"
    return label + (" channels-last" if channels_last else "")


def new_row(name, mode, *, batch, size, amp, channels_last, variant="", description="",
            reference=None) -> Dict:
    """A row with status "ok" and no measurement yet."""
    return {
        "model": name, "mode": mode, "variant": variant, "description": description,
        "setting": setting_label(batch, size, amp, channels_last),
        "batch": batch, "size": list(size), "amp": amp, "channels_last": bool(channels_last),
        "status": "ok", "median_ms": None, "ms_per_img": None, "images_per_s": None,
        "peak_mem_mb": None, "times_ms": None, "gflop_per_img": None, "tflops": None,
        "reference": reference, "ratio_vs_reference": None,
    }


def fail_row(row, exc, device) -> Dict:
    """Record ``exc`` as the row's status (and free what the failure left on the device)."""
    row["status"] = describe_failure(exc)
    free_memory(device)
    return row


def add_ratios(rows: List[Dict]) -> List[Dict]:
    """
    ``ratio_vs_reference`` = our ms/img / the reference's ms/img, the reference measured in the
    same mode and setting as it comes (its variant ""); None if either failed.
    """
    index = {(r["model"], r["mode"], r["setting"], r.get("variant", "")): r for r in rows}
    for r in rows:
        ref = index.get((r["reference"], r["mode"], r["setting"], "")) if r["reference"] else None
        ok = ref is not None and r["ms_per_img"] is not None and ref["ms_per_img"] is not None
        r["ratio_vs_reference"] = r["ms_per_img"] / ref["ms_per_img"] if ok else None
    return rows
