"""Training hooks (Detectron2's ``HookBase``) of pointrend_seg's trainer."""
from fvcore.common.history_buffer import HistoryBuffer

from detectron2.engine import HookBase
from detectron2.utils import comm

from .train_data import _STEP, derive_seed, seed_all

__all__ = ["ReseedEachIteration", "RestoreMetricHistory", "recent_metric_history"]


class ReseedEachIteration(HookBase):
    """
    Before every iteration, seed torch (CPU and CUDA), NumPy and Python RNGs from
    ``(run seed, iteration, rank)``: the model's randomness (dropout, PointRend's random points)
    at iteration ``i`` is then the same in a fresh and in a resumed run, whatever happened
    before ``i`` (data loading runs under its own seeds, see :mod:`.train_data`). Does nothing
    when the trainer has no seed (``trainer.seed`` is None).
    """

    def before_step(self):
        if self.trainer.seed is None:
            return
        seed_all(derive_seed(self.trainer.seed, _STEP, self.trainer.iter, comm.get_rank()))


def recent_metric_history(storage, window: int):
    """
    ``{name: [[value, iteration], ...]}``: the last ``window`` values of each scalar of a
    Detectron2 ``EventStorage`` (what its writers' windowed medians need), for checkpoints.
    """
    return {name: [[float(v), int(i)] for v, i in buffer.values()[-window:]]
            for name, buffer in storage.histories().items()}


class RestoreMetricHistory(HookBase):
    """
    Before training starts, put the metric history saved in the resumed checkpoint
    (``trainer.resumed_metric_history``, :func:`recent_metric_history`) back into the event
    storage: the windowed medians that the writers log right after ``--resume`` then cover the
    same iterations, with the same values, as in the uninterrupted run (Detectron2 starts an
    empty storage, so its first medians after a resume cover only the new iterations).
    ``time`` / ``data_time`` are restored too but are timings of another process, naturally.
    """

    def before_train(self):
        history = getattr(self.trainer, "resumed_metric_history", None) or {}
        buffers = self.trainer.storage.histories()
        for name, values in history.items():
            buffer = buffers.setdefault(name, HistoryBuffer())
            for value, iteration in values:
                buffer.update(value, iteration)
