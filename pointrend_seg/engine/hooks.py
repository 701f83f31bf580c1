"""Training hooks (Detectron2's ``HookBase``) of pointrend_seg's trainer."""
from detectron2.engine import HookBase
from detectron2.utils import comm

from .train_data import _STEP, derive_seed, seed_all

__all__ = ["ReseedEachIteration"]


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
