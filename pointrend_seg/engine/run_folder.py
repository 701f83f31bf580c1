"""
A run folder (``OUTPUT_DIR``) has one writer (:func:`claim_run_folder`), and a resume starts only
from a checkpoint that fits (:func:`check_resume_fits`; docs/bad_inputs.md, "run folder"); also
:func:`run_config_kept` (``--eval-only`` keeps a run's ``config.yaml``) and
:func:`load_run_folder` (``--run``).
"""
import contextlib
import datetime
import errno
import fcntl
import inspect
import json
import logging
import os
import re
import socket
import sys
from typing import Dict, List, Optional
from urllib.parse import urlparse

from omegaconf import OmegaConf

from detectron2.config import LazyConfig
from detectron2.utils import comm
from detectron2.utils.registry import locate

from ..config import (ConfigError, build_config, check_python_overrides, device_override,
                      leaf_items, load_yaml_config)
from .checkpoint import (_CHECKPOINT_RE, CheckpointReadError, SafeCheckpointer, _opened_path,
                         load_weights_only, read_checkpoint_tag)
from .predictor import require_weights
from .resume import train_step_state
from .run import check_config
from .run_config import as_run_config

__all__ = ["LOCK_NAME", "ResumeMismatchError", "RunFolderBusyError", "RunFolderClaim",
           "check_resume_fits", "claim_before_writing", "claim_run_folder", "config_differences",
           "run_config_kept", "tensors_that_differ"]

LOCK_NAME = ".pointrend_seg.lock"

logger = logging.getLogger(__name__)


class RunFolderBusyError(RuntimeError):
    """Another live process trains or evaluates into the same ``OUTPUT_DIR``."""


class ResumeMismatchError(ValueError):
    """The checkpoint ``--resume`` would continue from does not fit this config's model."""


class RunFolderClaim:
    """An exclusive claim on a run folder until :meth:`release` or the process ends. ``path``: the
    lock file; ``previous``: what it said before (the last holder's pid, host, started, command)."""

    def __init__(self, path: str, fd: int, previous: Optional[dict]):
        self.path, self._fd, self.previous = path, fd, previous

    def release(self):
        if self._fd is not None:
            os.close(self._fd)  # drops the lock
            self._fd = None
            _CLAIMS.pop(os.path.realpath(os.path.dirname(self.path)), None)


_CLAIMS: Dict[str, RunFolderClaim] = {}  # held for the life of the process


def _read_holder(fd) -> Optional[dict]:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 64 * 1024)
    try:
        holder = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _describe(holder: Optional[dict]) -> str:
    if not holder:
        return "another process"
    return (f"process {holder.get('pid', '?')} on {holder.get('host', '?')} (started "
            f"{holder.get('started', '?')}: {holder.get('command', '?')})")


# The files the tools write in a run folder: a symbolic link under such a name is refused.
_RUN_FILES = re.compile(r"^(\.pointrend_seg\.lock|config\.yaml(\.kept)?|eval_config\.yaml|"
                        r"metrics\.json|log\.txt(\.rank\d+)?|last_checkpoint|model_.*\.pth|"
                        r"events\.out\.tfevents\..*|(dataset_check|skipped_samples|eval_results)"
                        r"\.json|inference)$")


def _refuse_links(output_dir: str, key: str) -> None:
    links = sorted(e.name for e in os.scandir(output_dir)
                   if _RUN_FILES.match(e.name) and e.is_symlink())
    if links:
        first = os.path.join(output_dir, links[0])
        raise ConfigError(
            f"{key} {output_dir}: {first} is a symbolic link (to {os.readlink(first)})"
            + (f", and {len(links) - 1} more ({', '.join(links[1:4])})" if len(links) > 1 else "")
            + "; the tools write the files of a run folder in place, so this run would write "
            "outside it. Remove the link, or give this run another folder (nothing was changed)")


