"""Training and evaluation on Detectron2's engine: a config of either kind read once
(:mod:`.run_config`), the start of a run (:mod:`.run`), the one trainer (:mod:`.trainer`), one
iteration (:mod:`.train_step`), the resumable training stream (:mod:`.train_data`), exact resume
(:mod:`.resume`), checkpoints (:mod:`.checkpoint`), evaluation (:mod:`.evaluation`), multi-process
helpers (:mod:`.distributed`), a predictor (:mod:`.predictor`), the tools' command-line helpers
(:mod:`.cli`) and the one compatibility module (:mod:`.compat`)."""
from .checkpoint import (
    BackboneMismatchError,
    CheckpointReadError,
    CheckpointWriteError,
    IncompleteWeightsError,
    SafeCheckpointer,
    UnsafeCheckpointError,
)
from .config_checks import check_dataset_config, check_solver_config
from .distributed import adapt_norm_to_world_size, launch
from .predictor import build_predictor, load_inference_model
from .resume import ExactResume
from .run import RunPlan, prepare_run
from .run_config import PythonRunConfig, RunConfig, as_run_config
from .train_data import ResumableTrainLoader, ResumableTrainingSampler
from .train_step import NonFiniteLossError, TrainStep
from .trainer import Trainer

__all__ = [
    "BackboneMismatchError", "CheckpointReadError", "CheckpointWriteError", "ExactResume",
    "IncompleteWeightsError", "NonFiniteLossError", "PythonRunConfig", "ResumableTrainLoader",
    "ResumableTrainingSampler", "RunConfig", "RunPlan", "SafeCheckpointer", "TrainStep", "Trainer",
    "UnsafeCheckpointError", "adapt_norm_to_world_size", "as_run_config", "build_predictor",
    "check_dataset_config", "check_solver_config", "launch", "load_inference_model", "prepare_run",
]
