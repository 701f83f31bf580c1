"""
Training and evaluation on Detectron2's engine: the trainer (:mod:`.trainer`), one iteration
(:mod:`.train_step`), hooks, multi-process helpers (:mod:`.distributed`), checkpoints, the
resumable training stream, dataset-vs-model checks, the whole-dataset check at the start of a
run (:mod:`.data_checks`), the one compatibility module (:mod:`.compat`) and a predictor for
our configs (:mod:`.predictor`).
"""
from .checkpoint import (
    BackboneMismatchError,
    CheckpointReadError,
    CheckpointWriteError,
    SafeCheckpointer,
    UnsafeCheckpointError,
    atomic_write,
)
from .config_checks import check_dataset_config, check_solver_config
from .data_checks import check_run_datasets
from .distributed import adapt_norm_to_world_size, launch
from .hooks import ReseedEachIteration, RestoreMetricHistory
from .predictor import build_predictor
from .train_data import ResumableTrainLoader, ResumableTrainingSampler
from .train_step import NonFiniteLossError, TrainStep
from .trainer import Trainer
