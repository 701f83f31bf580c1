"""
One training iteration (:class:`TrainStep`), called from ``Trainer.run_step`` - Detectron2's
public place to change what an iteration does. It is ``SimpleTrainer.run_step`` (data, forward,
backward, metrics, optimizer step) with:

* mixed precision for both dtypes: ``bfloat16`` autocast without loss scaling (its exponent range
  is float32's), or ``float16`` autocast with a ``GradScaler`` (Detectron2 v0.6's ``AMPTrainer``
  knows only the latter, and only on CUDA); CPU autocast works too;
* a non-finite loss stops every process, before the optimizer step (Detectron2 raises on the
  main process only, after averaging, and leaves the others blocked in the next collective);
* the losses reach the host once per iteration (one transfer for the check and the metrics);
* the data iterator is created at the first step, after a resume moved the stream's start.
"""
import logging
import math
import time
from typing import Dict, Optional

import torch

from detectron2.utils import comm

from .compat import write_metrics

__all__ = ["NonFiniteLossError", "TrainStep", "training_precision"]

logger = logging.getLogger(__name__)

_PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def training_precision(cfg) -> Optional[torch.dtype]:
    """
    The autocast dtype of training: None unless ``SOLVER.AMP.ENABLED``; then
    ``SOLVER.AMP.PRECISION`` ("float16": Detectron2's AMP, with loss scaling; "bfloat16").
    """
    if not cfg.SOLVER.AMP.ENABLED:
        return None
    name = cfg.SOLVER.AMP.PRECISION
    if name not in _PRECISIONS:
        raise ValueError(
            f"SOLVER.AMP.PRECISION must be one of {sorted(_PRECISIONS)}, got {name!r}"
        )
    return _PRECISIONS[name]


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


class TrainStep:
    """
    Runs training iterations of ``model`` on batches of ``data_loader`` with ``optimizer``.

    Its :meth:`state_dict` is what Detectron2's ``SimpleTrainer`` / ``AMPTrainer`` save
    (``optimizer``, and ``grad_scaler`` with float16), so checkpoints stay interchangeable.
    """

    def __init__(self, model, data_loader, optimizer, *, precision: Optional[torch.dtype] = None):
        """
        Args:
            precision: None (float32), torch.bfloat16 or torch.float16 autocast.
        """
        self.model = model
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.precision = precision
        self.device_type = next(model.parameters()).device.type
        self.grad_scaler = (
            torch.amp.GradScaler(self.device_type) if precision == torch.float16 else None
        )
        self._data_iter = None

    def run(self, iteration: int) -> None:
        """One iteration: forward, backward, all-process loss check, metrics, optimizer step."""
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

    @staticmethod
    def _check_finite(loss_dict: Dict[str, torch.Tensor], iteration: int):
        """
        The losses as 0-d CPU float32 tensors (one device-to-host transfer); raises
        :class:`NonFiniteLossError` on every process if any process has a non-finite loss.
        """
        names = list(loss_dict)
        values = torch.stack([loss_dict[k].detach().float().reshape(()) for k in names]).cpu()
        bad = {k: float(v) for k, v in zip(names, values.tolist()) if not math.isfinite(v)}
        everyone = comm.all_gather(bad) if comm.get_world_size() > 1 else [bad]
        if any(everyone):
            raise NonFiniteLossError(iteration, everyone)
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