def claim_run_folder(output_dir: str, key: str = "OUTPUT_DIR") -> RunFolderClaim:
    """
    Claim ``output_dir`` (created if needed) for this process with an exclusive ``lockf`` lock:
    unlike a ``flock`` no forked DataLoader worker inherits it, and the kernel drops it when the
    process ends, ``kill -9`` included. A folder claimed twice by one process gives the first claim.

    Raises:
        RunFolderBusyError: a live process holds the folder (the message names it).
        ConfigError: naming ``key`` and the folder, when it cannot be created or used, or a file
            the tools write there is a symbolic link (:data:`_RUN_FILES`); nothing is written.
    """
    key_path = os.path.realpath(output_dir)
    if key_path in _CLAIMS:
        return _CLAIMS[key_path]
    path = os.path.join(output_dir, LOCK_NAME)
    try:
        if os.path.exists(output_dir) and not os.path.isdir(output_dir):
            raise ConfigError(f"{key} {output_dir} is a file, not a folder: give the run a folder")
        os.makedirs(output_dir, exist_ok=True)
        _refuse_links(output_dir, key)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:  # no permission, a read-only disk, the lock file a folder, ...
        raise ConfigError(f"{key} {output_dir}: cannot use it as the run folder: "
                          f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
                          ) from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _read_holder(fd)
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise
        raise RunFolderBusyError(
            f"OUTPUT_DIR {output_dir} is in use by {_describe(holder)}; two runs in one folder "
            "would replace each other's checkpoints. Wait for it to end, or give this run "
            "another OUTPUT_DIR") from None
    previous = _read_holder(fd)
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": datetime.datetime.now().isoformat(timespec="seconds"),
          "command": " ".join(sys.argv)}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(me).encode("utf-8"))
    claim = _CLAIMS[key_path] = RunFolderClaim(path, fd, previous)
    aside = os.path.join(output_dir, _CONFIG_ASIDE)
    if os.path.isfile(aside):  # left by an evaluation killed inside run_config_kept
        os.replace(aside, os.path.join(output_dir, "config.yaml"))
        logger.warning(f"Put back {output_dir}/config.yaml, which a stopped evaluation had "
                       f"renamed {_CONFIG_ASIDE}")
    return claim


_CONFIG_ASIDE = "config.yaml.kept"


@contextlib.contextmanager
def run_config_kept(output_dir: str, keep: bool):
    """Around Detectron2's ``default_setup``, which writes ``output_dir/config.yaml``: with
    ``keep`` (``--eval-only``) the run's own ``config.yaml`` stays and the new one becomes
    ``eval_config.yaml``. Meanwhile the run's file is ``config.yaml.kept`` (one a killed process
    left is put back by :func:`claim_run_folder`). Only the main process writes."""
    path = os.path.join(output_dir, "config.yaml")
    aside = os.path.join(output_dir, _CONFIG_ASIDE)
    keep = bool(keep and output_dir and comm.is_main_process() and os.path.isfile(path))
    if keep:
        os.replace(path, aside)
    try:
        yield
    finally:
        if keep:
            if os.path.isfile(path):
                os.replace(path, os.path.join(output_dir, "eval_config.yaml"))
            os.replace(aside, path)


# ---- does a checkpoint fit? --------------------------------------------------------------------
def tensors_that_differ(model_state: dict, checkpoint_state: dict) -> List[str]:
    """``"name: checkpoint (64, 256), model (128, 256)"`` per tensor whose shape differs, and
    ``"name: not in the checkpoint"`` / ``"name: not in the model"`` (BN counters aside)."""
    def shapes(state):
        return {k: tuple(v.shape) for k, v in state.items()
                if hasattr(v, "shape") and not k.endswith("num_batches_tracked")}

    ours, theirs = shapes(model_state), shapes(checkpoint_state)
    found = [f"{k}: checkpoint {theirs[k]}, model {ours[k]}"
             for k in ours if k in theirs and theirs[k] != ours[k]]
    found += [f"{k}: not in the checkpoint" for k in ours if k not in theirs]
    found += [f"{k}: not in the model" for k in theirs if k not in ours]
    return found


