#!/usr/bin/env python
"""
Export a model (DeepLabV3 + PointRend, subdivision included) to ONNX and to a torch.export program,
and check the exported files against the eager model.

    tools/export_model.py --config-file CFG --output exported/ MODEL.WEIGHTS model.pth
    tools/export_model.py --run output/my_data --output exported/   # a run folder: its config
                                                   # and model_final.pth (with the class names)
    tools/export_model.py --config-file CFG --output exported/ --format onnx \\
        --check-size 512x1024 --check-size 777x1203 --check-image val/a.png MODEL.WEIGHTS model.pth

Written to --output:

    model.onnx       ONNX (torch's dynamo-based exporter): input "images" (B, 3, H, W) float32,
                     the config's INPUT.FORMAT (e.g. RGB), 0-255; output "sem_seg" (B, K, H, W)
                     float32 logits. Batch, height and width are dynamic.
    model.pt2        the same as a torch.export program: load it with
                     pointrend_seg.modeling.export.load_exported_program(path).module(), which
                     refuses an archive that would make torch unpickle objects or load native
                     code (torch.export.load itself may: load only .pt2 files you trust with it).
    export.json      input format, classes, size range, what was checked and how well.

The files are written into a temporary folder in --output and replace an earlier export's only
once all of them are written: an export that fails or is stopped half-way leaves the earlier
files as they were (a killed export's temporary folder is removed by the next export). (A failed check, exit 1, still writes them, with its figures in export.json.)

Static in the exported graph: the number of subdivision points and steps, the classes and the
weights (batch norm folded in unless MODEL.INFERENCE.FOLD_BN False). Height and width must lie in
[--min-size, --max-size]. Not exported: sliding-window inference and test-time augmentation
(Python loops around the exported whole-image model; the tool refuses a config with them on) and
the resizing to INPUT.MIN_SIZE_TEST that DefaultPredictor does before the model.

MODEL.WEIGHTS (--weights, --run) must be given - the tool does not export a randomly initialised
model - and fill every tensor of the config's model (else one error naming the tensors missing or
of another shape; --partial-weights exports anyway). Class names that are given (--classes,
--register-folder) or carried by the checkpoint but are not the model's classes are an error;
with none given or known, export.json has "classes": null and the tool warns. An --output that
is a file, or whose files would replace the config, the weights or a --check-image file, is
refused; a full disk is one line, exit 1, with an earlier export left as it was.

The check runs every exported file (ONNX with onnxruntime) on random images of each --check-size
and on each --check-image file at its own size, and compares with the eager model: the largest
logit difference from the eager model as exported (exporter fidelity) and the share of pixels whose
class agrees with the eager model as loaded. It exits 1 when that share is below
--min-agreement (default 0.999) for any input. ONNX needs `pip install onnx onnxscript onnxruntime`.
"""
import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import time

import numpy as np
import torch

import pointrend_seg  # noqa: F401  (first: registers the components, imports Detectron2 quietly)

from detectron2.utils.logger import setup_logger

from pointrend_seg.data import NoClassNamesError, read_image_file
from pointrend_seg.engine import load_inference_model
from pointrend_seg.engine.predictor import require_weights
from pointrend_seg.evaluation import ResultWriteError
from pointrend_seg.files import is_disk_full, remove_stale_temp_files, temp_folder
from pointrend_seg.engine.cli import (
    add_class_name_arguments,
    add_config_arguments,
    add_debug_argument,
    add_partial_weights_argument,
    class_names_for,
    config_from_args,
    debug_requested,
    parse_tool_args,
    refuse_output_folder_over_a_file,
    refuse_output_over_inputs,
    run_tool,
    setup_tool_output,
)
from pointrend_seg.modeling import InferenceOptions, prepare_for_inference
from pointrend_seg.modeling.export import (
    ExportError,
    check_size_range,
    compare_logits,
    export_onnx,
    export_program,
    save_exported_program,
)

logger = logging.getLogger("pointrend_seg.export")

