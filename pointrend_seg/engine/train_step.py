"""
One training iteration (:class:`TrainStep`, called from ``Trainer.run_step``): Detectron2's
``SimpleTrainer.run_step`` with mixed precision in both dtypes (``bfloat16`` autocast without
loss scaling, ``float16`` with a ``GradScaler``; v0.6's ``AMPTrainer`` knows only the latter, on
CUDA), a non-finite loss that stops every process before the optimizer step (Detectron2 raises
on the main process only and leaves the others blocked), the losses brought to the host once per
iteration, and the data iterator created at the first step (after a resume moved the start).
"""
import collections
import logging
import math
import statistics
import time
from typing import Dict, Optional

import torch

from detectron2.utils import comm

from ..config import ConfigError
from .compat import write_metrics

__all__ = ["LAZY_CONFIG_ADVICE", "LossSpikeGuard", "NonFiniteLossError", "TrainStep",
           "YAML_CONFIG_ADVICE", "training_precision"]

logger = logging.getLogger(__name__)

_PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}

# What to change after a divergence, and how to resume with it, in each kind of config.
YAML_CONFIG_ADVICE = ("lower SOLVER.BASE_LR, raise SOLVER.WARMUP_ITERS or enable "
                      "SOLVER.CLIP_GRADIENTS", "--resume SOLVER.BASE_LR <lower value>")
LAZY_CONFIG_ADVICE = ("lower optimizer.lr or lengthen the warmup (lr_multiplier.warmup_length)",
                      "--resume optimizer.lr=<lower value>")


def training_precision(cfg, names=None) -> Optional[torch.dtype]:
    """The autocast dtype of training: None unless ``SOLVER.AMP.ENABLED``, else that of
    ``SOLVER.AMP.PRECISION``; ``names``: as for :func:`~.config_checks.check_solver_config`."""
    if not cfg.SOLVER.AMP.ENABLED:
        return None
    name = cfg.SOLVER.AMP.PRECISION
    if name not in _PRECISIONS:
        key = (names or {}).get("SOLVER.AMP.PRECISION", "SOLVER.AMP.PRECISION")
        raise ConfigError(f"{key} must be one of {sorted(_PRECISIONS)}, got {name!r}")
    return _PRECISIONS[name]


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; raised on every process, before the optimizer step.
    ``resume_from``: the checkpoint to continue from (the newest whose weights gave a finite
    loss; "" when the run has none, None when unknown); ``advice``: (what to change, how to
    resume with it)."""

    def __init__(self, iteration, bad_losses_per_rank, resume_from=None,
                 advice=YAML_CONFIG_ADVICE):
        self.iteration = iteration
        self.bad_losses = bad_losses_per_rank  # [{name: value}] per rank
        self.resume_from = resume_from
        self.advice = tuple(advice)
        fix, resume_example = self.advice
        names = sorted({k for per_rank in bad_losses_per_rank for k in per_rank})
        details = "; ".join(
            f"rank {rank}: " + ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
            for rank, bad in enumerate(bad_losses_per_rank) if bad)
        if resume_from is None:
            then = f"{fix[0].upper()}{fix[1:]}, then resume from the last checkpoint."
        elif not resume_from:
            then = ("No checkpoint of this run holds weights whose loss was finite and no "
                    f"spike (the first updates diverged): {fix}, then start again (without "
                    "--resume).")
        else:
            then = (f"The last good state is {resume_from} (last_checkpoint names it; the loss "
                    f"of its weights was finite and no spike): {fix}, then continue from it with "
                    f"--resume, e.g. {resume_example}.")
        super().__init__(
            f"Non-finite loss at iteration {iteration}: {', '.join(names)} ({details}). "
            "Training stopped before the optimizer step of that iteration; no checkpoint is "
            f"written after it. {then}")

    def with_resume_from(self, checkpoint) -> "NonFiniteLossError":
        """The same error, its message naming ``checkpoint`` (None or "": there is none)."""
        return type(self)(self.iteration, self.bad_losses, checkpoint or "", self.advice)


class LossSpikeGuard:
    """Whether a finite loss is still sane: one over ``MAX_RATIO`` times the median of the last
    ``WINDOW`` marks an update that blew the weights up (e.g. ~3 to ~1e23 in one step), whose
    weights must not become ``last_checkpoint``. Cross-entropy does not legitimately grow a
    thousandfold in a few iterations; a loss that stays high becomes the new median."""

    WINDOW, MAX_RATIO = 20, 1000.0

    def __init__(self):
        self._recent = collections.deque(maxlen=self.WINDOW)

    def check(self, loss: float) -> Optional[str]:
        """Why ``loss`` is a spike (a message), or None if it is fine; then ``loss`` is added to
        the recent ones."""
        problem = None
        median = statistics.median_low(self._recent) if self._recent else 0
        if not math.isfinite(loss):
            problem = f"the loss is {loss}"
        elif median > 0 and loss > self.MAX_RATIO * median:
            problem = (f"the loss {loss:.3g} is over {self.MAX_RATIO:g} times the median "
                       f"{median:.3g} of the {len(self._recent)} iterations before")
        self._recent.append(loss)
        return problem


class TrainStep:
    """Runs training iterations of ``model`` on ``data_loader``'s batches with ``optimizer``,
    ``precision`` the autocast dtype (None: float32). :meth:`state_dict` is what Detectron2's
    ``SimpleTrainer`` / ``AMPTrainer`` save, so checkpoints stay interchangeable."""

    def __init__(self, model, data_loader, optimizer, *, precision: Optional[torch.dtype] = None):
        self.model = model
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.precision = precision
        self.device_type = next(model.parameters()).device.type
        self.grad_scaler = (
            torch.amp.GradScaler(self.device_type) if precision == torch.float16 else None)
        self._data_iter = None
        self.advice = YAML_CONFIG_ADVICE  # of a NonFiniteLossError: LAZY_CONFIG_ADVICE for those

    def run(self, iteration: int) -> float:
        """One iteration: forward, backward, all-process loss check, metrics, optimizer step;
        returns this process's total loss (with the weights before the step)."""
        assert self.model.training, "TrainStep: the model was switched to eval mode"
        if self._data_iter is None:
            self._data_iter = iter(self.data_loader)
        start = time.perf_counter()
        data = next(self._data_iter)
        data_time = time.perf_counter() - start

        with torch.autocast(self.device_type, dtype=self.precision or torch.float32,
                            enabled=self.precision is not None):
            loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        losses = sum(loss_dict.values())

        self.optimizer.zero_grad()
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
        else:
            losses.backward()

        host_losses = self._check_finite(loss_dict, iteration)
        write_metrics(host_losses, data_time, iteration)

        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        return float(sum(host_losses.values()))

    def _check_finite(self, loss_dict: Dict[str, torch.Tensor], iteration: int):
        """The losses as 0-d CPU float32 tensors (one transfer); raises :class:`NonFiniteLossError`
        on every process if any process has a non-finite loss."""
        names = list(loss_dict)
        values = torch.stack([loss_dict[k].detach().float().reshape(()) for k in names]).cpu()
        bad = {k: float(v) for k, v in zip(names, values.tolist()) if not math.isfinite(v)}
        everyone = comm.all_gather(bad) if comm.get_world_size() > 1 else [bad]
        if any(everyone):
            raise NonFiniteLossError(iteration, everyone, advice=self.advice)
        return dict(zip(names, values))

    def state_dict(self):
        ret = {"optimizer": self.optimizer.state_dict()}
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        self.optimizer.load_state_dict(state_dict["optimizer"])
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