def _optimizer_kind(group: dict) -> str:
    return "Adam-type" if "betas" in group else "SGD" if "momentum" in group else "other"


def _optimizer_differences(optimizer_state: dict, saved: dict) -> List[str]:
    ours, theirs = optimizer_state.get("param_groups", []), saved.get("param_groups", [])
    if len(ours) != len(theirs):
        return [f"optimizer: {len(theirs)} parameter groups in the checkpoint, {len(ours)} here"]
    found = []
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if _optimizer_kind(a) != _optimizer_kind(b):
            found.append(f"optimizer: {_optimizer_kind(b)} in the checkpoint, "
                         f"{_optimizer_kind(a)} here")
            break
        if len(a["params"]) != len(b["params"]):
            found.append(f"optimizer group {i}: {len(b['params'])} parameters in the "
                         f"checkpoint, {len(a['params'])} here")
    return found


def config_differences(saved: dict, current: dict, limit: int = 12) -> List[str]:
    """``"KEY (A in the run's config.yaml, B now)"`` for each leaf key whose value differs
    between two nested dicts (up to ``limit`` and a count of the rest)."""
    a, b = dict(leaf_items(saved)), dict(leaf_items(current))
    differ = [k for k in sorted(set(a) | set(b)) if _plain(a.get(k)) != _plain(b.get(k))]
    lines = [f"{k} ({a.get(k, 'absent')!r} in the run's config.yaml, {b.get(k, 'absent')!r} now)"
             for k in differ[:limit]]
    if len(differ) > limit:
        lines.append(f"and {len(differ) - limit} more")
    return lines


def _plain(value):
    """A config value as YAML gives it back: tuples (nested too) as lists."""
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def check_resume_fits(checkpoint_file: str, model, optimizer, *, saved_config: Optional[dict],
                      current_config: dict, config_hint: str, checkpoint: dict) -> None:
    """
    Raise :class:`ResumeMismatchError` if ``checkpoint`` (the content of ``checkpoint_file``)
    holds model tensors or optimizer groups that do not fit ``model`` / ``optimizer``, naming them
    and the keys where ``current_config`` differs from ``saved_config`` (the run's ``config.yaml``
    as a dict, or None); ``config_hint``: how to resume with the run's own config.

    Raises:
        CheckpointReadError: for training (``optimizer`` given), the file holds no training
            state: neither a trainer state with its ``iteration`` nor a top-level ``iteration``
            and ``optimizer`` (tools/plain_train_net.py).
    """
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        return
    trainer = checkpoint.get("trainer")
    # the trainer's layouts, else an ``optimizer`` checkpointable (tools/plain_train_net.py)
    saved = train_step_state(trainer) or train_step_state(checkpoint)
    if optimizer is not None and not ((isinstance(trainer, dict) and "iteration" in trainer)
                                      or ("iteration" in checkpoint and saved is not None)):
        raise CheckpointReadError(
            f"cannot resume from {checkpoint_file}: it holds model weights but no training state "
            "(iteration, optimizer), so training would restart its schedule from iteration 1. "
            "Nothing in the run folder was changed. To start a new training from its weights, "
            f"give it as MODEL.WEIGHTS {checkpoint_file} (Python config: "
            f"train.init_checkpoint={checkpoint_file}) in another OUTPUT_DIR, without --resume")
    problems = tensors_that_differ(model.state_dict(), checkpoint["model"])
    if saved is not None and optimizer is not None:
        problems += _optimizer_differences(optimizer.state_dict(), saved["optimizer"])
    if not problems:
        return
    shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4
                                       else "")
    if saved_config is None:
        why = "the run folder has no config.yaml to compare with"
    else:
        changed = config_differences(saved_config, current_config)
        why = ("this config differs from the run's own config.yaml in " + "; ".join(changed)
               if changed else "this config equals the run's config.yaml (was the checkpoint "
               "written by another run?)")
    raise ResumeMismatchError(
        f"cannot resume from {checkpoint_file}: {len(problems)} of its tensors or optimizer "
        f"groups do not fit this config's model ({shown}); {why}. Nothing in the run folder was "
        f"changed. Resume with the run's own config ({config_hint}), or start this config in "
        "another OUTPUT_DIR")