FORMATS = ("onnx", "torch_export")
# What --output receives.
OUTPUT_FILES = ("model.onnx", "model.pt2", "export.json")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--output", required=True, help="folder for the exported files")
    p.add_argument("--format", choices=FORMATS + ("both",), default="both")
    p.add_argument("--min-size", type=int, default=32, help="smallest height/width accepted")
    p.add_argument("--max-size", type=int, default=4096, help="largest height/width accepted")
    p.add_argument("--check-size", action="append", dest="check_sizes", metavar="HxW",
                   help="size of a random check image (repeatable; default 128x160 and 97x131); "
                        "the first check input also traces the export")
    p.add_argument("--check-image", action="append", dest="check_images", default=[],
                   metavar="FILE", help="an image file checked at its own size (repeatable)")
    p.add_argument("--min-agreement", type=float, default=0.999,
                   help="least share of pixels whose class the exported model must agree on")
    p.add_argument("--no-check", action="store_true", help="export only")
    add_class_name_arguments(p)
    add_partial_weights_argument(p)
    add_debug_argument(p)
    p.add_argument("opts", nargs="*", metavar="KEY VALUE",
                   help="config overrides, e.g. MODEL.WEIGHTS model.pth (flags may follow)")
    args = parse_tool_args(p, argv)
    if args.check_sizes is None:
        args.check_sizes = ["128x160", "97x131"]
    args.format = FORMATS if args.format == "both" else (args.format,)
    return args


def parse_size(value: str):
    try:
        h, w = (int(s) for s in value.lower().split("x"))
    except ValueError:
        raise ExportError(
            f"--check-size takes HEIGHTxWIDTH, e.g. 512x1024; got {value!r}") from None
    return h, w


def check_inputs(args, cfg):
    """[(name, (1, 3, H, W) float32 image)]: random images of --check-size, then --check-image."""
    g = torch.Generator().manual_seed(0)
    inputs = [(f"random {h}x{w}", torch.rand(1, 3, h, w, generator=g) * 255)
              for h, w in map(parse_size, args.check_sizes)]
    for path in args.check_images:
        image = read_image_file(path, cfg.INPUT.FORMAT, cfg.INPUT.MAX_IMAGE_PIXELS)  # (H, W, 3)
        inputs.append((path, torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
                       .float()[None]))
    for name, x in inputs:
        if not (args.min_size <= min(x.shape[-2:]) and max(x.shape[-2:]) <= args.max_size):
            raise ExportError(f"check input {name}: {tuple(x.shape[-2:])} is outside "
                              f"[--min-size {args.min_size}, --max-size {args.max_size}]")
    return inputs


def class_names(run, args, weights=None):
    """The model's class names (--classes, --register-folder, the checkpoint's, the config's
    datasets), or None when none are given or known: export does not need them, but export.json
    is where a deployment finds them. Names that are given or found but do not fit the model
    (another number, a file that is no list of names) are a ConfigError."""
    try:
        return class_names_for(run, args, weights)[0]
    except NoClassNamesError as e:
        logger.warning("export.json will have no class names (give them with --classes a,b,c "
                       "or a text file, or --register-folder as for training): %s", e)
        return None


def onnx_runner(path):
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("checking the ONNX file needs onnxruntime: pip install onnxruntime "
                          "(or --no-check)") from None
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="pointrend_seg")
    with contextlib.ExitStack() as cleanup:  # the staging folder, whatever happens
        return run_tool(lambda: export(args, cleanup), prog="export_model.py",
                        debug=args.debug or debug_requested())


@contextlib.contextmanager
def disk_full_is_one_line(output):
    """A full disk (or quota) while the export is written into ``output``: a
    :class:`ResultWriteError` (one line, exit 1) instead of the OSError's traceback."""
    try:
        yield
    except BaseException as e:
        if is_disk_full(e):
            raise ResultWriteError(
                f"no space left on the device while writing the export into {output}: nothing "
                "of it was published, an earlier export there is as it was; free some space "
                "and export again") from None
        raise


def publish(staging, output, files):
    """
    Move the files written in ``staging`` to ``output``, each replacing its earlier version
    atomically, export.json last; warn about an earlier export's model file that this export did
    not write (another --format): export.json lists only this export's ``files``.
    """
    names = sorted(os.listdir(staging), key=lambda name: name == "export.json")
    for name in names:
        os.replace(os.path.join(staging, name), os.path.join(output, name))
    logger.info("written to %s: %s", output, ", ".join(names))
    for name in ("model.onnx", "model.pt2"):
        path = os.path.join(output, name)
        if path not in files.values() and os.path.exists(path):
            logger.warning("%s is from an earlier export (this one wrote %s); export.json lists "
                           "this export's files", path, ", ".join(files.values()) or "no model")


