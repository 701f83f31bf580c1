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

Exit status: 0 if no dataset has a problem (warnings allowed), 1 otherwise, 2 for a bad config or
command line (one message; --debug shows the traceback).
"""
import argparse
import difflib
import json
import logging
import sys

import pointrend_seg  # noqa: F401  (first: registers the components, imports Detectron2 quietly)

from detectron2.utils.logger import setup_logger

from pointrend_seg.config import DEFAULT_MAX_IMAGE_PIXELS, ConfigError, load_any_config
from pointrend_seg.data import check_dataset
from pointrend_seg.engine import as_run_config
from pointrend_seg.files import atomic_write
from pointrend_seg.engine.cli import (
    add_debug_argument,
    add_register_folder_argument,
    debug_requested,
    parse_tool_args,
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
    parser.add_argument("--json", metavar="PATH", help="also write the reports as JSON")
    add_debug_argument(parser)
    parser.add_argument("datasets", nargs="*", metavar="DATASET ... [KEY VALUE ...]",
                        help="registered dataset names, then config overrides (with "
                        "--config-file); flags may come anywhere")
    return parser


def parse_args(argv=None):
    """The arguments; ``args.opts``: the config overrides that follow the dataset names."""
    args = parse_tool_args(argument_parser(), argv, list_dests=("datasets",), overrides_dest="opts")
    return args


def check_registered(names, source):
    """Raise one :class:`ConfigError` naming every dataset of ``names`` (from ``source``) that is
    not registered, each with the closest registered names (a typo would otherwise surface as
    "no stuff_classes ... pass num_classes")."""
    from detectron2.data import DatasetCatalog

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
    options = {"num_workers": args.num_workers, "cache_dir": args.cache_dir,
               "use_cache": not args.no_cache}
    if args.max_ignored_fraction is not None:
        options["max_ignored_fraction"] = args.max_ignored_fraction
    elif cfg is not None:
        options["max_ignored_fraction"] = cfg.DATASETS.CHECK.MAX_IGNORED_FRACTION
    if cfg is not None:
        options.update(num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
                       ignore_label=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
                       resizes=run.resizes())
    if args.max_image_pixels is not None:
        options["max_image_pixels"] = args.max_image_pixels
    elif cfg is not None:
        options["max_image_pixels"] = cfg.INPUT.MAX_IMAGE_PIXELS
    reports = [check_dataset(name, **options) for name in names]
    for report in reports:
        print(report.format())
    if args.json:
        atomic_write(args.json, lambda f: json.dump([r.to_dict() for r in reports], f, indent=1),
                     binary=False)
    return 1 if any(r.problems for r in reports) else 0


if __name__ == "__main__":
    logging.captureWarnings(True)
    setup_tool_output()
    sys.exit(run_tool(main, prog="check_dataset.py", debug=debug_requested()))
