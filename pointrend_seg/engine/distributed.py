"""
Multi-process training and evaluation: norms that can run on the processes at hand, and a
launcher whose processes leave the process group cleanly.
"""
import functools
import gc
import logging

import torch.distributed as dist

from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

from .compat import forget_detectron2_process_groups

__all__ = ["adapt_norm_to_world_size", "launch"]

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


def _run_then_leave_group(main_func, *args):
    """Run ``main_func(*args)`` in a launched process, then leave the process group (after a
    barrier if it returned; at once if it raised, since the others may never arrive)."""
    try:
        result = main_func(*args)
    except BaseException:
        leave_process_group(wait_for_others=False)
        raise
    leave_process_group()
    return result


def leave_process_group(wait_for_others: bool = True) -> None:
    """
    Wait for every process (``wait_for_others``), then destroy every process group and release
    Detectron2's references to them, so that their worker threads are joined now, while the
    interpreter is alive (a no-op without a process group).

    Without this, gloo's worker threads outlive ``main_func``; one that destroys the last
    collective's work object while the interpreter shuts down needs the GIL, cannot get it, and
    aborts the process: "terminate called without an active exception" (SIGABRT) after all the
    work was done, in 2 of 25 two-process evaluations here before the fix.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if wait_for_others:
            dist.barrier()
    finally:
        dist.destroy_process_group()
        forget_detectron2_process_groups()
        gc.collect()  # the groups, and with them their threads, go now


def launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None,
           args=()):
    """
    Detectron2's ``launch`` (same arguments), with every spawned process leaving the process
    group after ``main_func`` returns or raises (:func:`leave_process_group`).
    """
    world_size = num_machines * num_gpus_per_machine
    if world_size > 1:
        main_func = functools.partial(_run_then_leave_group, main_func)
    return d2_launch(main_func, num_gpus_per_machine, num_machines=num_machines,
                     machine_rank=machine_rank, dist_url=dist_url, args=args)
