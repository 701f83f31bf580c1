"""
Training and evaluation on Detectron2's ``DefaultTrainer`` (public extension points only: the
``build_*`` class methods, ``build_hooks`` / ``build_writers``, ``run_step``, ``state_dict``,
``resume_or_load``, ``test``; the rest goes through :mod:`.compat`), with our mapper and
evaluators, and:

* multi-process training on CPU (gloo): DDP without ``device_ids`` and ``SyncBN`` mapped to
  Detectron2's all-reduce based ``naiveSyncBN`` (:mod:`.distributed`);
* crash-safe, exactly resumable runs: atomic checkpoints (:class:`.SafeCheckpointer`) holding
  the model, optimizer, LR scheduler, iteration and the training stream's seed; a training
  stream whose batches are a function of (seed, iteration) (:mod:`.train_data`); the RNGs of the
  model (dropout, point sampling) reseeded from (seed, iteration, rank) before every iteration
  (:mod:`.hooks`). A run resumed from the checkpoint of iteration ``i`` computes exactly the
  losses that the uninterrupted run computed after ``i``;
* each iteration by :class:`.TrainStep`: float32, bfloat16 or float16 autocast
  (``SOLVER.AMP``), and non-finite losses stop the run on every process before the optimizer
  step, with the iteration and the loss names (:class:`.NonFiniteLossError`); no checkpoint is
  written afterwards, and a checkpoint becomes ``last_checkpoint`` only once the next
  iteration's loss, computed with its weights, was finite - so the error names a checkpoint
  that a resume with a lower learning rate can continue from;
* config validation: the datasets against the model here (:mod:`.config_checks`); each model
  component checks its own keys when it is built;
* the whole-dataset check of ``DATASETS.TRAIN`` and ``DATASETS.TEST`` before anything is built
  (:mod:`.data_checks`): problems stop the run, all listed, or with ``DATASETS.CHECK.SKIP_BAD``
  the samples are left out (and samples that fail later are skipped, :mod:`.train_data`);
  without it, a sample that fails during training first has the last finished iteration saved
  as a checkpoint, so ``--resume`` continues from there once the file is fixed;
* training metrics that continue across a resume: checkpoints hold the last
  ``SOLVER.LOG_PERIOD`` values of each metric, so the windowed medians logged after
  ``--resume`` are those of the uninterrupted run (:class:`.RestoreMetricHistory`).
"""
import json
import logging
import os
import warnings
import weakref

import torch

from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.engine import DefaultTrainer, TrainerBase, hooks
from detectron2.evaluation import DatasetEvaluators
from detectron2.projects.deeplab import build_lr_scheduler as build_deeplab_lr_scheduler
from detectron2.solver import get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter

from ..config import ConfigError
from ..data import BadInputError, GroundTruthReader, SemSegDatasetMapper
from ..evaluation import (
    BoundaryEvaluator,
    SegmentationEvaluator,
    describe_miou,
    format_per_class_table,
    per_class_rows,
    write_per_class_bars,
)
from ..modeling import prepare_for_inference
from .checkpoint import SafeCheckpointer
from .compat import cpu_capable_ddp
from .config_checks import check_dataset_config, check_solver_config
from .data_checks import check_run_datasets, skipped_images
from .distributed import adapt_norm_to_world_size
from .hooks import ReseedEachIteration, RestoreMetricHistory, recent_metric_history
from .train_data import build_resumable_train_loader
from .train_step import LossSpikeGuard, NonFiniteLossError, TrainStep, training_precision

__all__ = ["Trainer"]

logger = logging.getLogger(__name__)


def _is_hyper_parameter(key: str) -> bool:
    """Keys of a torch LR scheduler's state dict that come from the config, not from progress:
    the public attributes other than ``last_epoch`` (``_``-prefixed ones are its bookkeeping)."""
    return key != "last_epoch" and not key.startswith("_")


