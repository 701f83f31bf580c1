"""
The start of a run: the checks that need only the config, before a tool writes into the run
folder (:func:`check_config`), and every check that needs the datasets, once, before anything is
built (:func:`prepare_run`), kept in a :class:`RunPlan` that ``Trainer`` / ``Trainer.test`` build
their loaders from (they prepare one themselves when given none), so no check runs twice.
"""
from dataclasses import dataclass, field
from typing import Dict, FrozenSet

from detectron2.utils import comm

from ..config import check_pointrend_seg_keys
from ..data.dataset_check import DatasetReport, check_options
from ..evaluation.boundary import check_boundary_options
from .config_checks import check_dataset_config, check_seed
from .data_checks import check_run_datasets
from .run_config import as_run_config

__all__ = ["RunPlan", "check_config", "prepare_run"]


@dataclass(frozen=True)
class RunPlan:
    """What the start-up checks found: ``reports`` (``{dataset: DatasetReport}``, empty when
    ``DATASETS.CHECK.ENABLED`` is off) and ``skipped``, the image files (``file_name``) of the
    samples left out by ``DATASETS.CHECK.SKIP_BAD``."""

    reports: Dict[str, DatasetReport] = field(default_factory=dict)
    skipped: FrozenSet[str] = frozenset()

    def skipped_in(self, dataset_name: str) -> FrozenSet[str]:
        """The left-out image files of one dataset."""
        report = self.reports.get(dataset_name)
        return frozenset(report.bad_images) & self.skipped if report else frozenset()


def check_config(cfg, *, train: bool = True):
    """
    Every check that needs only the config (either kind), reading no dataset file and writing
    nothing: keys, ``SEED``, for training the solver keys and precision, the boundary and dataset
    check options, the mappers' resizes, and the parts built on the CPU (the model; for training
    the optimizer and LR schedule). ``tools/train_net.py`` runs it before writing ``config.yaml``.

    Returns:
        (model, optimizer): on the CPU; the optimizer is None unless ``train``.

    Raises:
        ConfigError: as the trainer would, naming the key.
    """
    run = as_run_config(cfg)
    check_pointrend_seg_keys(run.settings)
    check_seed(run.settings, run.key_names, comm.get_world_size())
    if train:
        run.check_training()
    boundary = run.settings.TEST.BOUNDARY_EVAL
    if boundary.ENABLED:  # what the evaluation after training would refuse
        check_boundary_options(boundary.BF_TOLERANCE, boundary.BIOU_DILATION)
    check_options(run.settings.DATASETS.CHECK.NUM_WORKERS,
                  run.settings.DATASETS.CHECK.MAX_IGNORED_FRACTION, run.key_names)
    datasets = (*run.settings.DATASETS.TRAIN, *run.settings.DATASETS.TEST) if train else \
        run.settings.DATASETS.TEST
    if datasets:  # the mappers' resizes (INPUT.MIN_SIZE_* / MAX_SIZE_*), as prepare_run reads them
        run.resizes()
    model, optimizer = run.build_model(device="cpu"), None
    if train:
        optimizer = run.build_optimizer(model)
        run.build_lr_scheduler(optimizer)
    return model, optimizer


def prepare_run(cfg, *, train: bool = True) -> RunPlan:
    """
    Check a run's config (either kind) and datasets - ``DATASETS.TRAIN`` and ``TEST``, or with
    ``train`` False ``TEST`` only - once (collective: the main process reads the files, the
    others receive its reports); the solver keys are :func:`check_config`'s.

    Raises:
        ConfigError: datasets that do not fit the model (classes, ignore label).
        DatasetCheckError: samples with problems, without ``DATASETS.CHECK.SKIP_BAD``.
    """
    run = as_run_config(cfg)
    cfg = run.settings
    check_pointrend_seg_keys(cfg)
    keys = ("DATASETS.TRAIN", "DATASETS.TEST") if train else ("DATASETS.TEST",)
    check_dataset_config(cfg, keys=keys)
    names = [name for key in keys for name in cfg[key.split(".")[0]][key.split(".")[1]]]
    reports = check_run_datasets(cfg, names, resizes=run.resizes() if names else ())
    skipped = frozenset(image for r in reports.values() for image in r.bad_images)
    return RunPlan(reports=reports, skipped=skipped)
