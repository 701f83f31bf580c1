#!/usr/bin/env python
"""
Check whole datasets before training: every image/label pair is read (in parallel, with a
progress bar) by the training mapper's readers and checks, and one report per dataset lists
every problem with its file, the class histogram, the ignored fraction, classes that never
appear, and warnings for suspicious labels (0/255 binary masks, a high ignored fraction).

    tools/check_dataset.py voc_2012_sem_seg_train voc_2012_sem_seg_val
    tools/check_dataset.py --register-folder cracks img/ masks/ background,crack --label-map 255:1
    tools/check_dataset.py --config-file CFG            # DATASETS.TRAIN and DATASETS.TEST of CFG
    tools/check_dataset.py --config-file CFG.py         # a Python config: its dataloader's sets

Classes and ignore label come from each dataset's metadata, or with --config-file (either kind,
read as training reads it) from the model (MODEL.SEM_SEG_HEAD.NUM_CLASSES / IGNORE_VALUE, or
the Python config's mappers), checked against the metadata first.
Results are cached (~/.cache/pointrend_seg/dataset_checks, or --cache-dir) by file path,
modification time and size: checking an unchanged dataset again reads no image.
tools/train_net.py runs the same check at its start (DATASETS.CHECK.*).

Image and label files of more than --max-image-pixels pixels (default INPUT.MAX_IMAGE_PIXELS of
--config-file, else 100 megapixels; 0: no limit) are a problem found from their header, without
decoding them: the limit training, evaluation and tools/demo.py apply. With --config-file, an
image that the config's resizes (INPUT.MIN_SIZE_* / MAX_SIZE_*) bring to a 0-pixel side (e.g.
3000x3) is a "degenerate image".

--json PATH must not be one of the files it would replace: the config file, a class-names file,
or an image or label of a checked dataset (refused before any file is read). If it cannot be
written (no space left, no permission), the reports are printed and one line names the path.
A cache that cannot be written is a warning: the report is complete.

Exit status: 0 if no dataset has a problem (warnings allowed), 1 otherwise, 2 for a bad config or
command line, or a --json file that cannot be written (one message; --debug shows the
traceback).
"""
import argparse
import difflib
import json
import logging
import os
import sys

import pointrend_seg  # noqa: F401  (first: registers the components, imports Detectron2 quietly)

from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

from pointrend_seg.config import DEFAULT_MAX_IMAGE_PIXELS, ConfigError, load_any_config
from pointrend_seg.data import check_dataset
from pointrend_seg.data.dataset_check import check_options
from pointrend_seg.engine import as_run_config
from pointrend_seg.files import atomic_write
from pointrend_seg.engine.cli import (
    ToolUsageError,
    add_debug_argument,
    add_register_folder_argument,
    debug_requested,
    parse_tool_args,
    refuse_output_over_inputs,
    registered_datasets,
    run_tool,
    setup_tool_output,
)


def argument_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", default="", metavar="FILE",
                        help="check DATASETS.TRAIN/TEST of this config against its model")
    add_register_folder_argument(parser)
    parser.add_argument("--num-workers", type=int, default=None,
                        help="reader processes (default: one per CPU)")
    parser.add_argument("--cache-dir", default=None,
                        help="cache directory (default: ~/.cache/pointrend_seg/dataset_checks)")
    parser.add_argument("--no-cache", action="store_true", help="read every file again")
    parser.add_argument("--max-ignored-fraction", type=float, default=None,
                        help="warn above this fraction of ignored label pixels (default 0.5)")
    parser.add_argument("--max-image-pixels", type=int, default=None, metavar="N",
                        help="files with more pixels are a problem (default: INPUT.MAX_IMAGE_PIXELS"
                        f" of --config-file, else {DEFAULT_MAX_IMAGE_PIXELS}; 0: no limit)")
    parser.add_argument("--json", metavar="PATH", help="also write the reports as JSON (not over "
                        "an input: the config, a class-names file, a dataset's image or label)")
    add_debug_argument(parser)
    parser.add_argument("datasets", nargs="*", metavar="DATASET ... [KEY VALUE ...]",
                        help="registered dataset names, then config overrides (with "
                        "--config-file); flags may come anywhere")
    return parser


def parse_args(argv=None):
    """The arguments; ``args.opts``: the config overrides that follow the dataset names."""
    return parse_tool_args(argument_parser(), argv, list_dests=("datasets",))


