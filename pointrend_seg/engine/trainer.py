"""
Training and evaluation on Detectron2's ``DefaultTrainer``, with our mapper and evaluators, and:

* multi-process training on CPU (gloo): DDP without ``device_ids``, and ``SyncBN`` mapped to
  Detectron2's all-reduce based ``naiveSyncBN`` (:func:`adapt_norm_to_world_size`);
* crash-safe, exactly resumable runs: atomic checkpoints (:class:`SafeCheckpointer`) holding
  the model, optimizer, LR scheduler, iteration and the training stream's seed; a training
  stream whose batches are a function of (seed, iteration) (:mod:`.train_data`); the RNGs of the
  model (dropout, point sampling) reseeded from (seed, iteration, rank) before every iteration.
  A run resumed from the checkpoint of iteration ``i`` computes exactly the losses that the
  uninterrupted run computed after ``i``;
* non-finite losses stop the run on every process before the optimizer step, with the
  iteration and the loss names (:class:`NonFiniteLossError`), and no checkpoint is written
  afterwards;
* config validation: the datasets against the model here (:mod:`.config_checks`); each model
  component checks its own keys when it is built.
"""
import contextlib
import json
import logging
import os
import random
import warnings
import weakref

import numpy as np
import torch

from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.engine import DefaultTrainer, HookBase, hooks
from detectron2.engine import defaults as d2_defaults
from detectron2.evaluation import DatasetEvaluators, SemSegEvaluator
from detectron2.projects.deeplab import build_lr_scheduler as build_deeplab_lr_scheduler
from detectron2.solver import get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter

from ..data import SemSegDatasetMapper
from ..evaluation import BoundaryEvaluator
from .checkpoint import SafeCheckpointer
from .config_checks import check_dataset_config
from .train_data import _STEP, build_resumable_train_loader, derive_seed

__all__ = ["NonFiniteLossError", "Trainer", "adapt_norm_to_world_size"]

logger = logging.getLogger(__name__)


_TORCH_SYNC_BN = ("SyncBN", "nnSyncBN")
_NORM_KEYS = (("RESNETS", "NORM"), ("SEM_SEG_HEAD", "NORM"))


def adapt_norm_to_world_size(cfg, world_size=None):
    """
    torch's ``SyncBatchNorm`` only runs on GPUs: for a CPU model (``MODEL.DEVICE`` cpu) trained
    by more than one process, ``MODEL.RESNETS.NORM`` / ``MODEL.SEM_SEG_HEAD.NORM`` "SyncBN"
    (or "nnSyncBN") become Detectron2's "naiveSyncBN" (all-reduce of the batch statistics,
    which gloo supports), with a warning. Other configs are returned unchanged.

    Returns:
        the config itself, or an adapted copy (frozen if ``cfg`` was).
    """
    world_size = comm.get_world_size() if world_size is None else world_size
    if world_size <= 1 or not cfg.MODEL.DEVICE.startswith("cpu"):
        return cfg
    keys = [k for k in _NORM_KEYS if cfg.MODEL[k[0]][k[1]] in _TORCH_SYNC_BN]
    if not keys:
        return cfg
    frozen = cfg.is_frozen()
    cfg = cfg.clone()
    cfg.defrost()
    changes = []
    for group, name in keys:
        changes.append(f"MODEL.{group}.{name}={cfg.MODEL[group][name]!r}")
        cfg.MODEL[group][name] = "naiveSyncBN"
    if frozen:
        cfg.freeze()
    logger.warning(
        f"{', '.join(changes)}: torch's SyncBatchNorm cannot run on CPU across processes; using "
        f"Detectron2's 'naiveSyncBN' instead (batch statistics all-reduced over the "
        f"{world_size} processes, same parameters and checkpoint format)"
    )
    return cfg


