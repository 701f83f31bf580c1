"""
``Trainer``: Detectron2's ``DefaultTrainer`` with our ``build_*`` pieces, each in its module: the
start-of-run checks, once (:mod:`.run`); one iteration (:mod:`.train_step`) on the resumable
stream (:mod:`.train_data`); exact resume (:mod:`.resume`); checkpoints only of good states
(:mod:`.checkpoint`, kept or dropped by the next loss in :mod:`.checked_steps`); the optimizer
(:mod:`.optimizer`) and DeepLab's poly LR schedule; evaluation with a per-class report
(:mod:`.evaluation`); CPU processes (:mod:`.distributed`).
"""
import functools
import logging
import weakref

import torch

from detectron2.engine import DefaultTrainer, TrainerBase, create_ddp_model, hooks
from detectron2.projects.deeplab import build_lr_scheduler as build_deeplab_lr_scheduler
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from detectron2.utils.logger import setup_logger

from ..data import SemSegDatasetMapper
from .checked_steps import CheckedSteps
from .checkpoint import SafeCheckpointer
from .distributed import adapt_norm_to_world_size
from .evaluation import build_sem_seg_evaluators, build_test_loader, evaluate
from .optimizer import build_optimizer
from .resume import ExactResume
from .run import prepare_run
from .train_data import build_resumable_train_loader
from .train_step import LossSpikeGuard, TrainStep, training_precision

__all__ = ["Trainer"]

logger = logging.getLogger(__name__)


class Trainer(CheckedSteps, DefaultTrainer):
    """``DefaultTrainer`` built from our pieces (module docstring); ``plan``: the run's
    :class:`~.run.RunPlan`, prepared here when not given. Checkpoint layout: docs/checkpoints.md."""

    def __init__(self, cfg, plan=None):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        self.plan = plan if plan is not None else prepare_run(cfg)
        # Detectron2's build_hooks calls self.build_train_loader(cfg) for TEST.PRECISE_BN: on
        # this instance it takes the run's plan instead of checking the datasets again.
        self.build_train_loader = functools.partial(type(self).build_train_loader, plan=self.plan)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        # CPU processes (gloo): DDP takes no device_ids there.
        cpu = not next(model.parameters()).is_cuda
        model = create_ddp_model(model, broadcast_buffers=False,
                                 **({"device_ids": None} if cpu else {}))
        self.train_step = TrainStep(model, data_loader, optimizer,
                                    precision=training_precision(cfg))
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = SafeCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.resume = ExactResume(self.train_step, data_loader, self.scheduler, seed=cfg.SEED,
                                  log_period=cfg.SOLVER.LOG_PERIOD)
        self.loss_guard = LossSpikeGuard()
        self.start_iter, self.max_iter, self.cfg = 0, cfg.SOLVER.MAX_ITER, cfg
        self.register_hooks(self.build_hooks())

    seed = property(lambda self: self.resume.seed, doc="The run's seed (ExactResume.seed).")

    # ---- building -----------------------------------------------------------------------
    @classmethod
    def build_model(cls, cfg):
        """Detectron2's ``build_model``, with norms that can run on the processes at hand
        (:func:`.adapt_norm_to_world_size`), channels_last if ``SOLVER.CHANNELS_LAST``."""
        model = super().build_model(adapt_norm_to_world_size(cfg))
        if cfg.SOLVER.CHANNELS_LAST:
            model = model.to(memory_format=torch.channels_last)
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):  # SGD / AdamW (.optimizer)
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):  # "WarmupPolyLR", else Detectron2's
        return build_deeplab_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg, plan=None):
        """The resumable training stream (:mod:`.train_data`) without the samples the plan
        leaves out; its seed is ``SEED``, or one shared by all processes if ``SEED`` < 0."""
        plan = plan if plan is not None else prepare_run(cfg)
        seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
        return build_resumable_train_loader(cfg, SemSegDatasetMapper(cfg, True), seed=seed,
                                            skip_images=plan.skipped)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name, plan=None):
        plan = plan if plan is not None else prepare_run(cfg, train=False)
        return build_test_loader(cfg, dataset_name, plan.skipped_in(dataset_name))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_sem_seg_evaluators(cfg, dataset_name, output_folder)

    def build_hooks(self):
        """Detectron2's hooks, with :class:`~.resume.ExactResume`'s first, the metric writers
        every ``SOLVER.LOG_PERIOD`` iterations (Detectron2 hard-codes 20) and the periodic
        evaluation on this run's plan."""
        ret = self.resume.hooks()
        for h in super().build_hooks():
            if isinstance(h, hooks.PeriodicWriter):
                h = hooks.PeriodicWriter(self.build_writers(), period=self.cfg.SOLVER.LOG_PERIOD)
            elif isinstance(h, hooks.EvalHook):
                h = hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD,
                                   lambda: self.test(self.cfg, self.model, plan=self.plan))
            ret.append(h)
        return ret

    def build_writers(self):  # Detectron2's, smoothed over LOG_PERIOD; once (files open)
        if getattr(self, "_writers", None) is None:
            window = self.cfg.SOLVER.LOG_PERIOD
            self._writers = [CommonMetricPrinter(self.max_iter, window_size=window),
                             JSONWriter(f"{self.cfg.OUTPUT_DIR}/metrics.json", window_size=window),
                             TensorboardXWriter(self.cfg.OUTPUT_DIR, window_size=window)]
        return self._writers

    # ---- training state -----------------------------------------------------------------
    def state_dict(self):
        ret = TrainerBase.state_dict(self)  # iteration, hooks (the LR scheduler)
        ret.update(self.resume.state_dict(getattr(self, "storage", None)))
        return ret

    def load_state_dict(self, state_dict):
        TrainerBase.load_state_dict(self, self.resume.load_state_dict(state_dict))
        self.resume.after_load()

    def resume_or_load(self, resume=True):
        """Detectron2's, then the stream restarts at the resumed iteration."""
        if comm.is_main_process():
            self.checkpointer.remove_stale_temp_files()
        super().resume_or_load(resume=resume)
        if hasattr(self.data_loader, "set_start_iter"):
            self.data_loader.set_start_iter(self.start_iter)
        if self.start_iter:
            logger.info(f"Resuming training at iteration {self.start_iter} (seed {self.seed})")

    # ---- evaluation ---------------------------------------------------------------------
    @classmethod
    def test(cls, cfg, model, evaluators=None, plan=None):
        """:func:`.evaluation.evaluate` on ``plan``'s test sets (prepared here when not given)."""
        plan = plan if plan is not None else prepare_run(cfg, train=False)
        names = list(cfg.DATASETS.TEST)
        evaluators = evaluators or [cls.build_evaluator(cfg, name) for name in names]
        loaders = [cls.build_test_loader(cfg, name, plan) for name in names]
        return evaluate(cfg, model, evaluators, loaders)
