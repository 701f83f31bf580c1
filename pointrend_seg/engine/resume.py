"""Exact resume: a run continued with ``--resume`` from the checkpoint of iteration ``i`` computes
exactly the losses, and logs exactly the metrics, that the uninterrupted run did after ``i``
(docs/checkpoints.md); :class:`ExactResume` is the one object behind it."""
import logging
import warnings
from typing import Optional

from fvcore.common.history_buffer import HistoryBuffer

from detectron2.engine.hooks import CallbackHook
from detectron2.utils import comm

from .train_data import seed_all, step_seed

__all__ = ["ExactResume", "train_step_state"]

logger = logging.getLogger(__name__)


def train_step_state(trainer_state) -> Optional[dict]:
    """The iteration step's state (``optimizer``, ``grad_scaler``) in a trainer's checkpoint
    state: under ``_trainer`` (our trainer's, DefaultTrainer's) or the trainer state itself
    (SimpleTrainer's: tools/lazyconfig_train_net.py); None if it holds no optimizer."""
    if not isinstance(trainer_state, dict):
        return None
    for state in (trainer_state.get("_trainer"), trainer_state):
        if isinstance(state, dict) and isinstance(state.get("optimizer"), dict):
            return state
    return None


class ExactResume:
    """
    The state a trainer needs to continue a run exactly: the ``train_step``'s (optimizer), the
    ``data_loader``'s (the stream's seed and shape), the last ``log_period`` values of each
    metric, and the ``scheduler``'s progress with this config's settings; and the hook that
    reseeds the model's RNGs before every iteration. ``seed``: ``SEED`` (< 0: the stream's).
    """

    def __init__(self, train_step, data_loader, scheduler, *, seed: int, log_period: int):
        self.train_step, self.data_loader, self.scheduler = train_step, data_loader, scheduler
        self._config_seed, self.log_period = seed, log_period
        self.resumed_metric_history = None

    @property
    def seed(self):
        """The run's seed: the training stream's, else ``SEED`` if >= 0, else None."""
        seed = getattr(getattr(self.data_loader, "sampler", None), "seed", None)
        if seed is None and self._config_seed >= 0:
            seed = self._config_seed
        return seed

    def hooks(self):
        """The hook to run first: :meth:`reseed` before every iteration,
        :meth:`restore_metric_history` before training."""
        return [CallbackHook(before_train=self.restore_metric_history, before_step=self.reseed)]

    def reseed(self, trainer):
        """Seed the RNGs from ``(run seed, iteration, rank)`` (:func:`~.train_data.step_seed`): the
        model's randomness at an iteration is then the same in a fresh and in a resumed run."""
        seed = self.seed
        if seed is not None:
            seed_all(step_seed(seed, trainer.iter, comm.get_rank()))

    def restore_metric_history(self, trainer):
        """Put the metric history of the resumed checkpoint back into the event storage
        (``time`` / ``data_time`` are restored too but are timings of another process)."""
        buffers = trainer.storage.histories()
        for name, values in (self.resumed_metric_history or {}).items():
            buffer = buffers.setdefault(name, HistoryBuffer())
            for value, iteration in values:
                buffer.update(value, iteration)

    def state_dict(self, storage=None) -> dict:
        """``_trainer``, ``data`` and (with the event storage of a training run) ``metrics``."""
        ret = {"_trainer": self.train_step.state_dict()}
        if hasattr(self.data_loader, "state_dict"):
            ret["data"] = self.data_loader.state_dict()
        if storage is not None:  # what the writers' windowed medians need
            ret["metrics"] = {name: [[float(v), int(i)] for v, i in buf.values()[-self.log_period:]]
                              for name, buf in storage.histories().items()}
        return ret

    def load_state_dict(self, state_dict: dict) -> dict:
        """Restore the optimizer, the stream and the metric history from a trainer's checkpoint
        state; returns it with this config's LR-scheduler settings, for ``TrainerBase``."""
        state_dict, schedule_changed = self._schedule_from_config(state_dict)
        step = train_step_state(state_dict)
        if step is not None:
            self.train_step.load_state_dict(step)
        else:
            logger.warning("The checkpoint has no optimizer state: momentum buffers restart "
                           "from zero")
        if "data" in state_dict and hasattr(self.data_loader, "load_state_dict"):
            self.data_loader.load_state_dict(state_dict["data"])
        self.resumed_metric_history = state_dict.get("metrics")
        self._schedule_changed = schedule_changed
        return state_dict

    def after_load(self):
        """After the scheduler got its state back: if this config changed the schedule, give the
        optimizer the new schedule's learning rates (its state brought the old ones)."""
        if not getattr(self, "_schedule_changed", False):
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch: get_lr() outside of step()
            lrs = self.scheduler.get_lr()
        for group, lr in zip(self.train_step.optimizer.param_groups, lrs):
            group["lr"] = lr

    def _schedule_from_config(self, state_dict):
        """The checkpoint's LR-scheduler progress (``last_epoch``) with this config's settings
        (``SOLVER.MAX_ITER``, ``BASE_LR``, warmup, ...); and whether a setting changed."""
        saved = state_dict.get("hooks", {}).get("LRScheduler")
        if not saved or not hasattr(self.scheduler, "state_dict"):
            return state_dict, False
        # the settings: public attributes other than last_epoch (``_``-prefixed: bookkeeping)
        settings = {k: v for k, v in self.scheduler.state_dict().items()
                    if k != "last_epoch" and not k.startswith("_")}
        merged = {**saved, **settings}
        changed = {k: (saved[k], v) for k, v in settings.items() if k in saved and saved[k] != v}
        if changed:
            logger.info(
                "LR schedule of this config, progress of the checkpoint: "
                + ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items()))
        hooks_state = dict(state_dict["hooks"], LRScheduler=merged)
        return dict(state_dict, hooks=hooks_state), bool(changed)