def check_registered(names, source):
    """Raise one :class:`ConfigError` naming every dataset of ``names`` (from ``source``) that is
    not registered, each with the closest registered names (a typo would otherwise surface as
    "no stuff_classes ... pass num_classes")."""
    registered = DatasetCatalog.list()
    missing = [n for n in names if n not in registered]
    if not missing:
        return
    hints = []
    for name in missing:
        close = difflib.get_close_matches(name, registered, n=3, cutoff=0.6)
        hints.append(f"{name!r}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
    raise ConfigError(
        f"dataset(s) not registered ({source}): {'; '.join(hints)}. Known are the builtin "
        "datasets of Detectron2 and pointrend_seg and those of --register-folder NAME IMAGE_DIR "
        "MASK_DIR CLASSES"
    )


def input_files(args, dicts):
    """(what, path) of every file the check reads: --config-file, the --register-folder
    class-names files and each image and label of ``dicts`` ({dataset: its dicts}); lazily."""
    if args.config_file:
        yield "config file (--config-file)", args.config_file
    for spec in args.register_folder:
        if os.path.isfile(spec[3]):
            yield f"class names file of --register-folder {spec[0]}", spec[3]
    for name, records in dicts.items():
        for i, record in enumerate(records):
            yield f"image (file_name) of sample {i} of dataset {name!r}", record.get("file_name")
            yield (f"label (sem_seg_file_name) of sample {i} of dataset {name!r}",
                   record.get("sem_seg_file_name"))


def check_json_path(path, args, dicts) -> None:
    """Refuse a --json ``path`` before any file is read: one of the inputs (it would replace
    it: before, a ground-truth mask or the config silently became the report), a folder, or in
    a folder that does not exist (it would fail only after the whole check)."""
    refuse_output_over_inputs([path], input_files(args, dicts))
    if os.path.isdir(path):
        raise ToolUsageError(f"--json {path} is a folder: give the path of a file to write")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ToolUsageError(f"--json {path}: the folder {folder} does not exist")


def write_json(path, reports) -> None:
    """Write the reports to ``path`` whole or not at all; a failure (no space left, no
    permission, ...) is one line naming the path (a ToolUsageError: exit status 2), after the
    reports were printed (before: a traceback)."""
    try:
        atomic_write(path, lambda f: json.dump([r.to_dict() for r in reports], f, indent=1),
                     binary=False)
    except OSError as e:
        raise ToolUsageError(
            f"cannot write --json {path} ({type(e).__name__}: {e.strerror or e}); nothing was "
            "written under that name, the reports above are complete") from None


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="pointrend_seg")
    registered_datasets(args)  # a bad class-names file: one line
    names = list(args.datasets) + [spec[0] for spec in args.register_folder
                                   if spec[0] not in args.datasets]
    cfg = None
    if args.opts and not args.config_file:
        argument_parser().error(f"config overrides {args.opts} need --config-file")
    if args.config_file:  # either kind, read as training reads it
        run = as_run_config(load_any_config(args.config_file, args.opts))
        cfg = run.settings
        if not names:
            names = list(dict.fromkeys(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)))
    if not names:
        argument_parser().error("name a DATASET, --register-folder one, or give --config-file")
    check_registered(names, f"DATASETS.TRAIN / TEST of {args.config_file}"
                     if cfg is not None and not args.datasets else "the command line")
    dicts = {name: DatasetCatalog.get(name) for name in names}  # the lists; no file read yet
    if args.json:
        check_json_path(args.json, args, dicts)
    options = {"num_workers": args.num_workers, "cache_dir": args.cache_dir,
               "use_cache": not args.no_cache}
    if cfg is not None:
        options.update(num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
                       ignore_label=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE, resizes=run.resizes(),
                       max_ignored_fraction=cfg.DATASETS.CHECK.MAX_IGNORED_FRACTION,
                       max_image_pixels=cfg.INPUT.MAX_IMAGE_PIXELS)
    for key in ("max_ignored_fraction", "max_image_pixels"):  # the command line's first
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    # the flags by their own names (the library's check would name the YAML keys)
    flags = {"DATASETS.CHECK.NUM_WORKERS": "--num-workers"}
    if args.max_ignored_fraction is not None:
        flags["DATASETS.CHECK.MAX_IGNORED_FRACTION"] = "--max-ignored-fraction"
    check_options(args.num_workers, options.get("max_ignored_fraction", 0.5), flags)
    reports = [check_dataset(name, dicts=dicts[name], **options) for name in names]
    for report in reports:
        print(report.format(), flush=True)
    if args.json:
        write_json(args.json, reports)
    return 1 if any(r.problems for r in reports) else 0


if __name__ == "__main__":
    logging.captureWarnings(True)
    setup_tool_output()
    sys.exit(run_tool(main, prog="check_dataset.py", debug=debug_requested()))
