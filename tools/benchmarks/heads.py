"""
The subdivision alone: our ``PointRendSegHead.inference`` as built (the method as the paper
states it) and as ``prepare_for_inference`` leaves it (``FastPointRendSegHead``, variant
"prepared", optionally compiled), and Detectron2's ``PointRendSemSegHead`` subdivision, on
identical coarse logits and fine features, with the point-head weights copied from ours into the
reference's and the same number of points and steps.
"""
import copy
from typing import Dict, List

import torch
from torch import nn

from .models import DESCRIPTIONS, HEAD_NAMES, NUM_CLASSES, OURS_POINTREND_CONFIG, REFERENCE_OF
from .models import merge_opts, ours_cfg
from .rows import fail_row, new_row
from .timing import (
    autocast_context,
    count_flops,
    free_memory,
    summarize_timings,
    sync_for,
    time_round_robin,
)

__all__ = ["build_head_pair", "head_outputs", "run_head_comparison"]


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
        dict(ours, prepared, ref, coarse_logits, features, num_points, steps, stride):
        ``prepared`` is a copy of ``ours`` after ``prepare_for_inference``.
    """
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import build_backbone, build_sem_seg_head
    from detectron2.projects.point_rend import add_pointrend_config
    from detectron2.projects.point_rend.semantic_seg import PointRendSemSegHead

    from pointrend_seg.modeling import MLPPointHead, PointRendSegHead, prepare_for_inference

    cfg = ours_cfg(config_file, device, opts, num_classes)
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
    merge_opts(ref_cfg, [
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
    prepared = copy.deepcopy(ours)
    prepare_for_inference(prepared)

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
        "ours": ours, "prepared": prepared, "ref": ref, "coarse_logits": coarse.to(device),
        "features": {f: x.to(device) for f, x in features.items()},
        "num_points": num_points, "steps": steps, "stride": stride,
    }


def head_outputs(pair, amp="none", device="cpu"):
    """(ours, prepared, ref) full-resolution logits of one run of each head on the pair's
    inputs."""
    outputs = []
    for name in ("ours", "prepared"):
        with torch.inference_mode(), autocast_context(device, amp):
            outputs.append(pair[name].inference(pair["coarse_logits"], pair["features"]))
    with torch.inference_mode(), autocast_context(device, amp):
        outputs.append(pair["ref"](_ref_features(pair))[0])
    return tuple(outputs)


def _ref_features(pair):
    return {**pair["features"], _GivenCoarseLogits.COARSE_KEY: pair["coarse_logits"]}


def _head_variants(compile_mode):
    """(variant name, head in the pair, compile mode) of our head's rows."""
    variants = [("", "ours", ""), ("prepared", "prepared", "")]
    if compile_mode:
        variants.append((f"prepared+compile={compile_mode}", "prepared", compile_mode))
    return variants


def run_head_comparison(*, device="cpu", size=(256, 512), batch=1, amps=("none",),
                        channels_last=False, repeats=5, warmup=2, seed=0,
                        config_file=OURS_POINTREND_CONFIG, opts=(), num_classes=NUM_CLASSES,
                        compile_mode="", log=None) -> List[Dict]:
    """
    Time our ``PointRendSegHead.inference`` as built (rows ``head_ours``, variant "") and
    prepared (variant "prepared"; with ``compile_mode`` also compiled, ``torch.compile`` of the
    prepared inference) and the reference subdivision (``head_ref``), on the same inputs
    (:func:`build_head_pair`), for each AMP mode, timed in turn
    (:func:`timing.time_round_robin`). Our rows carry ``max_abs_diff_vs_ref``, the largest
    difference between their output and the reference's (``None`` if either failed); all carry
    ``num_points`` / ``steps``.
    """
    log = log or (lambda msg: None)
    variants = _head_variants(compile_mode)
    rows = []
    kw = dict(batch=batch, size=size, channels_last=channels_last)

    def head_row(name, amp, variant=""):
        return new_row(name, "head-inference", amp=amp, variant=variant, **kw,
                       description=DESCRIPTIONS[name], reference=REFERENCE_OF.get(name))

    try:
        pair = build_head_pair(device=device, size=size, batch=batch, config_file=config_file,
                               opts=opts, seed=seed, num_classes=num_classes)
    except Exception as e:  # noqa: BLE001
        for amp in amps:
            rows += [fail_row(head_row("head_ours", amp, v[0]), e, device) for v in variants]
            rows.append(fail_row(head_row("head_ref", amp), e, device))
        return rows
    if channels_last:
        pair["features"] = {f: x.contiguous(memory_format=torch.channels_last)
                            for f, x in pair["features"].items()}
        pair["coarse_logits"] = pair["coarse_logits"].contiguous(memory_format=torch.channels_last)
    ref = pair["ref"]
    compiled = {}

    def call_ours(head, mode):
        inference = pair[head].inference
        if mode:
            if mode not in compiled:
                compiled[mode] = torch.compile(inference, mode=mode)
            inference = compiled[mode]
        return inference(pair["coarse_logits"], pair["features"])

    for amp in amps:
        calls = [(head_row("head_ours", amp, name), lambda h=h, c=c: call_ours(h, c))
                 for name, h, c in variants]
        calls.append((head_row("head_ref", amp), lambda: ref(_ref_features(pair))[0]))
        outputs, timed = {}, []
        for row, call in calls:
            row.update(num_points=pair["num_points"], steps=pair["steps"])
            rows.append(row)
            log(f"{row['model']} {row['variant']}: {row['setting']}")

            def step(call=call):
                with torch.inference_mode(), autocast_context(device, amp):
                    return call()

            try:
                outputs[id(row)] = step()
                # FLOPs are counted on the eager head (FlopCounterMode does not see into a
                # compiled graph).
                flops = count_flops(step) if "compile=" not in row["variant"] else None
                if flops is not None:
                    row["gflop_per_img"] = flops / batch / 1e9
                timed.append((row, step))
            except Exception as e:  # noqa: BLE001
                fail_row(row, e, device)
        # The heads are timed in turn, iteration by iteration: their ratios do not depend on
        # how the machine's speed drifts over the run.
        free_memory(device)
        results = time_round_robin([step for _, step in timed], warmup=warmup, repeats=repeats,
                                   sync=sync_for(device), device=device)
        for (row, _), result in zip(timed, results):
            if isinstance(result, Exception):
                fail_row(row, result, device)
                continue
            times, peak = result
            row.update(summarize_timings(times, batch), peak_mem_mb=peak)
            if row["gflop_per_img"] is not None:
                row["tflops"] = row["gflop_per_img"] * batch / 1e3 / (row["median_ms"] / 1e3)
        ref_row = calls[-1][0]
        reference = outputs.get(id(ref_row))
        for row, _ in calls[:-1]:
            out = outputs.get(id(row))
            row["max_abs_diff_vs_ref"] = None
            if out is None or reference is None:
                continue
            if out.shape != reference.shape:
                row["output_mismatch"] = (f"output shapes differ: {tuple(out.shape)} vs "
                                          f"{tuple(reference.shape)}")
            else:
                row["max_abs_diff_vs_ref"] = (out.float() - reference.float()).abs().max().item()
    del pair, compiled
    free_memory(device)
    return rows