@contextlib.contextmanager
def _cpu_capable_ddp():
    """
    Detectron2's ``create_ddp_model`` passes ``device_ids=[local_rank]``, which torch rejects for
    a CPU model. While active, CPU models are wrapped with ``device_ids=None`` instead.
    """
    original = d2_defaults.create_ddp_model

    def create_ddp_model(model, **kwargs):
        if comm.get_world_size() > 1 and not next(model.parameters()).is_cuda:
            kwargs.setdefault("device_ids", None)
        return original(model, **kwargs)

    d2_defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = original


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; raised on every process, before the optimizer step."""

    def __init__(self, iteration, bad_losses_per_rank):
        self.iteration = iteration
        self.bad_losses = bad_losses_per_rank  # [{name: value}] per rank
        names = sorted({k for per_rank in bad_losses_per_rank for k in per_rank})
        details = "; ".join(
            f"rank {rank}: " + ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
            for rank, bad in enumerate(bad_losses_per_rank) if bad
        )
        super().__init__(
            f"Non-finite loss at iteration {iteration}: {', '.join(names)} ({details}). "
            "Training stopped before the optimizer step of that iteration; no checkpoint is "
            "written after it. Lower SOLVER.BASE_LR, raise SOLVER.WARMUP_ITERS or enable "
            "SOLVER.CLIP_GRADIENTS, then resume from the last checkpoint."
        )


class _FiniteLossCheck:
    """
    Mixin for Detectron2's SimpleTrainer / AMPTrainer: before the metrics are written (after
    backward, before ``optimizer.step``), every process learns whether any process has a
    non-finite loss, and all raise :class:`NonFiniteLossError` together. (Detectron2 alone
    raises on the main process only, after averaging, and leaves the other processes blocked.)
    """

    def _write_metrics(self, loss_dict, data_time, *args, **kwargs):
        bad = {
            k: float(v.detach().float().cpu()) for k, v in loss_dict.items()
            if not bool(torch.isfinite(v.detach()).all())
        }
        everyone = comm.all_gather(bad) if comm.get_world_size() > 1 else [bad]
        if any(everyone):
            raise NonFiniteLossError(self.iter, everyone)
        return super()._write_metrics(loss_dict, data_time, *args, **kwargs)


_CHECKED_TRAINER_CLASSES = {}


def _with_finite_loss_check(trainer):
    base = type(trainer)
    if base not in _CHECKED_TRAINER_CLASSES:
        _CHECKED_TRAINER_CLASSES[base] = type(
            f"FiniteLoss{base.__name__}", (_FiniteLossCheck, base), {}
        )
    trainer.__class__ = _CHECKED_TRAINER_CLASSES[base]
    return trainer


# Scheduler state that is progress (from the checkpoint); the rest comes from the config.
_SCHEDULER_PROGRESS = ("last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step",
                       "_is_initial")


class _ReseedEachIteration(HookBase):
    """
    Before every iteration, seed torch (CPU and CUDA), NumPy and Python RNGs from
    ``(run seed, iteration, rank)``: the model's randomness (dropout, PointRend's random points)
    at iteration ``i`` is then the same in a fresh and in a resumed run, whatever happened
    before ``i`` (data loading runs under its own seeds, see :mod:`.train_data`).
    """

    def before_step(self):
        if self.trainer.seed is None:
            return
        seed = derive_seed(self.trainer.seed, _STEP, self.trainer.iter, comm.get_rank())
        torch.manual_seed(seed)
        np.random.seed(seed % (1 << 32))
        random.seed(seed)


class Trainer(DefaultTrainer):
    """
    ``DefaultTrainer`` with the semantic-segmentation mapper, evaluators chosen from the dataset
    metadata (``evaluator_type``), DeepLab's poly learning-rate schedule, DDP on CPU, and the
    reliability features of this module (module docstring).

    Checkpoints hold ``model``, ``trainer`` (``iteration``, the LR scheduler under ``hooks``,
    ``_trainer``: the optimizer state, ``data``: the training stream's seed and shape) and
    ``iteration``.
    """

    def __init__(self, cfg):
        check_dataset_config(cfg)
        with _cpu_capable_ddp():
            super().__init__(cfg)
        _with_finite_loss_check(self._trainer)

    @property
    def seed(self):
        """
        The run's seed: that of the training stream (``SEED``, or a random one shared by the
        processes if ``SEED`` < 0; restored on resume). ``None`` (no per-iteration reseeding)
        for a train loader without one and ``SEED`` < 0.
        """
        seed = getattr(getattr(self.data_loader, "sampler", None), "seed", None)
        if seed is None and self.cfg.SEED >= 0:
            seed = self.cfg.SEED
        return seed

    # ---- building -----------------------------------------------------------------------
    @classmethod
    def build_model(cls, cfg):
        return super().build_model(adapt_norm_to_world_size(cfg))

    @classmethod
    def build_train_loader(cls, cfg):
        """
        The resumable training stream (:mod:`.train_data`): its seed is ``SEED``, or a random seed
        shared by all processes if ``SEED`` < 0 (stored in checkpoints either way).
        """
        seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
        return build_resumable_train_loader(cfg, SemSegDatasetMapper(cfg, True), seed=seed)

    def build_hooks(self):
        # DefaultTrainer.__init__ made a DetectionCheckpointer right before calling this method:
        # replace it, so that the PeriodicCheckpointer hook and resume_or_load use the safe one.
        self.checkpointer = SafeCheckpointer(
            self.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        ret = super().build_hooks()
        period = self.cfg.SOLVER.get("LOG_PERIOD", 20)
        for h in ret:
            if isinstance(h, hooks.PeriodicCheckpointer):
                assert h.checkpointer is self.checkpointer
            if isinstance(h, hooks.PeriodicWriter):
                h._period = period  # DefaultTrainer hard-codes 20
        return [_ReseedEachIteration()] + ret

    def build_writers(self):
        """Detectron2's writers, with scalars smoothed over ``SOLVER.LOG_PERIOD`` iterations."""
        window = self.cfg.SOLVER.get("LOG_PERIOD", 20)
        os.makedirs(self.cfg.OUTPUT_DIR, exist_ok=True)
        return [
            CommonMetricPrinter(self.max_iter, window_size=window),
            JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), window_size=window),
            TensorboardXWriter(self.cfg.OUTPUT_DIR, window_size=window),
        ]

    # ---- training state -----------------------------------------------------------------
    def state_dict(self):
        ret = super().state_dict()
        # Detectron2 v0.6's DefaultTrainer saves neither of these.
        ret["_trainer"] = self._trainer.state_dict()  # optimizer (and AMP grad scaler)
        if hasattr(self.data_loader, "state_dict"):
            ret["data"] = self.data_loader.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        state_dict, schedule_changed = self._schedule_from_config(state_dict)
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logger.warning(
                "The checkpoint has no optimizer state (saved by Detectron2's DefaultTrainer?): "
                "momentum buffers restart from zero"
            )
        if schedule_changed:
            # The optimizer state brought the learning rates of the old schedule.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch: get_lr() outside of step()
                lrs = self.scheduler.get_lr()
            for group, lr in zip(self.optimizer.param_groups, lrs):
                group["lr"] = lr
        if "data" in state_dict and hasattr(self.data_loader, "load_state_dict"):
            self.data_loader.load_state_dict(state_dict["data"])

    def _schedule_from_config(self, state_dict):
        """
        The LR scheduler resumes its progress (``last_epoch``) from the checkpoint but keeps the
        hyper-parameters of this run's config (``SOLVER.MAX_ITER``, ``BASE_LR``, warmup, ...),
        so that e.g. ``--resume SOLVER.MAX_ITER <more>`` extends the poly schedule instead of
        running it past its end. Returns the state dict to load and whether anything changed.
        """
        saved = state_dict.get("hooks", {}).get("LRScheduler")
        if not saved or not hasattr(self.scheduler, "state_dict"):
            return state_dict, False
        current = self.scheduler.state_dict()
        merged = {k: v for k, v in current.items()}
        for key in _SCHEDULER_PROGRESS:
            if key in saved:
                merged[key] = saved[key]
        changed = {k: (saved[k], v) for k, v in current.items()
                   if k not in _SCHEDULER_PROGRESS and k in saved and saved[k] != v}
        if changed:
            logger.info(
                "LR schedule of this config, progress of the checkpoint: "
                + ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            )
        hooks_state = dict(state_dict["hooks"], LRScheduler=merged)
        return dict(state_dict, hooks=hooks_state), bool(changed)

    def resume_or_load(self, resume=True):
        """
        Detectron2's resume_or_load (``--resume``: the last checkpoint of ``OUTPUT_DIR`` with
        all its state; otherwise ``MODEL.WEIGHTS``, weights only), then the training stream
        restarts at the resumed iteration.
        """
        if comm.is_main_process():
            self.checkpointer.remove_stale_temp_files()
        if resume and self.checkpointer.has_checkpoint():
            logger.info(f"Loading checkpoint from {self.checkpointer.get_checkpoint_file()}")
        super().resume_or_load(resume=resume)
        if hasattr(self.data_loader, "set_start_iter"):
            self.data_loader.set_start_iter(self.start_iter)
            # SimpleTrainer (v0.6) called iter() in its constructor; our loader is lazy, so
            # nothing was loaded yet and the iterator can be replaced.
            if isinstance(getattr(type(self._trainer), "_data_loader_iter", None), property):
                self._trainer._data_loader_iter_obj = None  # later Detectron2: made lazily
            else:
                self._trainer._data_loader_iter = iter(self.data_loader)
        if self.start_iter:
            logger.info(f"Resuming training at iteration {self.start_iter} (seed {self.seed})")

    def run_step(self):
        try:
            super().run_step()
        except NonFiniteLossError as e:
            self.checkpointer.disable_saving(
                f"the loss became non-finite at iteration {e.iteration}"
            )
            raise

    # ---- evaluation ---------------------------------------------------------------------
    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        # Detectron2 registers Cityscapes' trainId semantic labels as "cityscapes_sem_seg"; they are
        # ordinary label maps for SemSegEvaluator (its CityscapesSemSegEvaluator needs cityscapesscripts).
        if evaluator_type not in ("sem_seg", "cityscapes_sem_seg"):
            raise ValueError(
                f"dataset {dataset_name!r} has evaluator_type={evaluator_type!r} in its metadata; "
                "pointrend_seg evaluates 'sem_seg' and 'cityscapes_sem_seg' datasets"
            )
        evaluators = [SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder)]
        boundary = cfg.TEST.BOUNDARY_EVAL
        if boundary.ENABLED:
            evaluators.append(
                BoundaryEvaluator(
                    dataset_name, distributed=True, output_dir=output_folder,
                    bf_tolerance=boundary.BF_TOLERANCE, biou_dilation=boundary.BIOU_DILATION,
                )
            )
        return DatasetEvaluators(evaluators)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=SemSegDatasetMapper(cfg, False))

    @classmethod
    def build_optimizer(cls, cfg, model):
        """Detectron2's SGD, or AdamW when ``SOLVER.OPTIMIZER`` is "ADAMW" (same param groups)."""
        name = cfg.SOLVER.OPTIMIZER.upper()
        if name == "SGD":
            return super().build_optimizer(cfg, model)
        if name != "ADAMW":
            raise ValueError(f"SOLVER.OPTIMIZER must be 'SGD' or 'ADAMW', got {cfg.SOLVER.OPTIMIZER!r}")
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        )
        return maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
            params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY
        )

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        # Knows "WarmupPolyLR" and falls back to Detectron2's schedulers for the other names.
        return build_deeplab_lr_scheduler(cfg, optimizer)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """
        Detectron2's evaluation (every process evaluates its share of each test set; the
        evaluators gather over processes); the results also go to
        ``OUTPUT_DIR/eval_results.json``.
        """
        check_dataset_config(cfg, keys=("DATASETS.TEST",))
        results = super().test(cfg, model, evaluators)
        if comm.is_main_process() and results:
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            with open(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), "w") as f:
                json.dump(results, f, indent=1)
            # DefaultTrainer.test un-nests the results of a single dataset.
            per_dataset = results if len(cfg.DATASETS.TEST) > 1 else {cfg.DATASETS.TEST[0]: results}
            for name, res in per_dataset.items():
                line = f"{name}: mIoU = {res['sem_seg']['mIoU']:.2f}"
                if "sem_seg_boundary" in res:
                    b = res["sem_seg_boundary"]
                    line += f", boundary F = {b['mBF']:.2f}, boundary IoU = {b['mBIoU']:.2f}"
                logger.info(line)
        return results