# ---- both checks, before a tool writes into the folder -----------------------------------------
def _resume_checkpoint_file(output_dir: str) -> Optional[str]:
    """The file ``last_checkpoint`` names, its URL query stripped, if it is a file of the folder;
    else None (the resume refuses such a name)."""
    name = read_checkpoint_tag(output_dir)
    if name is None:
        return None
    name = urlparse(name)._replace(query="").geturl()
    path = os.path.join(output_dir, name)
    if os.path.dirname(name) or not os.path.isfile(path):
        return None
    return path


def _read_state(path: str) -> dict:
    """A checkpoint read (and refused) as :meth:`SafeCheckpointer.load` reads it."""
    data = load_weights_only(_opened_path(path))
    if not isinstance(data, dict):
        raise CheckpointReadError(f"{path} holds a {type(data).__name__}, not a state dict")
    return data


def _current_and_saved_config(run, output_dir):
    saved_path = os.path.join(output_dir, "config.yaml")
    try:
        saved = load_yaml_config(saved_path) if os.path.isfile(saved_path) else None
    except (ConfigError, OSError):
        saved = None
    if run.config is run.settings:  # a YAML config
        return dict(run.config), saved, f"--config-file {saved_path}"
    current = OmegaConf.to_container(run.config, resolve=False)
    return current, saved, "the config file and overrides the run was started with"


def _refuse_to_replace_checkpoints(output_dir: str, key: str, resume: bool) -> None:
    """Training into a folder with checkpoints only continues them: without ``--resume`` (a new
    run would replace them), or with it but no ``last_checkpoint`` naming one (Detectron2 would
    start from scratch), one :class:`ConfigError` naming the folder and the ways on."""
    found = sorted((n for n in os.listdir(output_dir) if _CHECKPOINT_RE.match(n)),  # newest first
                   key=lambda n: -1 if n == "model_final.pth" else -int(n[6:-4]))
    tag = os.path.join(output_dir, "last_checkpoint")
    has_tag = os.path.lexists(tag)
    shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    if not resume and (found or has_tag):
        raise ConfigError(
            f"{key} {output_dir} holds the checkpoints of an earlier run ("
            + (shown if found else "last_checkpoint") + "), which a new training would replace. "
            f"Continue that run with --resume, or give this run another {key} (nothing was "
            "changed)")
    if resume and found and not has_tag:
        raise ConfigError(
            f"--resume: {key} {output_dir} holds checkpoints ({shown}) but no last_checkpoint "
            "naming the one to continue from, so training would start from scratch and replace "
            f"them. Write the file name of the checkpoint to continue from into {tag} (e.g. "
            f"{found[0]}) and resume again, or give this run another {key} (nothing was changed)")


