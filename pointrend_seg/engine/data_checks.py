"""The whole-dataset check (:mod:`pointrend_seg.data.dataset_check`) at the start of a run,
configured by ``DATASETS.CHECK.*``: docs/dataset_check.md ("Where it runs")."""
import json
import logging
import os
from typing import Dict, Sequence

from detectron2.utils import comm

from ..data.dataset_check import DatasetReport, check_dataset, raise_dataset_problems
from ..evaluation import write_result_file

__all__ = ["check_run_datasets", "without_images"]

logger = logging.getLogger(__name__)

# Rows of the error message per dataset; all rows are in the log and in dataset_check.json.
_ERROR_ROWS = 50


def check_run_datasets(cfg, names: Sequence[str], *, resizes) -> Dict[str, DatasetReport]:
    """
    Check the datasets ``names`` against the model's classes and ignore label (collective), log
    the reports and write ``OUTPUT_DIR/dataset_check.json`` (and ``skipped_samples.json``);
    ``resizes``: the smallest resizes of the run's mappers (``RunConfig.resizes``). Returns
    ``{name: report}`` ({} when ``DATASETS.CHECK.ENABLED`` is off).

    Raises:
        DatasetCheckError: problems were found and ``DATASETS.CHECK.SKIP_BAD`` is off.
    """
    check = cfg.DATASETS.CHECK
    names = list(dict.fromkeys(names))
    if not check.ENABLED or not names:
        return {}
    reports = None
    if comm.is_main_process():
        reports = [
            check_dataset(
                name, num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
                ignore_label=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
                num_workers=check.NUM_WORKERS or None, cache_dir=check.CACHE_DIR or None,
                max_ignored_fraction=check.MAX_IGNORED_FRACTION,
                max_image_pixels=cfg.INPUT.MAX_IMAGE_PIXELS, resizes=resizes)
            for name in names
        ]
    if comm.get_world_size() > 1:
        reports = comm.all_gather(reports)[0]
    output = os.path.join(cfg.OUTPUT_DIR, "dataset_check.json")
    for r in reports:
        logger.info("Dataset check:\n" + r.format(warnings=False))
        for warning in r.warnings:
            logger.warning(warning)
    if comm.is_main_process():
        write_result_file(output, lambda f: json.dump([r.to_dict() for r in reports], f,
                                                      indent=1))
    bad = [r for r in reports if r.problems]
    if bad and not check.SKIP_BAD:
        raise_dataset_problems(reports, limit=_ERROR_ROWS, where=f"the log above and {output}")
    if bad:
        skipped = [dict(p.__dict__) for r in bad for p in r.problems]
        path = os.path.join(cfg.OUTPUT_DIR, "skipped_samples.json")
        if comm.is_main_process():
            write_result_file(path, lambda f: json.dump(skipped, f, indent=1))
        logger.warning(
            "DATASETS.CHECK.SKIP_BAD: leaving out "
            + ", ".join(f"{len(r.bad_indices)} of the {r.num_samples} samples of {r.dataset!r}"
                        for r in bad)
            + f"; their problems are listed in {path}")
    return {r.dataset: r for r in reports}


def without_images(dicts, images):
    """Dataset dicts without those whose image (``file_name``) is in ``images``."""
    images = set(images)
    return [d for d in dicts if d["file_name"] not in images]

