"""
Crash-safe checkpoints: atomic writes and ``weights_only`` loading.

:class:`SafeCheckpointer` is Detectron2's ``DetectionCheckpointer`` with two changes:

* **Atomic saves.** A checkpoint (and the ``last_checkpoint`` tag naming it) is written to a
  temporary file in the same directory, flushed, ``fsync``-ed and renamed over the final name
  with ``os.replace``. A process killed in the middle of a save leaves the previous checkpoint
  and the previous ``last_checkpoint`` untouched (plus, at worst, a stray ``.<name>.tmp.<pid>``
  file that the next :meth:`~SafeCheckpointer.remove_stale_temp_files` deletes).
* **No arbitrary unpickling for ``.pth``/``.pt``.** Every file except ``.pkl`` is read with
  ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers; a file
  that needs more is refused with :class:`UnsafeCheckpointError`. ``.pkl`` files (Detectron2 /
  Caffe2 model zoo) go through Detectron2's reader, which calls :func:`pickle.load`, so they can
  run code: load only ``.pkl`` files you trust (``docs/checkpoints.md``).

It also refuses weights that do not fit the model's backbone: a checkpoint that fills less than
half of the backbone's tensors raises :class:`BackboneMismatchError` (e.g. a torchvision or timm
state dict given as ``MODEL.WEIGHTS`` without ``tools/convert_weights.py``: its names match
nothing, and training would silently start from scratch).

What a run folder may make it do (``--resume``, :meth:`SafeCheckpointer.resume_or_load`):

* **No pickles from a run folder.** ``last_checkpoint`` must name a file of the folder itself,
  and a ``.pkl`` is refused (:class:`UnsafeCheckpointError`): only ``.pkl`` files the user named
  (``MODEL.WEIGHTS`` on the command line or in the config) are unpickled.
* **A broken latest checkpoint is not the end.** When the file ``last_checkpoint`` names cannot be
  read (truncated, corrupt), the newest earlier ``model_<iter>.pth`` of the folder that can be read
  is loaded instead, with a warning naming both files.

And what it writes:

* **Only states known to be good.** A state whose parameters or buffers are not all finite is not
  written. With :attr:`SafeCheckpointer.confirm_with_next_loss` (the trainer sets it) a checkpoint
  is held back - fsync-ed under its temporary name - until the next iteration's loss, computed with
  exactly these weights, is finite (:meth:`~SafeCheckpointer.confirm_pending`); if it is not, the
  file is dropped (:meth:`~SafeCheckpointer.discard_pending`) and ``last_checkpoint`` keeps naming
  the last good state, the one to resume from with a lower learning rate.
* **A full disk says so.** A save that runs out of space raises :class:`CheckpointWriteError`
  ("no space left on the device while writing X; Y is intact").
"""
import errno
import logging
import os
import pickle
import re
import uuid

import torch

from detectron2.checkpoint import DetectionCheckpointer

from .compat import reset_after_failed_load

__all__ = [
    "BackboneMismatchError",
    "CheckpointReadError",
    "CheckpointWriteError",
    "PendingWrite",
    "SafeCheckpointer",
    "UnsafeCheckpointError",
    "atomic_write",
    "load_weights_only",
]

logger = logging.getLogger(__name__)

_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp\.(?P<pid>\d+)\.[0-9a-f]{8}$")
# Checkpoints the trainer writes: model_<iteration>.pth and model_final.pth.
_CHECKPOINT_RE = re.compile(r"^model_(?P<iter>\d+|final)\.pth$")


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A ``.pth``/``.pt`` file holding pickled objects that ``weights_only`` loading refuses."""


class BackboneMismatchError(ValueError):
    """A checkpoint that fills less than half of the model's backbone tensors."""


