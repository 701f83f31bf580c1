"""Multi-process training and evaluation: norms that can run on the processes at hand, and a
launcher whose processes leave the process group cleanly and whose errors reach the caller as
what they are."""
import functools
import gc
import importlib
import json
import logging
import os
import shutil
import tempfile
import traceback

import torch.distributed as dist

from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

from ..files import atomic_write
from .compat import forget_detectron2_process_groups

__all__ = ["adapt_norm_to_world_size", "launch"]

logger = logging.getLogger(__name__)

_TORCH_SYNC_BN = ("SyncBN", "nnSyncBN")
_NORM_KEYS = (("RESNETS", "NORM"), ("SEM_SEG_HEAD", "NORM"))


def adapt_norm_to_world_size(cfg, world_size=None):
    """For a CPU model trained by several processes, ``MODEL.RESNETS.NORM`` /
    ``MODEL.SEM_SEG_HEAD.NORM`` "SyncBN" / "nnSyncBN" (torch's, GPU only) become Detectron2's
    "naiveSyncBN" (gloo all-reduces it), with a warning. Returns ``cfg`` itself, or an adapted
    copy (frozen if ``cfg`` was)."""
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
        f"{world_size} processes, same parameters and checkpoint format)")
    return cfg


def _run_then_leave_group(error_dir, main_func, *args):
    """Run ``main_func(*args)`` in a launched process, then leave the process group (after a
    barrier if it returned; at once if it raised, since the others may never arrive). An
    exception is first recorded in ``error_dir`` for the launching process."""
    try:
        result = main_func(*args)
    except BaseException as e:
        record_worker_error(error_dir, e)
        leave_process_group(wait_for_others=False)
        raise
    leave_process_group()
    return result


def record_worker_error(error_dir, error: BaseException, pid=None) -> bool:
    """Write ``error``'s class, ``args``, attributes and traceback text to ``error_dir/<pid>.json``
    for :func:`raise_worker_error`; False (nothing written) when it is no ``Exception`` or those
    are not plain JSON data."""
    if error_dir is None or not isinstance(error, Exception):
        return False
    cls = type(error)
    state = dict(vars(error))
    if isinstance(error, OSError):  # slots, not in vars()
        state.update({k: getattr(error, k) for k in ("errno", "strerror", "filename", "filename2")
                      if getattr(error, k) is not None})
    record = {"module": cls.__module__, "name": cls.__qualname__, "args": error.args,
              "state": state,
              "traceback": "".join(traceback.format_exception(cls, error, error.__traceback__))}
    try:
        data = json.dumps(record)
    except (TypeError, ValueError):  # not plain data
        return False
    path = os.path.join(error_dir, f"{os.getpid() if pid is None else pid}.json")
    atomic_write(path, lambda f: f.write(data), binary=False)
    return True


def raise_worker_error(error_dir, pid) -> None:
    """Raise in the launching process the exception process ``pid`` recorded
    (:func:`record_worker_error`): same class, message and attributes, the worker's traceback as a
    note; returns without a usable record. The record is JSON (data only; tuples come back as
    lists), written by a process this one started into a folder this one made."""
    if pid is None or not os.path.isfile(os.path.join(error_dir, f"{pid}.json")):
        return
    with open(os.path.join(error_dir, f"{pid}.json")) as f:
        record = json.load(f)
    cls = importlib.import_module(record["module"])
    for part in record["name"].split("."):
        cls = getattr(cls, part, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        return
    # __new__, not __init__: exceptions whose __init__ takes other arguments than their args
    # (NonFiniteLossError) come back as they were; OSError's __new__ sets errno from args.
    args = tuple(record["args"])
    error = cls.__new__(cls, *args)
    error.args = args
    for name, value in record["state"].items():
        setattr(error, name, value)
    if hasattr(error, "add_note"):  # Python >= 3.11
        error.add_note(f"Raised in launched process {pid}:\n{record['traceback'].rstrip()}")
    raise error


def leave_process_group(wait_for_others: bool = True) -> None:
    """Wait for every process (``wait_for_others``), then destroy the process groups and release
    Detectron2's references to them, so that gloo's worker threads are joined while the
    interpreter is alive: one left to its shutdown needs the GIL and aborts the process
    ("terminate called without an active exception"). A no-op without a process group."""
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
    """Detectron2's ``launch`` (same arguments), with every spawned process leaving the process
    group after ``main_func`` (:func:`leave_process_group`), and a spawned process's exception
    raised here as itself (:func:`raise_worker_error`), not as torch's ``ProcessRaisedException``
    holding only its traceback's text."""
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        return d2_launch(main_func, num_gpus_per_machine, num_machines=num_machines,
                         machine_rank=machine_rank, dist_url=dist_url, args=args)
    error_dir = tempfile.mkdtemp(prefix="pointrend_seg-launch-")
    try:
        return d2_launch(functools.partial(_run_then_leave_group, error_dir, main_func),
                         num_gpus_per_machine, num_machines=num_machines,
                         machine_rank=machine_rank, dist_url=dist_url, args=args)
    except Exception as failure:  # torch's ProcessRaisedException: only the traceback's text
        raise_worker_error(error_dir, getattr(failure, "error_pid", None))
        raise
    finally:
        shutil.rmtree(error_dir, ignore_errors=True)
