#!/usr/bin/env python
"""
Speed of our models next to Detectron2's reference projects, in one process: inference
latency (ms/image) and training throughput (images/s of forward + backward + SGD step),
medians over --repeats iterations after --warmup, with peak CUDA memory, FLOPs per image and
achieved TFLOP/s, and the ratio of each of ours to its reference. Random weights, 19 classes,
fixed seed. Ours is measured as built and after prepare_for_inference ("prepared": batch norm
folded into the convolutions; --prepare).

    tools/benchmark.py --device cuda                          # 1024x2048, batch 1, all models
    tools/benchmark.py --device cuda --amp none bf16 --cudnn-benchmark --output out/bs1
    tools/benchmark.py --device cuda --batch 4 --amp bf16 --channels-last --output out/bs4
    tools/benchmark.py --device cuda --modes train --amp bf16 --batch 8 --size 512 1024 \
        --models ours_pointrend ref_deeplabv3                 # training throughput + memory
    tools/benchmark.py --device cpu --models heads            # the subdivision alone, 256x512
    tools/benchmark.py --device cpu --size 64 128 --repeats 2 --warmup 1 --narrow   # smoke test

Models (--models): ours_pointrend, ours_deeplabv3, ref_deeplabv3, ref_pointrend_fpn, and heads
(our PointRendSegHead.inference as built and prepared - FastPointRendSegHead - vs the reference
PointRendSemSegHead subdivision, on identical coarse logits / features with shared point-head
weights). See tools/benchmarks/.
A model that fails in a setting (e.g. the reference PointRend head under bf16 autocast) is
reported as "fails: <error>" and the others still run; the exit code is 1 when nothing at all
was measured. Configs (--ours-config ...) are YAML or Python (LazyConfig) paths or names of
shipped configs (pointrend_seg.model_zoo, e.g. cityscapes/deeplabv3_R103_os16.yaml,
demo/vit_pointrend_synthetic.py).
"""
import argparse
import logging
import os
import sys

import torch

from benchmarks import core as bench  # tools/benchmarks, beside this script
from pointrend_seg.engine.cli import ToolUsageError, refuse_output_folder_over_a_file


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda[:i] (default: cuda when available)")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"),
                   help="input size, multiples of 32 (default 1024 2048 on cuda, 256 512 on cpu); "
                        "also the training crop")
    p.add_argument("--batch", type=int, default=1, help="images per iteration (default 1)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed iterations, median reported (default 20 on cuda, 5 on cpu)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed iterations first (default 5 on cuda, 2 on cpu)")
    p.add_argument("--amp", nargs="+", default=["none"], choices=bench.AMP_MODES,
                   help="autocast dtype(s); several are measured side by side (default none)")
    p.add_argument("--channels-last", action="store_true", help="models in channels_last format")
    p.add_argument("--models", nargs="+", default=list(bench.MODEL_NAMES) + [bench.HEADS],
                   choices=list(bench.MODEL_NAMES) + [bench.HEADS], help="subset (default all)")
    p.add_argument("--modes", nargs="+", default=["inference"], choices=bench.MODES,
                   help="inference latency and/or training throughput (batch --batch, crops "
                        "--size); default inference")
    p.add_argument("--prepare", nargs="+", default=list(bench.PREPARE_CHOICES),
                   choices=bench.PREPARE_CHOICES,
                   help="ours as built (off) and/or after prepare_for_inference (on); "
                        "default both")
    p.add_argument("--compile", default="", metavar="MODE",
                   help="also ours prepared + torch.compile(mode=MODE), and a compiled head "
                        "(e.g. default, reduce-overhead = CUDA graphs); slow to compile")
    p.add_argument("--interleave", action="store_true",
                   help="time the models' inference side by side, iteration by iteration (all "
                        "models stay in memory; no peak memory): for shared CPUs whose speed "
                        "drifts")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark")
    p.add_argument("--ours-config", default=bench.OURS_POINTREND_CONFIG,
                   help="config of ours_pointrend and of the head comparison")
    p.add_argument("--ours-baseline-config", default=bench.OURS_DEEPLAB_CONFIG,
                   help="config of ours_deeplabv3")
    p.add_argument("--narrow", action="store_true",
                   help="narrow R-50 variants of all models: a quick smoke test, not for reporting")
    p.add_argument("--output", help="write OUTPUT.json and OUTPUT.md; an OUTPUT ending in / or "
                   "an existing folder: OUTPUT/benchmark.json and OUTPUT/benchmark.md")
    p.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    args = p.parse_args(argv)
    if args.output:  # checked before the benchmark runs, not after (its results lost)
        try:
            refuse_output_folder_over_a_file(args.output,
                                             is_folder=args.output.endswith(("/", os.sep)))
        except ToolUsageError as e:
            p.error(str(e))
    return args


def main(argv=None):
    args = parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats if args.repeats is not None else (20 if cuda else 5)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 2)
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    log = None if args.quiet else (lambda msg: print(f"[benchmark] {msg}", file=sys.stderr,
                                                     flush=True))
    try:
        report = bench.run_benchmark(
            models=tuple(args.models), device=args.device, size=args.size, batch=args.batch,
            amps=tuple(args.amp), channels_last=args.channels_last, repeats=repeats,
            warmup=warmup, modes=tuple(args.modes), prepare=tuple(args.prepare),
            compile_mode=args.compile, interleave=args.interleave, seed=args.seed,
            narrow=args.narrow,
            ours_config=args.ours_config, ours_baseline_config=args.ours_baseline_config,
            cudnn_benchmark=args.cudnn_benchmark, log=log,
        )
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    print(bench.format_markdown(report))
    if args.output:
        for path in bench.write_report(report, args.output):
            print(f"wrote {path}", file=sys.stderr)
    if not any(r["status"] == "ok" for r in report["rows"]):
        raise SystemExit("error: nothing was measured (every row failed, see the table above)")
    return report


if __name__ == "__main__":
    main()
