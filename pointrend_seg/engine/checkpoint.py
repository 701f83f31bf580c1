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
"""
import os
import pickle
import re
import uuid

import torch

from detectron2.checkpoint import DetectionCheckpointer

__all__ = [
    "BackboneMismatchError",
    "SafeCheckpointer",
    "UnsafeCheckpointError",
    "atomic_write",
    "load_weights_only",
]

_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp\.(?P<pid>\d+)\.[0-9a-f]{8}$")


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A ``.pth``/``.pt`` file holding pickled objects that ``weights_only`` loading refuses."""


class BackboneMismatchError(ValueError):
    """A checkpoint that fills less than half of the model's backbone tensors."""


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


def atomic_write(path, write_fn):
    """
    Write ``path`` atomically: ``write_fn(f)`` writes into a binary file object of a temporary
    file in the same directory, which is flushed, fsync-ed and renamed to ``path`` only if
    ``write_fn`` returned normally. On any error the temporary file is removed, ``path`` keeps
    its previous content (or stays absent), and the error propagates.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(
        directory, f".{os.path.basename(path)}.tmp.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    )
    try:
        with open(tmp, "xb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


def load_weights_only(filename):
    """
    ``torch.load(filename, map_location="cpu", weights_only=True)``; a file that holds other
    pickled objects raises :class:`UnsafeCheckpointError` naming the file.
    """
    try:
        return torch.load(filename, map_location=torch.device("cpu"), weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"refused to load {filename}: it holds pickled objects other than tensors and plain "
            "containers, and pointrend_seg reads .pth/.pt files with "
            "torch.load(weights_only=True) so that loading a file cannot run code. If you "
            "trust the file, re-save its state dict (torch.save({'model': state_dict}, path)) "
            f"in a trusted environment; see docs/checkpoints.md. torch said: {e}"
        ) from None


class SafeCheckpointer(DetectionCheckpointer):
    """
    ``DetectionCheckpointer`` with atomic saves, ``weights_only`` loading and the backbone
    coverage check (module docstring).

    Saving can be switched off for the rest of the run with :meth:`disable_saving` (the trainer
    does this after a non-finite loss, so no checkpoint is written from a diverged run).
    """

    def __init__(self, model, save_dir="", *, save_to_disk=None, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self._saving_disabled_reason = None
        self._loading_path = None

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
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        if os.path.basename(save_file) != basename:
            raise ValueError(f"checkpoint name {name!r} must not contain a directory")
        os.makedirs(self.save_dir, exist_ok=True)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

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
    def load(self, path, *args, **kwargs):
        self._loading_path = path  # for the message of _check_backbone_coverage
        try:
            return super().load(path, *args, **kwargs)
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
            # Detectron2 / Caffe2 model-zoo format: pickle.load, i.e. trusted files only.
            return super()._load_file(filename)
        loaded = load_weights_only(filename)
        if filename.endswith(".pyth"):
            # pycls checkpoints, as Detectron2 reads them (but without unpickling objects).
            if not isinstance(loaded, dict) or "model_state" not in loaded:
                raise ValueError(f"cannot load .pyth file {filename}: no 'model_state' in it")
            state = {
                k: v for k, v in loaded["model_state"].items()
                if not k.endswith("num_batches_tracked")
            }
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        if not isinstance(loaded, dict):
            raise ValueError(f"{filename} holds a {type(loaded).__name__}, not a state dict")
        if "model" not in loaded:
            loaded = {"model": loaded}
        return loaded


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
