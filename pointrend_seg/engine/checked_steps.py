"""
What a training iteration does around :class:`~.train_step.TrainStep` in every trainer of ours
(:class:`~.trainer.Trainer`, for both kinds of config):
the checkpoint held back since the last iteration is kept or dropped by this iteration's loss
(:class:`~.checkpoint.SafeCheckpointer`), a non-finite loss names the last good checkpoint, and a
sample that cannot be loaded first has the last finished iteration saved.
"""
import logging

from ..data import BadInputError
from .train_step import NonFiniteLossError

__all__ = ["CheckedSteps", "TrainingInterrupted"]

logger = logging.getLogger(__name__)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message names the iteration reached and the checkpoint to
    continue from with ``--resume``."""


class CheckedSteps:
    """
    ``run_step`` / ``train`` for a Detectron2 ``TrainerBase`` subclass that has ``train_step``
    (a :class:`~.train_step.TrainStep`), ``checkpointer`` (a :class:`~.checkpoint.SafeCheckpointer`
    whose ``trainer`` is this one) and ``loss_guard`` (a :class:`~.train_step.LossSpikeGuard`).
    Put it first among the bases.
    """

    # The objects Detectron2's hooks and callers read: those of the TrainStep.
    model = property(lambda self: self.train_step.model)
    data_loader = property(lambda self: self.train_step.data_loader)
    optimizer = property(lambda self: self.train_step.optimizer)

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        except KeyboardInterrupt as e:
            if isinstance(e, TrainingInterrupted):
                raise
            last = self.checkpointer.last_checkpoint_path()
            raise TrainingInterrupted(
                f"interrupted at iteration {self.iter} of {self.max_iter}; "
                + (f"continue from {last} with --resume" if last else
                   "no checkpoint was written yet: start again (without --resume)")) from None
        finally:  # saves outside training are written at once
            self.checkpointer.confirm_with_next_loss = False

    def run_step(self):
        """One :class:`.TrainStep`; the checkpoint held back since the last iteration is kept or
        dropped by this iteration's loss; a sample that cannot be loaded first has the last
        finished iteration saved (:meth:`save_before_data_error`)."""
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
        """A sample failed to load at iteration ``self.iter``: save the state after the last
        finished one from this process (every process holds it; the failing one may not be the
        main one), so that ``--resume`` continues once the file is fixed or skipped."""
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
