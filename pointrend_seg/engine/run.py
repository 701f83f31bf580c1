"""
The start of a run: the checks that need only the config, before a tool writes into the run
folder (:func:`check_config`); every check that needs the config and the datasets, once, before
anything is built (:func:`prepare_run`), and what the run keeps of it (:class:`RunPlan`).

``tools/train_net.py`` calls it once per process (training or ``--eval-only``) and gives the plan
to ``Trainer`` / ``Trainer.test``, which build their loaders from it: no check runs twice in a run
and nothing is read back from the check's cache. Called without a plan (a ``Trainer(cfg)`` in
your own code, ``Trainer.test(cfg, model)``), they prepare one themselves.
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
    """
    What the start-up checks found, for the rest of the run.

    Attributes:
        reports: ``{dataset name: DatasetReport}`` of the checked datasets (empty when
            ``DATASETS.CHECK.ENABLED`` is off).
        skipped: image files (``file_name``) of the samples left out because the check found
            problems in them (``DATASETS.CHECK.SKIP_BAD``; otherwise the check stopped the run).
    """

    reports: Dict[str, DatasetReport] = field(default_factory=dict)
    skipped: FrozenSet[str] = frozenset()

    def skipped_in(self, dataset_name: str) -> FrozenSet[str]:
        """The left-out image files of one dataset."""
        report = self.reports.get(dataset_name)
        return frozenset(report.bad_images) & self.skipped if report else frozenset()


def check_config(cfg, *, train: bool = True):
    """
    Every check that needs only the config (either kind), reading no dataset file and writing
    nothing: pointrend_seg's keys, ``SEED``, for training the solver keys (a non-empty
    ``DATASETS.TRAIN`` too) and the precision, the boundary evaluation's widths, the dataset
    check's options, the mappers' resize sizes, and the parts built on the CPU - the model (each
    component checks its own keys) and, for training, the optimizer and the LR schedule.
    ``tools/train_net.py`` runs it before ``OUTPUT_DIR/config.yaml`` is written, so a start that
    fails here leaves a run folder as it was.

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
    Check a run's config and datasets, once (collective: call it on every process; the main
    process reads the files, the others receive its reports).

    Args:
        cfg: a config of either kind, or a :class:`~.run_config.RunConfig`.
        train: a training run (``DATASETS.TRAIN`` and ``DATASETS.TEST``); False for an
            evaluation (``DATASETS.TEST`` only). The solver keys are :func:`check_config`'s and
            the trainer's, which checks them before it prepares a run.

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