def export(args, cleanup) -> int:
    """The tool with parsed ``args``: the files are written into a temporary folder in --output
    (removed by ``cleanup``) and moved over the earlier ones only once all are written."""
    # exported on CPU; the ONNX / program runs anywhere
    run, weights = config_from_args(args, device="cpu")
    require_weights(run, weights, tool=True)  # not a randomly initialised model
    refuse_output_folder_over_a_file(args.output)
    cfg = run.settings  # the settings read below
    names = class_names(run, args, weights)
    inputs = check_inputs(args, cfg)
    if not inputs:
        raise ExportError("--check-size or --check-image must give at least one input "
                          "(the first traces the export)")
    read = {"config file": args.config_file or os.path.join(args.run, "config.yaml"),
            "weights file": weights.split("?")[0]}
    read.update((f"--check-image file {i + 1}", path)
                for i, path in enumerate(args.check_images))
    refuse_output_over_inputs([os.path.join(args.output, name) for name in OUTPUT_FILES], read)
    model = load_inference_model(run, weights=weights, partial_weights=args.partial_weights)
    check_size_range(args.min_size, args.max_size, model.size_divisibility)
    with torch.no_grad():
        loaded = [model([{"image": x[0]}])[0]["sem_seg"][None] for _, x in inputs]
    handle = prepare_for_inference(model, InferenceOptions(fold_bn=cfg.MODEL.INFERENCE.FOLD_BN))
    # exited after the staging folder's removal (registered below): its error is the last
    cleanup.enter_context(disk_full_is_one_line(args.output))
    os.makedirs(args.output, exist_ok=True)
    remove_stale_temp_files(args.output)  # e.g. the staging folder of a killed export
    staging = temp_folder(args.output, "export")
    cleanup.callback(shutil.rmtree, staging, ignore_errors=True)
    example = inputs[0][1]
    runners, files, program = {}, {}, None
    if "torch_export" in args.format:
        start = time.perf_counter()
        program = export_program(model, example, args.min_size, args.max_size)
        files["torch_export"] = os.path.join(args.output, "model.pt2")
        save_exported_program(program, os.path.join(staging, "model.pt2"))
        runners["torch_export"] = program.module()
        logger.info("torch.export program made in %.1f s", time.perf_counter() - start)
    if "onnx" in args.format:
        start = time.perf_counter()
        files["onnx"] = os.path.join(args.output, "model.onnx")
        try:
            export_onnx(model, example, os.path.join(staging, "model.onnx"), args.min_size,
                        args.max_size, program=program)
        except ImportError as e:
            raise ExportError(f"ONNX export needs onnx and onnxscript ({e}): pip install onnx "
                              "onnxscript onnxruntime") from None
        logger.info("ONNX made in %.1f s", time.perf_counter() - start)
        if not args.no_check:
            runners["onnx"] = onnx_runner(os.path.join(staging, "model.onnx"))

    checks, failed = [], False
    if not args.no_check:
        print(f"{'format':<13} {'input':<40} {'max |diff| vs eager':>20} {'class agreement':>16}")
        for (name, x), reference in zip(inputs, loaded):
            with torch.no_grad():
                as_exported = model([{"image": x[0]}])[0]["sem_seg"][None]
                for fmt, run in runners.items():
                    got = run(x)
                    diff, _ = compare_logits(got, as_exported)
                    _, agree = compare_logits(got, reference)
                    ok = agree >= args.min_agreement
                    failed |= not ok
                    checks.append({"format": fmt, "input": name, "size": list(x.shape[-2:]),
                                   "max_abs_diff_vs_eager": diff, "class_agreement": agree})
                    print(f"{fmt:<13} {name[-40:]:<40} {diff:>20.2e} {agree:>15.4%}"
                          + ("" if ok else f"  < {args.min_agreement:.2%}"))
    handle.undo()
    with open(os.path.join(staging, "export.json"), "w") as f:
        json.dump({
            "files": files, "input": {"name": "images", "shape": ["B", 3, "H", "W"],
                                      "dtype": "float32", "format": cfg.INPUT.FORMAT,
                                      "range": [0, 255],
                                      "height_width": [args.min_size, args.max_size]},
            "output": {"name": "sem_seg", "shape": ["B", cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
                                                    "H", "W"], "dtype": "float32"},
            "classes": names, "batch_norm_folded": cfg.MODEL.INFERENCE.FOLD_BN,
            "weights": weights, "checks": checks,
        }, f, indent=1)
    publish(staging, args.output, files)
    if failed:
        print(f"export_model.py: error: the exported model disagrees with the eager model on more "
              f"than {1 - args.min_agreement:.2%} of the pixels of some input", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    setup_tool_output()
    sys.exit(run_tool(main, prog="export_model.py", debug=debug_requested()))
