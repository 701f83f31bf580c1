"""``Trainer``: the one trainer of both config kinds, Detectron2's ``TrainerBase`` made of this
package's pieces (docs/architecture.md, "engine/trainer.py"), with ``DefaultTrainer``'s
classmethods (``build_model(cfg)``, ``test(cfg, model)``, ...) for either kind."""
import logging
import weakref

from detectron2.engine import TrainerBase, create_ddp_model, hooks
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from detectron2.utils.logger import setup_logger
from fvcore.nn.precise_bn import get_bn_modules

from ..config import ConfigError
from ..data import BadInputError, class_names_and_colors
from .checkpoint import SafeCheckpointer
from .evaluation import build_sem_seg_evaluators, build_test_loader, evaluate
from .resume import ExactResume
from .run import prepare_run
from .run_config import as_run_config
from .train_data import build_resumable_train_loader
from .train_step import LossSpikeGuard, NonFiniteLossError, TrainStep

__all__ = ["Trainer", "TrainingInterrupted"]

logger = logging.getLogger(__name__)


def model_info(cfg) -> dict:
    """What travels with the model in its checkpoints: the class names and colours, or {}."""
    try:
        names, colors, _ = class_names_and_colors(cfg)
    except ConfigError:
        return {}
    return {"classes": list(names), "colors": [[int(v) for v in c] for c in colors]}


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message names the checkpoint to continue from."""


class Trainer(TrainerBase):
    """Train a config of either kind (or a :class:`~.run_config.RunConfig`): what needs only the
    config (solver keys, precision, model, optimizer, LR schedule) is built before any dataset
    file is read, then ``plan`` (:class:`~.run.RunPlan`, prepared when not given) and the training
    stream. Checkpoint layout: docs/checkpoints.md."""

    def __init__(self, cfg, plan=None):
        super().__init__()
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        self.run_config = run = as_run_config(cfg)
        self.cfg = cfg = run.settings
        precision = run.check_training()
        model = run.build_model()
        optimizer = run.build_optimizer(model)
        self.scheduler = run.build_lr_scheduler(optimizer)
        self.plan = plan if plan is not None else prepare_run(run)
        data_loader = self.build_train_loader(run, self.plan)
        # CPU processes (gloo): DDP takes no device_ids there.
        ddp = run.ddp_options()
        if not next(model.parameters()).is_cuda:
            ddp["device_ids"] = None
        self.train_step = TrainStep(create_ddp_model(model, **ddp), data_loader, optimizer,
                                    precision=precision)
        self.train_step.advice = run.advice
        self.checkpointer = SafeCheckpointer(self.model, cfg.OUTPUT_DIR,
                                             trainer=weakref.proxy(self))
        self.checkpointer.model_info = model_info(cfg)
        self.resume = ExactResume(self.train_step, data_loader, self.scheduler, seed=cfg.SEED,
                                  log_period=cfg.SOLVER.LOG_PERIOD)
        self.loss_guard = LossSpikeGuard()
        self.start_iter, self.max_iter = 0, cfg.SOLVER.MAX_ITER
        self.register_hooks(self.build_hooks())

    # The objects Detectron2's hooks and callers read: those of the TrainStep.
    model = property(lambda self: self.train_step.model)
    data_loader = property(lambda self: self.train_step.data_loader)
    optimizer = property(lambda self: self.train_step.optimizer)

    # ---- building (DefaultTrainer's classmethods, for either kind of config) -------------
    @classmethod
    def build_model(cls, cfg):
        return as_run_config(cfg).build_model()

    @classmethod
    def build_optimizer(cls, cfg, model):
        return as_run_config(cfg).build_optimizer(model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return as_run_config(cfg).build_lr_scheduler(optimizer)

    @classmethod
    def build_train_loader(cls, cfg, plan=None):
        """The resumable training stream (:mod:`.train_data`) without the samples the plan
        leaves out; its seed is ``SEED``, or one shared by all processes if ``SEED`` < 0."""
        run = as_run_config(cfg)
        plan = plan if plan is not None else prepare_run(run)
        seed = run.settings.SEED if run.settings.SEED >= 0 else comm.shared_random_seed()
        return build_resumable_train_loader(run.settings, run.mapper(True), seed=seed,
                                            skip_images=plan.skipped)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name, plan=None):
        run = as_run_config(cfg)
        plan = plan if plan is not None else prepare_run(run, train=False)
        return build_test_loader(run.settings, dataset_name, run.mapper(False),
                                 plan.skipped_in(dataset_name))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_sem_seg_evaluators(as_run_config(cfg).settings, dataset_name, output_folder)

    def build_hooks(self):
        """Exact resume's hook, then Detectron2's: timer, LR, precise BN, checkpoints, eval, log."""
        cfg, main = self.cfg, comm.is_main_process()
        precise_bn = cfg.TEST.PRECISE_BN.ENABLED and get_bn_modules(self.model)
        return self.resume.hooks() + [
            hooks.IterationTimer(),
            hooks.LRScheduler(),
            hooks.PreciseBN(cfg.TEST.EVAL_PERIOD, self.model,
                            self.build_train_loader(self.run_config, self.plan),
                            cfg.TEST.PRECISE_BN.NUM_ITER) if precise_bn else None,
            hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD)
            if main else None,
            hooks.EvalHook(cfg.TEST.EVAL_PERIOD, lambda: self.test(self.run_config, self.model,
                                                                   plan=self.plan)),
            hooks.PeriodicWriter(self.build_writers(), period=cfg.SOLVER.LOG_PERIOD)
            if main else None,
        ]

    def build_writers(self):  # Detectron2's, smoothed over LOG_PERIOD
        window, out = self.cfg.SOLVER.LOG_PERIOD, self.cfg.OUTPUT_DIR
        return [CommonMetricPrinter(self.max_iter, window_size=window),
                JSONWriter(f"{out}/metrics.json", window_size=window),
                TensorboardXWriter(out, window_size=window)]

    # ---- training -----------------------------------------------------------------------
    def train(self):
        """Train from ``start_iter`` to ``max_iter``; Ctrl-C ends with
        :class:`TrainingInterrupted`, naming the checkpoint to continue from."""
        try:
            return super().train(self.start_iter, self.max_iter)
        except KeyboardInterrupt:
            last = self.checkpointer.last_checkpoint_path()
            raise TrainingInterrupted(
                f"interrupted at iteration {self.iter} of {self.max_iter}; "
                + (f"continue from {last} with --resume" if last else
                   "no checkpoint was written yet: start again (without --resume)")) from None
        finally:  # saves outside training are written at once
            self.checkpointer.confirm_with_next_loss = False

    def run_step(self):
        """One :class:`.TrainStep`, whose loss keeps or drops the checkpoint held back since the
        last one; a sample that fails to load first saves the last finished iteration."""
        try:
            loss = self.train_step.run(self.iter)
        except NonFiniteLossError as e:
            raise self.checkpointer.diverged(e) from None
        except BadInputError as e:
            self.save_before_data_error(e)
            raise
        except BaseException:
            self.checkpointer.confirm_pending()  # e.g. Ctrl-C: the state was good, keep it
            raise
        self.checkpointer.judge_pending(self.loss_guard.check(loss), self.iter)
        # The checkpoint after the last iteration has no next loss to wait for.
        self.checkpointer.confirm_with_next_loss = self.iter + 1 < self.max_iter

    def save_before_data_error(self, error):
        """Save the state after the last finished iteration from this process (the one that
        failed may not be the main one), so that ``--resume`` continues once the file is fixed."""
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
            "--resume, or leave bad samples out with --skip-bad (DATASETS.CHECK.SKIP_BAD True)")

    def state_dict(self):
        ret = TrainerBase.state_dict(self)  # iteration, hooks (the LR scheduler)
        ret.update(self.resume.state_dict(getattr(self, "storage", None)))
        return ret

    def load_state_dict(self, state_dict):
        TrainerBase.load_state_dict(self, self.resume.load_state_dict(state_dict))
        self.resume.after_load()

    def resume_or_load(self, resume=True):
        """``MODEL.WEIGHTS`` (``train.init_checkpoint``), or with ``resume`` the checkpoint
        ``OUTPUT_DIR/last_checkpoint`` names (ours, Detectron2's trainers' or
        tools/plain_train_net.py's); the stream then restarts at the next iteration."""
        if comm.is_main_process():
            self.checkpointer.remove_stale_temp_files()
        extra = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            if "optimizer" in extra and "iteration" in extra:
                # tools/plain_train_net.py's layout: its top-level state as a trainer's
                self.load_state_dict({"iteration": extra["iteration"],
                                      "optimizer": extra["optimizer"],
                                      "hooks": {"LRScheduler": extra["scheduler"]}
                                      if "scheduler" in extra else {}})
            self.start_iter = self.iter + 1
        if hasattr(self.data_loader, "set_start_iter"):
            self.data_loader.set_start_iter(self.start_iter)
        if self.start_iter:
            logger.info(f"Resuming training at iteration {self.start_iter} "
                        f"(seed {self.resume.seed})")

    # ---- evaluation ---------------------------------------------------------------------
    @classmethod
    def test(cls, cfg, model, evaluators=None, plan=None):
        """:func:`.evaluation.evaluate` on ``plan``'s test sets (prepared here when not given)."""
        run = as_run_config(cfg)
        plan = plan if plan is not None else prepare_run(run, train=False)
        names = list(run.settings.DATASETS.TEST)
        evaluators = evaluators or [cls.build_evaluator(run, name) for name in names]
        loaders = [cls.build_test_loader(run, name, plan) for name in names]
        return evaluate(run.settings, model, evaluators, loaders)