def claim_before_writing(cfg, *, resume: bool, train: bool = True) -> None:
    """Before a tool writes into ``cfg``'s run folder, the main process claims it, runs
    :func:`.run.check_config` and, with ``resume``, :func:`check_resume_fits` on the checkpoint
    the resume will load; every process raises the same error (none waits for a stopped one)."""
    run = as_run_config(cfg)
    output_dir = run.settings.OUTPUT_DIR
    key = run.key_names.get("OUTPUT_DIR", "OUTPUT_DIR")
    error = None
    if comm.is_main_process() and (output_dir or train):
        try:
            if not output_dir:
                raise ConfigError(f"{key} is empty: training writes its checkpoints, config.yaml "
                                  "and logs there; give it a folder")
            claim = claim_run_folder(output_dir, key)
            if claim.previous and claim.previous.get("pid") != os.getpid():
                logger.info(f"Claimed {output_dir}; it was last claimed by "
                            f"{_describe(claim.previous)}, which no longer holds it")
            model, optimizer = check_config(run, train=train)
            if train:
                _refuse_to_replace_checkpoints(output_dir, key, resume)
            checkpointer = SafeCheckpointer(model, output_dir)
            if resume and checkpointer.has_checkpoint():
                # the very file the resume will load, also when it falls back to an earlier one
                checkpoint, state = checkpointer.find_resume_checkpoint(_read_state, warn=False)
                current, saved, hint = _current_and_saved_config(run, output_dir)
                check_resume_fits(checkpoint, model, optimizer, saved_config=saved,
                                  current_config=current, config_hint=hint, checkpoint=state)
            elif not train:  # an evaluation of a random model (before: after setup wrote logs)
                require_weights(run, run.settings.MODEL.WEIGHTS,
                                resume_dir=output_dir if resume else None)
        except Exception as e:  # noqa: BLE001 (raised below, on every process)
            error = e
    if comm.get_world_size() > 1:
        error = comm.all_gather(error)[0]
    if error is not None:
        raise error


# ---- a run folder describes itself -----------------------------------------------------------
# The callables a Python run's config.yaml may name (--run): those of the modules that make models,
# mappers, loaders, optimizers and schedules; a name outside _ROOTS is not even imported.
_ROOTS = ("pointrend_seg", "detectron2", "torch", "fvcore")
_MODULES = re.compile(r"(pointrend_seg\.(modeling|data|evaluation)|detectron2\.(modeling|layers|"
                      r"data\.(build|transforms|common)|solver)|torch\.nn|torch\.optim|"
                      r"fvcore\.common\.param_scheduler)(\.|$)")


def _allowed_target(name: str) -> bool:
    if name.split(".")[0] not in _ROOTS:
        return False
    try:
        obj = locate(name)
    except Exception:
        return False
    return ((inspect.isclass(obj) or inspect.isfunction(obj))
            and bool(_MODULES.match(getattr(obj, "__module__", "") or "")))


def _targets(node):
    if isinstance(node, dict):
        if "_target_" in node:
            yield str(node["_target_"])
        node = node.values()
    if isinstance(node, (list, tuple)) or type(node).__name__ == "dict_values":
        for value in node:
            yield from _targets(value)


def load_run_folder(folder: str, weights: Optional[str] = None, opts=(), device=None):
    """
    (config, weights) of a run folder of ``tools/train_net.py``: its ``config.yaml`` with the
    overrides ``opts`` and ``device`` (a Python run's read as data, its ``_target_`` callables
    limited to :data:`_MODULES`), and ``weights`` (default: ``model_final.pth``, else the
    checkpoint ``last_checkpoint`` names).

    Raises:
        ConfigError: no config.yaml or checkpoint there, or a callable a run folder may not
            name, naming the folder.
    """
    path = os.path.join(folder, "config.yaml")
    if not os.path.isfile(path):
        raise ConfigError(f"--run {folder}: no config.yaml there (not a run folder of "
                          "tools/train_net.py)")
    data = load_yaml_config(path)
    python = bool({"model", "train"} & set(data))  # a Python run's, saved by LazyConfig.save
    opts = list(opts) + device_override(python, device)
    if python:
        config = OmegaConf.create(data)
        check_python_overrides(config, opts, path)
        config = LazyConfig.apply_overrides(config, opts)
        bad = sorted({t for t in _targets(OmegaConf.to_container(config))
                      if not _allowed_target(t)})
        if bad:
            raise ConfigError(f"--run {folder}: config.yaml names callables a run folder may not "
                              f"name (not loaded): {', '.join(bad[:5])}")
    else:
        config = build_config(path, opts)
    if weights is None:
        final = os.path.join(folder, "model_final.pth")
        weights = final if os.path.isfile(final) else _resume_checkpoint_file(folder)
        if weights is None:
            raise ConfigError(f"--run {folder}: no model_final.pth and no last_checkpoint: "
                              "give --weights")
    return config, weights
