"""
The benchmark's report: a Markdown table (one line per row) with derived figures, and the JSON
of the whole result.
"""
import json
import os
from typing import Dict, List, Tuple

from pointrend_seg.files import atomic_write

from .models import DESCRIPTIONS

__all__ = ["derived_notes", "format_markdown", "report_paths", "write_report"]


def _fmt(value, digits):
    return "-" if value is None else f"{value:.{digits}f}"


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def derived_notes(rows: List[Dict]) -> List[str]:
    """
    Figures derived from pairs of rows of the same mode, setting and variant: each head's
    difference to the reference head, and the cost of PointRend's refinement in the whole model
    (ours_pointrend / ours_deeplabv3, and its share of the end-to-end time).
    """
    notes = []
    for r in rows:
        if r["model"] == "head_ours":
            diff = r.get("max_abs_diff_vs_ref")
            notes.append(
                f"heads ({r['setting']}, {r['variant']}): N = {r.get('num_points')} points, "
                f"{r.get('steps')} steps; max |ours - reference| = "
                + (r.get("output_mismatch") or ("n/a" if diff is None else f"{diff:.2e}"))
            )
    by_key = {(r["model"], r["mode"], r["setting"], r.get("variant", "")): r for r in rows}
    for (name, mode, setting, variant), r in by_key.items():
        base = by_key.get(("ours_deeplabv3", mode, setting, variant))
        if name == "ours_pointrend" and base and r["ms_per_img"] and base["ms_per_img"]:
            ratio = r["ms_per_img"] / base["ms_per_img"]
            notes.append(
                f"PointRend cost ({mode}, {setting}{', ' + variant if variant else ''}): "
                f"ours_pointrend / ours_deeplabv3 = {ratio:.2f}x; the refinement is "
                f"{100 * (1 - 1 / ratio):.0f}% of the end-to-end time"
            )
    return notes


def format_markdown(report: Dict) -> str:
    """A header (hardware, versions, threads, date, settings) and one table row per result."""
    m = report["meta"]
    torch_line = f"torch {m['torch']}" + (f" (CUDA {m['cuda']})" if m.get("cuda") else "")
    cudnn = m.get("cudnn_benchmark")
    lines = [
        "# pointrend_seg speed benchmark",
        "",
        f"**{m['hardware']}** | {torch_line} | detectron2 {m['detectron2']} | "
        f"{m['threads']} threads | {m['date']}",
        "",
        f"Device `{m['device']}`, input {m['size'][0]}x{m['size'][1]}, batch {m['batch']}, "
        f"{m['warmup']} warm-up + {m['repeats']} timed iterations, median; random weights, "
        f"{m['num_classes']} classes, seed {m['seed']}"
        + ("" if cudnn is None else f", cudnn.benchmark {'on' if cudnn else 'off'}")
        + (", models' inference timed side by side (interleaved)" if m.get("interleave") else "")
        + (f", training optimizer {m['optimizer']}" if m.get("optimizer") else "")
        + (". **Narrow R-50 smoke-test models: not representative.**" if m.get("narrow") else "."),
        "",
        "| model | variant | mode | setting | ms/img (median) | images/s | peak mem (MiB) "
        "| GFLOP/img | TFLOP/s | vs reference |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        if r["status"] != "ok":
            ms, ips, mem, gflop, tflops = _cell(r["status"]), "-", "-", "-", "-"
        else:
            ms, ips = _fmt(r["ms_per_img"], 2), _fmt(r["images_per_s"], 2)
            mem, gflop = _fmt(r["peak_mem_mb"], 0), _fmt(r.get("gflop_per_img"), 1)
            tflops = _fmt(r.get("tflops"), 3)
        ratio = "-"
        if r["ratio_vs_reference"] is not None:
            ratio = f"{r['ratio_vs_reference']:.2f}x {r['reference']}"
        elif r["reference"]:
            ratio = f"n/a ({r['reference']})"
        lines.append(f"| {r['model']} | {r.get('variant') or '-'} | {r['mode']} | {r['setting']} "
                     f"| {ms} | {ips} | {mem} | {gflop} | {tflops} | {ratio} |")
    lines += [
        "",
        "vs reference: our ms/img divided by the reference's (as it comes, no variant) in the same "
        "mode and setting (below 1: ours is faster). Variants: `prepared` = after "
        "`prepare_for_inference` (batch norm folded into the convolutions; PointRend's fast "
        "subdivision, FastPointRendSegHead); `compile=<mode>` = torch.compile. The heads are timed "
        "side by side, iteration by iteration. GFLOP/img: matrix "
        "products and convolutions counted by torch.utils.flop_counter (forward, plus backward "
        "in training).",
        "",
    ]
    notes = derived_notes(report["rows"])
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


def report_paths(output: str) -> Tuple[str, str]:
    """
    (json, md) paths of the report for ``output``: ``<output>.json`` and ``<output>.md`` (a
    trailing ``.json`` / ``.md`` in ``output`` is replaced), or, when ``output`` ends with a
    slash or is an existing folder, ``<output>/benchmark.json`` and ``.md`` in it (before: the
    hidden files ``<output>/.json`` and ``.md``).
    """
    if output.endswith(("/", os.sep)) or os.path.isdir(output):
        stem = os.path.join(output, "benchmark")
    else:
        stem, ext = os.path.splitext(output)
        if ext.lower() not in (".json", ".md"):
            stem = output
    return stem + ".json", stem + ".md"


def write_report(report: Dict, output: str) -> List[str]:
    """
    Write the report's JSON and Markdown to :func:`report_paths` of ``output`` (its folder made
    if missing). Returns the two paths.
    """
    json_path, md_path = report_paths(output)
    folder = os.path.dirname(json_path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    markdown = format_markdown(report)
    atomic_write(json_path, lambda f: json.dump(report, f, indent=1, allow_nan=True), binary=False)
    atomic_write(md_path, lambda f: f.write(markdown), binary=False)
    return [json_path, md_path]