class CheckpointReadError(OSError):
    """A checkpoint file that cannot be read (truncated, corrupt, not a checkpoint)."""


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (no space left); the message says which file is
    intact. ``errno`` is ``ENOSPC``."""

    def __init__(self, message):
        super().__init__(message)
        self.errno = errno.ENOSPC


def _is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` or an error it was raised from (torch's zip writer re-raises a failed
    write as ``RuntimeError: unexpected pos``) is "no space left" or "quota exceeded"."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        error = error.__cause__ or error.__context__
    return False


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class PendingWrite:
    """
    A file written and fsync-ed under a temporary name in its final directory; :meth:`commit`
    renames it to its final name (atomically), :meth:`discard` deletes it.
    """

    def __init__(self, path, tmp):
        self.path, self.tmp = path, tmp

    def commit(self):
        os.replace(self.tmp, self.path)
        _fsync_dir(os.path.dirname(os.path.abspath(self.path)))

    def discard(self):
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def atomic_write(path, write_fn, *, commit=True):
    """
    Write ``path`` atomically: ``write_fn(f)`` writes into a binary file object of a temporary
    file in the same directory, which is flushed, fsync-ed and renamed to ``path`` only if
    ``write_fn`` returned normally. On any error the temporary file is removed, ``path`` keeps
    its previous content (or stays absent), and the error propagates.

    With ``commit=False`` the file is written but not renamed: the returned :class:`PendingWrite`
    does that (or deletes it) later.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(
        directory, f".{os.path.basename(path)}.tmp.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    )
    pending = PendingWrite(path, tmp)
    try:
        with open(tmp, "xb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        pending.discard()
        raise
    if commit:
        try:
            pending.commit()
        except BaseException:
            pending.discard()
            raise
    return pending


def load_weights_only(filename):
    """
    ``torch.load(filename, map_location="cpu", weights_only=True)``; a file that holds other
    pickled objects raises :class:`UnsafeCheckpointError`, one that cannot be read at all
    (truncated, corrupt, not a torch file) :class:`CheckpointReadError`, both naming the file.
    """
    try:
        return torch.load(filename, map_location=torch.device("cpu"), weights_only=True)
    except pickle.UnpicklingError as e:
        # A refused object names its "global"; other messages ("Unsupported operand") are damage.
        if "global" not in str(e):
            raise CheckpointReadError(
                f"cannot read checkpoint {filename}: {type(e).__name__}: {e}") from None
        raise UnsafeCheckpointError(
            f"refused to load {filename}: it holds pickled objects other than tensors and plain "
            "containers, and pointrend_seg reads .pth/.pt files with "
            "torch.load(weights_only=True) so that loading a file cannot run code. If you "
            "trust the file, re-save its state dict (torch.save({'model': state_dict}, path)) "
            f"in a trusted environment; see docs/checkpoints.md. torch said: {e}"
        ) from None
    except (FileNotFoundError, IsADirectoryError):
        raise
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        # torch's zip reader: "PytorchStreamReader failed reading zip archive: failed finding
        # central directory" for a truncated file; EOFError / ValueError for other damage.
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointReadError(
            f"cannot read checkpoint {filename} (truncated or corrupt?): "
            f"{type(e).__name__}: {first_line}") from None


class SafeCheckpointer(DetectionCheckpointer):
    """
    ``DetectionCheckpointer`` with atomic saves, ``weights_only`` loading, the backbone
    coverage check, run folders that cannot make it unpickle, a fallback for a broken latest
    checkpoint, and checkpoints only of good states (module docstring).

    Saving can be switched off for the rest of the run with :meth:`disable_saving` (the trainer
    does this after a non-finite loss, so no checkpoint is written from a diverged run).

    Attributes:
        confirm_with_next_loss (bool): hold each saved checkpoint back (written, not yet under
            its name nor in ``last_checkpoint``) until :meth:`confirm_pending`; the trainer calls
            it once the next iteration's loss is finite, or :meth:`discard_pending` if it is not.
    """

    def __init__(self, model, save_dir="", *, save_to_disk=None, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self._saving_disabled_reason = None
        self._loading_path = None
        self.confirm_with_next_loss = False
        self._pending = None  # (PendingWrite, basename)

    # ---- saving --------------------------------------------------------------------------
    def _is_local(self):
        return "://" not in self.save_dir

    def disable_saving(self, reason: str):
        """Make every later :meth:`save` a logged no-op."""
        self._saving_disabled_reason = reason


    def save(self, name: str, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        if self._saving_disabled_reason is not None:
            self.logger.warning(
                f"Not saving checkpoint {name!r}: {self._saving_disabled_reason}"
            )
            return
        if not self._is_local():  # e.g. a remote PathManager URI: no atomic rename there
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        bad = _non_finite_tensors(data)
        if bad:
            self.logger.error(
                f"Not saving checkpoint {name!r}: {len(bad)} of its tensors are not finite "
                f"(e.g. {', '.join(bad[:3])}); last_checkpoint keeps naming "
                f"{self.last_checkpoint_path() or 'nothing'}"
            )
            return
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        if os.path.basename(save_file) != basename:
            raise ValueError(f"checkpoint name {name!r} must not contain a directory")
        os.makedirs(self.save_dir, exist_ok=True)
        self.discard_pending()  # the same state, or one that was never confirmed
        self.logger.info(f"Saving checkpoint to {save_file}")
        try:
            pending = atomic_write(save_file, lambda f: torch.save(data, f),
                                   commit=not self.confirm_with_next_loss)
        except BaseException as e:
            if not _is_disk_full(e):
                raise
            intact = self.last_checkpoint_path()
            raise CheckpointWriteError(
                f"no space left on the device while writing {save_file}; "
                + (f"{intact} is intact (last_checkpoint names it)" if intact
                   else "no earlier checkpoint of this run was written")
                + ". Free some space and continue with --resume",
            ) from None
        if self.confirm_with_next_loss:
            self._pending = (pending, basename)
        else:
            self.tag_last_checkpoint(basename)

    def confirm_pending(self):
        """Put the held-back checkpoint (if any) under its name and in ``last_checkpoint``."""
        if self._pending is None:
            return
        pending, basename = self._pending
        self._pending = None
        try:
            pending.commit()
        except BaseException as e:
            pending.discard()
            if not _is_disk_full(e):
                raise
            raise CheckpointWriteError(
                f"no space left on the device while writing {pending.path}; last_checkpoint "
                f"still names {self.last_checkpoint_path() or 'nothing'}") from None
        self.tag_last_checkpoint(basename)

    def discard_pending(self, reason: str = ""):
        """Delete the held-back checkpoint (if any), logging ``reason``."""
        if self._pending is None:
            return
        pending, basename = self._pending
        self._pending = None
        pending.discard()
        if reason:
            self.logger.warning(f"Dropped checkpoint {basename}: {reason}")

    def judge_pending(self, problem, iteration: int):
        """
        After an iteration whose loss was computed with the held-back checkpoint's weights:
        confirm it when ``problem`` is None, else drop it (``problem``: why the loss shows a
        diverging update, e.g. from :class:`~.train_step.LossSpikeGuard`).
        """
        if problem is None:
            self.confirm_pending()
        else:
            self.discard_pending(
                f"at iteration {iteration}, computed with its weights, {problem} (a diverging "
                f"update); last_checkpoint keeps naming {self.last_checkpoint_path() or 'nothing'}")

    def diverged(self, error):
        """
        After a non-finite loss (``error``, a :class:`~.train_step.NonFiniteLossError`): drop the
        held-back checkpoint (its weights gave that loss), save nothing more, and return the
        error naming the checkpoint to continue from.
        """
        self.discard_pending(f"its weights gave a non-finite loss at iteration {error.iteration}")
        self.disable_saving(f"the loss became non-finite at iteration {error.iteration}")
        return error.with_resume_from(self.last_checkpoint_path())

    def last_checkpoint_path(self):
        """The file ``save_dir/last_checkpoint`` names, or None."""
        if not self.save_dir or not self.has_checkpoint():
            return None
        return self.get_checkpoint_file()

    def tag_last_checkpoint(self, last_filename_basename: str):
        if not self._is_local():
            return super().tag_last_checkpoint(last_filename_basename)
        atomic_write(
            os.path.join(self.save_dir, "last_checkpoint"),
            lambda f: f.write(last_filename_basename.encode("utf-8")),
        )

    def remove_stale_temp_files(self):
        """
        Delete temporary files left in ``save_dir`` by saves of processes that no longer run
        (e.g. killed mid-write). Returns the removed paths.
        """
        if not self.save_dir or not self._is_local() or not os.path.isdir(self.save_dir):
            return []
        removed = []
        for entry in os.listdir(self.save_dir):
            m = _TEMP_RE.match(entry)
            if m is None or _pid_alive(int(m.group("pid"))):
                continue
            path = os.path.join(self.save_dir, entry)
            try:
                os.unlink(path)
                removed.append(path)
            except OSError:
                pass
        if removed:
            self.logger.info(f"Removed {len(removed)} partial checkpoint file(s): {removed}")
        return removed

    # ---- loading -------------------------------------------------------------------------
    def resume_or_load(self, path: str, *, resume: bool = True):
        """
        As Detectron2's: with ``resume`` and a ``last_checkpoint`` in ``save_dir``, the checkpoint
        it names with all its state; otherwise ``path`` (e.g. ``MODEL.WEIGHTS``), model only.
        What a run folder can make it load is limited (module docstring): ``last_checkpoint``
        must name a file of ``save_dir`` that is not a ``.pkl``, and if that file is missing or
        cannot be read the newest earlier readable ``model_<iter>.pth`` of the folder is loaded,
        with a warning.

        Raises:
            UnsafeCheckpointError: ``last_checkpoint`` names a ``.pkl`` or a file elsewhere.
            CheckpointReadError: neither that file nor an earlier checkpoint can be read.
        """
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        tag = os.path.join(self.save_dir, "last_checkpoint")
        named = self.get_checkpoint_file()
        basename = os.path.relpath(named, self.save_dir) if self._is_local() else named
        if self._is_local() and (os.path.dirname(basename) or basename in ("", ".", "..")):
            raise UnsafeCheckpointError(
                f"refused to resume: {tag} names {basename!r}, which is not a file of "
                f"{self.save_dir}; pointrend_seg resumes only from checkpoints in the run folder. "
                "To start from another file, give it as MODEL.WEIGHTS without --resume"
            )
        if named.endswith(".pkl"):
            raise UnsafeCheckpointError(
                f"refused to resume from {named}: {tag} names a .pkl file, which would be "
                "unpickled, and unpickling can run code. pointrend_seg writes .pth checkpoints "
                "only, so something else changed this run folder. .pkl files are unpickled "
                "only when you name them yourself: if you trust this one, give it as "
                "MODEL.WEIGHTS (without --resume); see docs/bad_inputs.md, 'What is trusted'"
            )
        self.logger.info(f"Loading checkpoint from {named} ({tag})")
        try:
            return self.load(named)
        except (CheckpointReadError, FileNotFoundError) as error:
            if not self._is_local():
                raise
            for candidate in self._earlier_checkpoints(basename):
                try:
                    ret = self.load(candidate)
                except (CheckpointReadError, FileNotFoundError):
                    continue
                self.logger.warning(
                    f"{named} (named by {tag}) cannot be read ({error}); resumed from "
                    f"{candidate} instead, the newest earlier checkpoint that can be read"
                )
                return ret
            raise CheckpointReadError(
                f"{error}; {tag} names it and no earlier checkpoint of {self.save_dir} can be "
                "read: start again without --resume (or with MODEL.WEIGHTS of another run)"
            ) from None

    def _earlier_checkpoints(self, basename):
        """The ``model_<iter>.pth`` files of ``save_dir`` before ``basename``, newest first."""
        m = _CHECKPOINT_RE.match(basename)
        limit = None if m is None or m.group("iter") == "final" else int(m.group("iter"))
        found = []
        for entry in os.listdir(self.save_dir):
            m = _CHECKPOINT_RE.match(entry)
            if m is None or m.group("iter") == "final" or entry == basename:
                continue
            if limit is None or int(m.group("iter")) < limit:
                found.append((int(m.group("iter")), os.path.join(self.save_dir, entry)))
        return [path for _, path in sorted(found, reverse=True)]

    def load(self, path, *args, **kwargs):
        # "file.pth?matching_heuristics=True": Detectron2 main's query (ViTDet's configs)
        if path and "://" not in path and not os.path.exists(path.split("?", 1)[0]):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        self._loading_path = path  # for the message of _check_backbone_coverage
        try:
            return super().load(path, *args, **kwargs)
        except BaseException:
            reset_after_failed_load(self)
            raise
        finally:
            self._loading_path = None

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        self._check_backbone_coverage(incompatible)
        return incompatible

    def _check_backbone_coverage(self, incompatible):
        """
        Raise :class:`BackboneMismatchError` if the checkpoint just loaded filled less than half
        of the tensors of ``model.backbone`` (parameters and norm statistics; BN's
        ``num_batches_tracked`` counters aside). Models without a ``backbone`` are not checked.
        """
        backbone = getattr(self.model, "backbone", None)
        if not isinstance(backbone, torch.nn.Module):
            return
        keys = [f"backbone.{k}" for k in backbone.state_dict()
                if not k.endswith("num_batches_tracked")]
        missing = set(incompatible.missing_keys)
        matched = sum(k not in missing for k in keys)
        if not keys or 2 * matched >= len(keys):
            return
        wrong_shape = sum(k.startswith("backbone.") for k, *_ in incompatible.incorrect_shapes)
        path = self._loading_path
        raise BackboneMismatchError(
            f"{path} fills {matched} of the {len(keys)} backbone tensors of this model"
            + (f" ({wrong_shape} more have the right name but another shape: another depth "
               "or width?)" if wrong_shape else "")
            + f"; {len(incompatible.unexpected_keys)} of its tensors match no name of the "
            "model. Training from it would start the backbone from scratch. If it holds "
            "torchvision or timm ImageNet ResNet weights, convert them first:\n"
            f"  python tools/convert_weights.py {path} "
            f"{os.path.splitext(os.path.basename(str(path)))[0]}_converted.pth\n"
            "then give the converted file as MODEL.WEIGHTS with the config overrides it prints"
        )

    def _load_file(self, filename):
        if filename.endswith(".pkl"):
            # Detectron2 / Caffe2 model-zoo format: pickle.load, i.e. trusted files only (named
            # by the user: resume_or_load refuses a .pkl that a run folder names).
            try:
                return super()._load_file(filename)
            except (pickle.UnpicklingError, EOFError, ValueError) as e:
                raise CheckpointReadError(
                    f"cannot read checkpoint {filename}: {type(e).__name__}: {e}") from None
        loaded = load_weights_only(filename)
        if filename.endswith(".pyth"):
            # pycls checkpoints, as Detectron2 reads them (but without unpickling objects).
            if not isinstance(loaded, dict) or "model_state" not in loaded:
                raise CheckpointReadError(
                    f"cannot load .pyth file {filename}: no 'model_state' in it")
            state = {
                k: v for k, v in loaded["model_state"].items()
                if not k.endswith("num_batches_tracked")
            }
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        if not isinstance(loaded, dict):
            raise CheckpointReadError(
                f"{filename} holds a {type(loaded).__name__}, not a state dict")
        if "model" not in loaded:
            loaded = {"model": loaded}
        return loaded


def _non_finite_tensors(data, prefix=""):
    """Names (dotted paths) of the floating-point tensors in nested dicts / lists ``data`` (a
    checkpoint: model weights, optimizer moments, ...) that hold a NaN or an inf."""
    if isinstance(data, torch.Tensor):
        ok = not data.is_floating_point() or bool(torch.isfinite(data).all())
        return [] if ok else [prefix or "tensor"]
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, (list, tuple)):
        items = enumerate(data)
    else:
        return []
    bad = []
    for key, value in items:
        bad += _non_finite_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    return bad


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