class Trainer(DefaultTrainer):
    """
    ``DefaultTrainer`` with the semantic-segmentation mapper, evaluators chosen from the dataset
    metadata (``evaluator_type``), DeepLab's poly learning-rate schedule, DDP on CPU, and the
    reliability features of this module (module docstring).

    Checkpoints hold ``model``, ``trainer`` (``iteration``, the LR scheduler under ``hooks``,
    ``_trainer``: the optimizer (and float16 grad-scaler) state as Detectron2 lays it out,
    ``data``: the training stream's seed and shape, ``metrics``: the last ``SOLVER.LOG_PERIOD``
    values of each training metric) and ``iteration``.
    """

    def __init__(self, cfg):
        check_solver_config(cfg)
        check_dataset_config(cfg)
        check_run_datasets(cfg, list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
        with cpu_capable_ddp():
            super().__init__(cfg)
        self.train_step = TrainStep(self.model, self.data_loader, self.optimizer,
                                    precision=training_precision(cfg))
        self.loss_guard = LossSpikeGuard()

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
        """Detectron2's ``build_model``, with norms that can run on the processes at hand
        (:func:`.adapt_norm_to_world_size`), in channels_last format if ``SOLVER.CHANNELS_LAST``."""
        model = super().build_model(adapt_norm_to_world_size(cfg))
        if cfg.SOLVER.CHANNELS_LAST:
            model = model.to(memory_format=torch.channels_last)
        return model

    @classmethod
    def build_train_loader(cls, cfg):
        """
        The resumable training stream (:mod:`.train_data`): its seed is ``SEED``, or a random seed
        shared by all processes if ``SEED`` < 0 (stored in checkpoints either way).
        """
        seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
        # Checked (and reported) when the trainer started: this reads the check's cache.
        reports = check_run_datasets(cfg, cfg.DATASETS.TRAIN, report=False)
        return build_resumable_train_loader(cfg, SemSegDatasetMapper(cfg, True), seed=seed,
                                            skip_images=skipped_images(reports))

    def build_hooks(self):
        """
        Detectron2's hooks with the safe checkpointer, the metric writers called every
        ``SOLVER.LOG_PERIOD`` iterations (``DefaultTrainer`` hard-codes 20), and
        :class:`.ReseedEachIteration` first.
        """
        # DefaultTrainer.__init__ made a DetectionCheckpointer right before calling this method:
        # replace it, so that the PeriodicCheckpointer hook and resume_or_load use the safe one.
        self.checkpointer = SafeCheckpointer(
            self.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )

        ret = [ReseedEachIteration(), RestoreMetricHistory()]
        for h in super().build_hooks():
            if isinstance(h, hooks.PeriodicWriter):
                h = hooks.PeriodicWriter(self.build_writers(), period=self.cfg.SOLVER.LOG_PERIOD)
            ret.append(h)
        return ret

    def build_writers(self):
        """
        Detectron2's writers, with scalars smoothed over ``SOLVER.LOG_PERIOD`` iterations; built
        once (``build_hooks`` asks twice: Detectron2's hook list, then ours).
        """
        if getattr(self, "_metric_writers", None) is None:
            window = self.cfg.SOLVER.LOG_PERIOD
            os.makedirs(self.cfg.OUTPUT_DIR, exist_ok=True)
            self._metric_writers = [
                CommonMetricPrinter(self.max_iter, window_size=window),
                JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), window_size=window),
                TensorboardXWriter(self.cfg.OUTPUT_DIR, window_size=window),
            ]
        return self._metric_writers

    # ---- training state -----------------------------------------------------------------
    # TrainerBase's (iteration, hooks), not DefaultTrainer's: the latter saves and restores its
    # inner SimpleTrainer differently in v0.6 (not at all) and main (with its own iteration and
    # hooks); the iteration's state here is the TrainStep's.
    def state_dict(self):
        ret = TrainerBase.state_dict(self)
        ret["_trainer"] = self.train_step.state_dict()
        if hasattr(self.data_loader, "state_dict"):
            ret["data"] = self.data_loader.state_dict()
        if getattr(self, "storage", None) is not None:  # during training
            ret["metrics"] = recent_metric_history(self.storage, self.cfg.SOLVER.LOG_PERIOD)
        return ret

    def load_state_dict(self, state_dict):
        state_dict, schedule_changed = self._schedule_from_config(state_dict)
        TrainerBase.load_state_dict(self, state_dict)
        if "_trainer" in state_dict:
            self.train_step.load_state_dict(state_dict["_trainer"])
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
        # Put back into the event storage when training starts (RestoreMetricHistory).
        self.resumed_metric_history = state_dict.get("metrics")

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
        merged = dict(saved)
        merged.update((k, v) for k, v in current.items() if _is_hyper_parameter(k))
        changed = {k: (saved[k], v) for k, v in current.items()
                   if _is_hyper_parameter(k) and k in saved and saved[k] != v}
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
        restarts at the resumed iteration (:class:`.TrainStep` opens it at its first step).
        """
        if comm.is_main_process():
            self.checkpointer.remove_stale_temp_files()
        if resume and self.checkpointer.has_checkpoint():
            logger.info(f"Loading checkpoint from {self.checkpointer.get_checkpoint_file()}")
        super().resume_or_load(resume=resume)
        if hasattr(self.data_loader, "set_start_iter"):
            self.data_loader.set_start_iter(self.start_iter)
        if self.start_iter:
            logger.info(f"Resuming training at iteration {self.start_iter} (seed {self.seed})")

    def train(self):
        try:
            return super().train()
        finally:  # saves outside training are written at once
            self.checkpointer.confirm_with_next_loss = False

    def run_step(self):
        """One iteration by :class:`.TrainStep` (instead of Detectron2's SimpleTrainer /
        AMPTrainer); no checkpoint is written after a non-finite loss; a sample that cannot be
        loaded first has the last finished iteration saved (:meth:`save_before_data_error`)."""
        checkpointer = self.checkpointer
        try:
            loss = self.train_step.run(self.iter)
        except NonFiniteLossError as e:
            # The checkpoint held back since the last iteration has the weights that gave it.
            checkpointer.discard_pending(
                f"its weights gave a non-finite loss at iteration {e.iteration}")
            checkpointer.disable_saving(f"the loss became non-finite at iteration {e.iteration}")
            raise e.with_resume_from(checkpointer.last_checkpoint_path()) from None
        except BadInputError as e:
            self.save_before_data_error(e)
            raise
        except BaseException:
            checkpointer.confirm_pending()  # e.g. Ctrl-C: the state was good, keep it
            raise
        spike = self.loss_guard.problem(loss)
        if spike is None:
            checkpointer.confirm_pending()
        else:
            checkpointer.discard_pending(
                f"at iteration {self.iter}, computed with its weights, {spike} (a diverging "
                "update); last_checkpoint keeps naming "
                f"{checkpointer.last_checkpoint_path() or 'nothing'}")
        self.loss_guard.add(loss)
        # A checkpoint saved after this iteration becomes last_checkpoint once the next
        # iteration's loss, computed with its weights, is finite and no spike: a diverging
        # update is never the state to resume from. The state after the last iteration is
        # written at once.
        checkpointer.confirm_with_next_loss = self.iter + 1 < self.max_iter

    def save_before_data_error(self, error):
        """
        A training sample failed to load at iteration ``self.iter`` (before its forward pass):
        save the state of the last finished iteration as ``model_<iter - 1>.pth`` (what the
        periodic checkpointer would have saved then) from this process - every process holds the
        same weights and optimizer state, and the failing one may not be the main one - so that
        ``--resume`` continues from there once the file is fixed or skipped.
        """
        finished = self.iter - 1
        if finished < self.start_iter:
            logger.error(f"A training sample failed to load ({error}); no iteration finished "
                         "since the start, so no checkpoint is written")
            return
        self.iter, save_to_disk = finished, self.checkpointer.save_to_disk
        self.checkpointer.save_to_disk = True
        try:
            self.checkpointer.save(f"model_{finished:07d}", iteration=finished)
            self.checkpointer.confirm_pending()
        finally:
            self.iter, self.checkpointer.save_to_disk = finished + 1, save_to_disk
        logger.error(
            f"A training sample failed to load at iteration {finished + 1}: {error}\nThe state "
            f"after iteration {finished} is saved; fix or remove the file and continue with "
            "--resume, or leave bad samples out with --skip-bad (DATASETS.CHECK.SKIP_BAD True)"
        )

    # ---- evaluation ---------------------------------------------------------------------
    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        # Detectron2 registers Cityscapes' trainId semantic labels as "cityscapes_sem_seg"; they are
        # ordinary label maps for SemSegEvaluator (its CityscapesSemSegEvaluator needs cityscapesscripts).
        if evaluator_type not in ("sem_seg", "cityscapes_sem_seg"):
            raise ConfigError(
                f"dataset {dataset_name!r} has evaluator_type={evaluator_type!r} in its metadata; "
                "pointrend_seg evaluates 'sem_seg' and 'cityscapes_sem_seg' datasets"
            )
        # The ground truth as training reads it: with the dataset's label map, values checked.
        ground_truth = GroundTruthReader(dataset_name, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
                                         cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
                                         cfg.INPUT.MAX_IMAGE_PIXELS)
        evaluators = [SegmentationEvaluator(dataset_name, distributed=True,
                                            output_dir=output_folder, ground_truth=ground_truth)]
        boundary = cfg.TEST.BOUNDARY_EVAL
        if boundary.ENABLED:
            evaluators.append(
                BoundaryEvaluator(
                    dataset_name, distributed=True, output_dir=output_folder,
                    bf_tolerance=boundary.BF_TOLERANCE, biou_dilation=boundary.BIOU_DILATION,
                    ground_truth=ground_truth,
                )
            )
        ret = DatasetEvaluators(evaluators)
        ret.segmentation = evaluators[0]  # for the per-class report of test()
        ret.output_folder = output_folder
        return ret

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """Detectron2's test loader with our mapper, without the samples that the dataset check
        found problems in when ``DATASETS.CHECK.SKIP_BAD`` (otherwise they stop the run)."""
        mapper = SemSegDatasetMapper(cfg, False)
        skip = skipped_images(check_run_datasets(cfg, [dataset_name], report=False))
        if not skip:
            return build_detection_test_loader(cfg, dataset_name, mapper=mapper)
        dicts = [d for d in DatasetCatalog.get(dataset_name) if d["file_name"] not in skip]
        logger.warning(f"Evaluating {dataset_name} without {len(skip)} skipped samples")
        return build_detection_test_loader(dicts, mapper=mapper,
                                           num_workers=cfg.DATALOADER.NUM_WORKERS)

    @classmethod
    def build_optimizer(cls, cfg, model):
        """
        SGD (``SOLVER.MOMENTUM`` / ``NESTEROV``, as Detectron2's ``build_optimizer``) or AdamW
        (``SOLVER.OPTIMIZER`` "ADAMW"), with Detectron2's parameter groups and gradient clipping;
        for a CUDA model torch's fused implementation (the whole update in a few kernels).
        """
        name = cfg.SOLVER.OPTIMIZER.upper()
        if name == "SGD":
            optimizer_class = torch.optim.SGD
            options = {"momentum": cfg.SOLVER.MOMENTUM, "nesterov": cfg.SOLVER.NESTEROV}
        elif name == "ADAMW":
            optimizer_class, options = torch.optim.AdamW, {}
        else:
            raise ConfigError(f"SOLVER.OPTIMIZER must be 'SGD' or 'ADAMW', got {cfg.SOLVER.OPTIMIZER!r}")
        if next(model.parameters()).is_cuda:
            options["fused"] = True
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        )
        return maybe_add_gradient_clipping(cfg, optimizer_class)(
            params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY, **options
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
        ``OUTPUT_DIR/eval_results.json``, and for each test set a per-class table (IoU, accuracy,
        boundary F, Boundary IoU, pixel share) goes to the log and ``confusion_matrix.csv`` /
        ``.png`` and ``per_class.png`` to ``OUTPUT_DIR/inference/<dataset>/``
        (:mod:`pointrend_seg.evaluation.report`). The model is evaluated after
        :func:`~pointrend_seg.modeling.prepare_for_inference` (``MODEL.INFERENCE.*``: batch norm
        folded, ...), undone before this returns, so training resumes on the original weights.
        """
        check_dataset_config(cfg, keys=("DATASETS.TEST",))
        if evaluators is None:
            evaluators = [cls.build_evaluator(cfg, name) for name in cfg.DATASETS.TEST]
        was_training = model.training
        model.eval()
        try:
            with prepare_for_inference(model, cfg):
                results = super().test(cfg, model, evaluators)
        finally:
            model.train(was_training)
        if comm.is_main_process() and results:
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            with open(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), "w") as f:
                json.dump(results, f, indent=1)
            # DefaultTrainer.test un-nests the results of a single dataset.
            per_dataset = results if len(cfg.DATASETS.TEST) > 1 else {cfg.DATASETS.TEST[0]: results}
            for (name, res), evaluator in zip(per_dataset.items(), evaluators):
                classes = MetadataCatalog.get(name).stuff_classes
                line = f"{name}: " + describe_miou(res["sem_seg"], classes)
                if "sem_seg_boundary" in res:
                    b = res["sem_seg_boundary"]
                    line += f"; boundary F = {b['mBF']:.2f}, boundary IoU = {b['mBIoU']:.2f}"
                logger.info(line)
                cls._report_per_class(name, res, classes, evaluator)
        return results

    @staticmethod
    def _report_per_class(name, res, classes, evaluator):
        """The per-class table in the log and ``per_class.png`` (evaluators of ours only)."""
        segmentation = getattr(evaluator, "segmentation", None)
        if getattr(segmentation, "confusion", None) is None:
            return
        rows = per_class_rows(res["sem_seg"], classes, segmentation.class_pixels,
                              res.get("sem_seg_boundary"))
        logger.info(format_per_class_table(rows, title=f"{name}, per class (%):"))
        folder = getattr(evaluator, "output_folder", None)
        if folder:
            path = write_per_class_bars(folder, rows, title=name)
            logger.info(f"{name}: confusion_matrix.csv / .png and {os.path.basename(path)} in "
                        f"{folder}")
