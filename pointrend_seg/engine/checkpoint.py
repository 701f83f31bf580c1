"""
Crash-safe checkpoints (docs/checkpoints.md): :class:`SafeCheckpointer` is Detectron2's
``DetectionCheckpointer`` with atomic saves of states known to be good (all tensors finite; with
``confirm_with_next_loss``, held back until the next loss is finite), loading that never runs
code from a file (``torch.load(weights_only=True)``; ``.pkl`` model-zoo files with
:func:`load_model_zoo_pkl`), weights checked against the model (:class:`BackboneMismatchError`,
:class:`IncompleteWeightsError`), run folders that can make ``--resume`` load only their own
``.pth`` files, with a fallback for a broken latest one, and full disks that say so
(:class:`CheckpointWriteError`).
"""
import errno
import importlib
import io
import logging
import os
import pickle
import pickletools
import re
import zipfile
from urllib.error import URLError
from urllib.parse import parse_qs, urlparse

import numpy as np
import torch

from detectron2.checkpoint import DetectionCheckpointer

from ..files import atomic_write, is_disk_full, remove_stale_temp_files
from .compat import checkpointer_drops_url_query, reset_after_failed_load, url_query_being_loaded

__all__ = ["BackboneMismatchError", "CheckpointReadError", "CheckpointWriteError",
           "IncompleteWeightsError", "SafeCheckpointer", "UnsafeCheckpointError",
           "load_model_zoo_pkl", "load_weights_only", "read_checkpoint_tag", "read_model_info"]

logger = logging.getLogger(__name__)

# Checkpoints the trainer writes: model_<iteration>.pth and model_final.pth.
_CHECKPOINT_RE = re.compile(r"^model_(?P<iter>\d+|final)\.pth$")


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint that would run code to load: pickled objects other than weights (refused
    before anything of them runs), or a run folder naming a file that is not its own."""


class BackboneMismatchError(ValueError):
    """A checkpoint that fills less than half of the model's backbone tensors."""


class IncompleteWeightsError(ValueError):
    """Weights for inference that leave model tensors uninitialised (missing from the file, or
    of another shape there): the model would predict with random weights in those places."""


class CheckpointReadError(OSError):
    """A checkpoint file that cannot be read (truncated, corrupt, not a checkpoint)."""


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (no space left); the message says which file is
    intact. ``errno`` is ``ENOSPC``."""

    def __init__(self, message):
        super().__init__(message)
        self.errno = errno.ENOSPC


def load_weights_only(filename):
    """
    ``torch.load(filename, map_location="cpu", weights_only=True)``; a file that holds other
    pickled objects raises :class:`UnsafeCheckpointError`, one that cannot be read at all
    (truncated, corrupt, not a torch file) :class:`CheckpointReadError`, both naming the file;
    told apart by :func:`_refused_pickle` (docs/checkpoints.md, "Trusting checkpoint files"). An
    unsafe file must stop a resume, a damaged one may be skipped for an earlier one.
    """
    _check_zip_entries(filename)
    try:
        return torch.load(filename, map_location=torch.device("cpu"), weights_only=True)
    except (FileNotFoundError, IsADirectoryError):
        raise
    except Exception as e:  # torch's zip reader, its unpickler, struct / EOF errors, ...
        refused = isinstance(e, pickle.UnpicklingError)
        unsafe, what = _refused_pickle(filename, refused=refused)
        if unsafe:
            raise UnsafeCheckpointError(
                f"refused to load {filename}: it holds pickled objects other than tensors and "
                f"plain containers ({what or _torch_reason(e)}), and pointrend_seg reads "
                ".pth/.pt files with torch.load(weights_only=True) so that loading a file cannot "
                "run code. If you trust the file, re-save its state dict "
                "(torch.save({'model': state_dict}, path)) in a trusted environment; see "
                "docs/checkpoints.md"
            ) from None
        # e.g. "PytorchStreamReader failed reading zip archive: failed finding central
        # directory" for a truncated zip file; EOFError / struct.error for a legacy one.
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        reason = what if refused else f"{type(e).__name__}: {first_line}"
        raise CheckpointReadError(
            f"cannot read checkpoint {filename} (truncated or corrupt?): {reason}") from None


def _check_zip_entries(filename):
    """
    Raise :class:`CheckpointReadError` naming ``filename`` if it is a zip file (torch's format)
    with a compressed entry, or whose entries hold more bytes than the file: torch.save stores
    every entry as it is, and torch.load would unpack a compressed one whole before any check (a
    2 MB file of deflated zeros took 2.8 GB). Checked from the zip's directory, reading nothing
    else; a damaged zip is left to torch.load, which says so.
    """
    with open(filename, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return
    try:
        with zipfile.ZipFile(filename) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError):
        return
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_STORED:
            raise CheckpointReadError(
                f"refused to load {filename}: its zip entry {entry.filename} is compressed "
                f"({entry.compress_size} bytes that unpack to {entry.file_size}); torch.save "
                "stores every entry uncompressed, and torch.load would unpack it into memory "
                "before anything is checked. Re-save the weights with torch.save")
    total, size = sum(entry.file_size for entry in entries), os.path.getsize(filename)
    if total > size:
        raise CheckpointReadError(
            f"refused to load {filename}: its zip entries claim {total} bytes, more than the "
            f"file's {size} (not a file torch.save wrote)")


def read_model_info(filename) -> dict:
    """The ``model_info`` a checkpoint of ours carries (class names and colours; see
    :class:`SafeCheckpointer`), read without loading its tensors (``weights_only``, memory-mapped);
    {} for a file without it or that is not a readable local ``.pth`` (loading the weights reports
    what is wrong with it)."""
    path = _opened_path(str(filename))
    if not (path.endswith((".pth", ".pt")) and os.path.isfile(path)):
        return {}
    try:
        _check_zip_entries(path)
        info = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get(
            "model_info", {})
    except Exception:
        return {}
    return info if isinstance(info, dict) else {}


def _torch_reason(error) -> str:
    """The line of torch's long weights_only message that says what it refused."""
    lines = [line.strip() for line in str(error).splitlines()]
    found = [line for line in lines if "Unsupported" in line or "GLOBAL" in line]
    return (found or ["torch.load(weights_only=True) refused it"])[0]


# What torch.save itself writes into a checkpoint's pickle: torch's rebuild functions, storages
# and dtypes, OrderedDict, and (protocol 2) bytes as _codecs.encode.
_PLAIN_BUILTINS = {"set", "frozenset", "tuple", "list", "dict", "int", "float", "complex", "bool",
                   "bytes", "bytearray", "str", "slice", "range"}


def _written_by_torch(module: str, name: str) -> bool:
    return (module == "torch" or module.startswith("torch.")
            or (module, name) in (("collections", "OrderedDict"), ("_codecs", "encode"))
            or (module in ("builtins", "__builtin__") and name in _PLAIN_BUILTINS))


def _pickle_globals(f, max_pickles: int):
    """
    Read up to ``max_pickles`` pickles in a row from the binary file ``f`` with
    :func:`pickletools.genops` (which parses, and runs nothing). Returns ``(intact, globals)``:
    whether each pickle read ended with its STOP (up to the end of the file), and the
    ``(module, name)`` of every global they import, in order (``"?"`` where a protocol 4 import
    takes names that were not pushed as plain strings).
    """
    found, strings, memo = [], [], {}
    for _ in range(max_pickles):
        if not f.read(1):
            return True, found
        f.seek(-1, os.SEEK_CUR)
        last = None  # the string the previous opcode pushed, for the memo
        try:
            for op, arg, _ in pickletools.genops(f):
                pushed = None
                if op.name in ("GLOBAL", "INST"):
                    module, _, name = str(arg).partition(" ")
                    found.append((module, name))
                elif op.name == "STACK_GLOBAL":
                    found.append(tuple(strings[-2:]) if len(strings) >= 2 else ("?", "?"))
                elif op.name.startswith("EXT"):
                    found.append(("?", f"extension {arg}"))
                elif "UNICODE" in op.name or "STRING" in op.name:
                    pushed = str(arg)
                elif op.name == "MEMOIZE":
                    memo[len(memo)] = last
                elif op.name.endswith("PUT"):
                    memo[arg] = last
                elif op.name.endswith("GET"):
                    pushed = memo.get(arg)
                if pushed is not None:
                    strings.append(pushed)
                last = pushed
        except Exception:  # a truncated or corrupt stream
            return False, found
    return True, found


def _refused_pickle(filename, *, refused: bool):
    """
    ``(unsafe, what)`` for a file that ``torch.load(weights_only=True)`` could not load: its
    pickle (a zip checkpoint's ``data.pkl``; else the file itself, as torch's legacy format and a
    plain pickle are read: up to five pickles in a row) imports a global torch's writer never
    writes -> unsafe, naming it; it is intact and torch ``refused`` it (an ``UnpicklingError``)
    -> unsafe (a real pickle that weights_only loading refuses); else damaged.
    """
    try:
        with open(filename, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"  # as torch.load tells its two formats apart
        if is_zip:
            with zipfile.ZipFile(filename) as archive:
                names = [n for n in archive.namelist() if n.split("/")[-1] == "data.pkl"]
                if not names:
                    return False, "a zip file without the data.pkl of a torch checkpoint"
                intact, found = _pickle_globals(io.BytesIO(archive.read(names[0])), 1)
        else:
            with open(filename, "rb") as f:
                intact, found = _pickle_globals(f, 5)
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError) as e:
        return False, f"{type(e).__name__}: {e}"
    foreign = [f"{m}.{n}" for m, n in found if not _written_by_torch(m, n)]
    if foreign:
        return True, f"it would import {foreign[0]}"
    if intact and refused:
        return True, ""
    return False, "its pickle ends early or holds bytes that are not pickle opcodes"


# ---- .pkl: Detectron2 / Caffe2 model-zoo files, unpickled as data only ------------------------
# Everything such a file holds: numpy arrays (rebuilt by _reconstruct, or _frombuffer with
# pickle protocol 5), their dtypes, numpy scalars, OrderedDicts, and bytes as protocol 2 writes
# them (_codecs.encode). numpy 2 writes numpy._core where numpy 1 wrote numpy.core.
_MODEL_ZOO_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
}


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as pickle protocol 2 uses it for bytes, and no other codec."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _ModelZooUnpickler(pickle.Unpickler):
    """An unpickler that imports only :data:`_MODEL_ZOO_GLOBALS` (Python's "restricting
    globals"); any other global is an :class:`UnsafeCheckpointError` naming it and the file."""

    def __init__(self, file, filename):
        super().__init__(file, encoding="latin1")  # Python 2 (Caffe2) pickles, as Detectron2
        self.filename = filename

    def find_class(self, module, name):
        canonical = "numpy.core" + module[len("numpy._core"):] if module.startswith(
            "numpy._core") else module
        if (canonical, name) not in _MODEL_ZOO_GLOBALS:
            raise UnsafeCheckpointError(
                f"refused to load {self.filename}: its pickle imports {module}.{name}, which is "
                "not part of a Detectron2 / Caffe2 model-zoo checkpoint (numpy arrays, numbers, "
                "strings, dicts and lists) and could run code; nothing of it was run. If you "
                "trust the file, load it once in a trusted environment and save its weights as a "
                ".pth state dict; see docs/checkpoints.md")
        if canonical == "_codecs":
            return _latin1_encode
        if canonical.startswith("numpy.core"):  # numpy 2's own module first: no deprecation
            try:
                return getattr(importlib.import_module("numpy._core" + canonical[10:]), name)
            except ImportError:
                pass
        return getattr(importlib.import_module(canonical), name)


def load_model_zoo_pkl(filename):
    """
    A Detectron2 / Caffe2 model-zoo ``.pkl`` as Detectron2's ``DetectionCheckpointer`` returns
    it: a Detectron2 file (``"model"`` and ``"__author__"``) as it is; otherwise a Caffe2 one,
    its ``"blobs"`` (if any) without the ``*_momentum`` entries, as ``{"model": ...,
    "__author__": "Caffe2", "matching_heuristics": True}``. Unpickled by
    :class:`_ModelZooUnpickler`, which rebuilds data only.

    Raises:
        UnsafeCheckpointError: the pickle imports anything else (named).
        CheckpointReadError: the file is damaged or not a dict.
    """
    try:
        with open(filename, "rb") as f:
            data = _ModelZooUnpickler(f, filename).load()
    except (UnsafeCheckpointError, FileNotFoundError, IsADirectoryError):
        raise
    except Exception as e:  # any damage: EOFError, UnpicklingError, a numpy error, ...
        raise CheckpointReadError(
            f"cannot read checkpoint {filename}: {type(e).__name__}: {e}") from None
    if not isinstance(data, dict):
        raise CheckpointReadError(
            f"{filename} holds a {type(data).__name__}, not a model-zoo checkpoint (a dict)")
    if "model" in data and "__author__" in data:
        return data
    blobs = data.get("blobs", data)  # detection models have "blobs"; ImageNet ones do not
    if not isinstance(blobs, dict):
        raise CheckpointReadError(f"{filename}: 'blobs' is a {type(blobs).__name__}, not a dict")
    weights = {k: v for k, v in blobs.items() if not str(k).endswith("_momentum")}
    return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}


def _opened_path(path: str) -> str:
    """The local file Detectron2's ``DetectionCheckpointer.load`` opens for ``path``: on
    Detectron2 ``main`` without its URL query (``x.pth?matching_heuristics=True`` -> ``x.pth``)."""
    return _without_query(path) if checkpointer_drops_url_query() else path


def _without_query(path: str) -> str:
    return urlparse(path)._replace(query="").geturl() if "?" in path else path


def _folder_given_as_checkpoint(folder: str) -> str:
    """The message for a checkpoint path that is a folder (fvcore: "AssertionError: Checkpoint
    ... not found!" and a traceback): the file to give instead, and ``--run`` for a run folder."""
    example = os.path.join(folder, "model_final.pth")
    run_folder = any(os.path.isfile(os.path.join(folder, name))
                     for name in ("last_checkpoint", "config.yaml"))
    return (f"checkpoint {folder} is a folder; give the checkpoint file, e.g. {example}"
            + (f" (it is a run folder: tools/demo.py and tools/export_model.py take it whole as "
               f"--run {folder})" if run_folder else ""))


LAST_CHECKPOINT_MAX_BYTES = 4096


def read_checkpoint_tag(save_dir: str):
    """
    The checkpoint name ``save_dir/last_checkpoint`` holds (stripped; None without the file): the
    one reading of the tag for both the resume and the check before it (before, fvcore read all
    of it and this project 4096 characters, so a tag of 5000 spaces and a name resumed
    unchecked).

    Raises:
        CheckpointReadError: naming the file, when it is longer than a file name can be
            (``LAST_CHECKPOINT_MAX_BYTES``), not UTF-8 or not a file.
    """
    tag = os.path.join(save_dir, "last_checkpoint")
    try:
        with open(tag, "rb") as f:
            data = f.read(LAST_CHECKPOINT_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CheckpointReadError(f"cannot read {tag}: {e.strerror or e}") from None
    why = f"over {LAST_CHECKPOINT_MAX_BYTES} bytes" if len(data) > LAST_CHECKPOINT_MAX_BYTES \
        else None
    if why is None:
        try:
            return data.decode("utf-8").strip()
        except UnicodeDecodeError:
            why = "not UTF-8 text"
    raise CheckpointReadError(
        f"{tag} does not hold the name of a checkpoint ({why}); pointrend_seg writes there the "
        "file name of the run's latest checkpoint, e.g. model_0000004.pth. Write the name of "
        "the checkpoint to continue from into it, or start again in another OUTPUT_DIR")


class SafeCheckpointer(DetectionCheckpointer):
    """
    Detectron2's ``DetectionCheckpointer``, made safe (module docstring). Saving can be switched
    off for the rest of the run with :meth:`disable_saving` (the trainer does this after a
    non-finite loss, so no checkpoint is written from a diverged run).

    Args:
        require_all_weights: refuse a file that leaves any model tensor uninitialised
            (:class:`IncompleteWeightsError`): for inference, where such a model predicts with
            random weights. Training from a checkpoint (e.g. ImageNet backbone weights) is partial
            by nature and keeps the default, False.

    Attributes:
        model_info (dict): saved in every checkpoint as ``model_info`` (the trainer's: the class
            names and colours, ``{"classes": [...], "colors": [[r, g, b], ...]}``), so that they
            travel with the model (:func:`read_model_info`).
        confirm_with_next_loss (bool): hold each saved checkpoint back (written, not yet under
            its name nor in ``last_checkpoint``) until :meth:`confirm_pending`; the trainer calls
            it once the next iteration's loss is finite, or :meth:`discard_pending` if it is not.
    """

    def __init__(self, model, save_dir="", *, save_to_disk=None, require_all_weights=False,
                 **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.require_all_weights = require_all_weights
        self._saving_disabled_reason = None
        self._loading_path = None
        self.confirm_with_next_loss = False
        self._pending = None  # (PendingWrite, basename)
        self.model_info = {}

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
        data = {"model": self.model.state_dict(),
                **{key: obj.state_dict() for key, obj in self.checkpointables.items()}, **kwargs,
                **({"model_info": dict(self.model_info)} if self.model_info else {})}
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
            self._raise_if_disk_full(e, save_file, lambda intact: (
                f"{intact} is intact (last_checkpoint names it)" if intact
                else "no earlier checkpoint of this run was written")
                + ". Free some space and continue with --resume")
            raise
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
            self._raise_if_disk_full(e, pending.path, lambda intact:
                                     f"last_checkpoint still names {intact or 'nothing'}")
            raise
        self.tag_last_checkpoint(basename)

    def _raise_if_disk_full(self, error, path, intact_text):
        """Raise :class:`CheckpointWriteError` if ``error`` is a full disk while writing ``path``;
        ``intact_text(last checkpoint or None)`` says what is intact."""
        if is_disk_full(error):
            raise CheckpointWriteError(f"no space left on the device while writing {path}; "
                                       + intact_text(self.last_checkpoint_path())) from None

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
        removed = remove_stale_temp_files(self.save_dir)
        if removed:
            self.logger.info(f"Removed {len(removed)} partial checkpoint file(s): {removed}")
        return removed

    # ---- loading -------------------------------------------------------------------------
    def get_checkpoint_file(self) -> str:
        """The file ``save_dir/last_checkpoint`` names (joined to ``save_dir``; "" without a
        tag), the tag read by :func:`read_checkpoint_tag` for a local folder."""
        if not self._is_local():
            return super().get_checkpoint_file()
        name = read_checkpoint_tag(self.save_dir)
        return "" if name is None else os.path.join(self.save_dir, name)

    def resume_or_load(self, path: str, *, resume: bool = True):
        """
        As Detectron2's: with ``resume`` and a ``last_checkpoint`` in ``save_dir``, the checkpoint
        it names with all its state; otherwise ``path`` (e.g. ``MODEL.WEIGHTS``), model only. If
        the named file is missing or cannot be read, the newest earlier readable
        ``model_<iter>.pth`` of the folder is loaded, with a warning (docs/checkpoints.md):
        :meth:`find_resume_checkpoint`, which ``tools/train_net.py`` also runs before it writes
        (to check that the file fits the config).

        Raises:
            UnsafeCheckpointError: ``last_checkpoint`` names a ``.pkl``, a URL or a file
                elsewhere; or that file (or an earlier one) holds pickled objects.
            CheckpointReadError: ``last_checkpoint`` is no checkpoint name (not UTF-8, too
                long), or neither the file it names nor an earlier checkpoint can be read.
        """
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        if not self._is_local():
            return self.load(self.get_checkpoint_file())
        return self.find_resume_checkpoint(self.load)[1]

    def find_resume_checkpoint(self, read, *, warn: bool = True):
        """
        ``(file, read(file))`` for the checkpoint ``--resume`` continues from: the file
        ``save_dir/last_checkpoint`` names, or, if ``read`` raises :class:`CheckpointReadError`
        or ``FileNotFoundError`` for it, the newest earlier ``model_<iter>.pth`` it reads (a
        warning names both when ``warn``). Only for a local ``save_dir`` with a
        ``last_checkpoint``. Raises as :meth:`resume_or_load`.
        """
        tag = os.path.join(self.save_dir, "last_checkpoint")
        named = self.get_checkpoint_file()
        self._check_run_folder_name(tag, named)
        if warn:
            self.logger.info(f"Loading checkpoint from {named} ({tag})")
        try:
            return named, read(named)
        except (CheckpointReadError, FileNotFoundError) as error:
            for candidate in self._earlier_checkpoints(os.path.relpath(named, self.save_dir)):
                try:
                    ret = read(candidate)
                except (CheckpointReadError, FileNotFoundError):
                    continue
                if warn:
                    self.logger.warning(
                        f"{named} (named by {tag}) cannot be read ({error}); resumed from "
                        f"{candidate} instead, the newest earlier checkpoint that can be read"
                    )
                return candidate, ret
            raise CheckpointReadError(
                f"{error}; {tag} names it and no earlier checkpoint of {self.save_dir} can be "
                "read: start again without --resume (or with MODEL.WEIGHTS of another run)"
            ) from None

    def _check_run_folder_name(self, tag, named):
        """Refuse the file ``last_checkpoint`` names (``named``, joined to ``save_dir``) unless it
        is a file of ``save_dir`` that is not a ``.pkl``: both as written and without a URL query
        (what Detectron2 ``main`` opens), so the check does not depend on the version."""
        recorded = os.path.relpath(named, self.save_dir)
        for path in dict.fromkeys([named, _without_query(named)]):
            name = os.path.relpath(path, self.save_dir)
            if os.path.dirname(name) or name in ("", ".", "..") or "://" in named:
                raise UnsafeCheckpointError(
                    f"refused to resume: {tag} names {recorded!r}, which is not a file of "
                    f"{self.save_dir}; pointrend_seg resumes only from checkpoints in the run "
                    "folder. To start from another file, give it as MODEL.WEIGHTS without "
                    "--resume"
                )
            if name.endswith(".pkl"):
                opens = "" if path == named else f", which Detectron2 opens as {name}"
                raise UnsafeCheckpointError(
                    f"refused to resume from {path}: {tag} names a .pkl file, which would be "
                    f"unpickled ({recorded!r}{opens}). pointrend_seg writes .pth checkpoints "
                    "only, so something else changed this run folder. Give a .pkl you want as "
                    "MODEL.WEIGHTS (without --resume); see docs/bad_inputs.md, 'What is trusted'"
                )

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
        # "file.pth?matching_heuristics=True": Detectron2 main's query (ViTDet's configs), which
        # main drops to open the file and v0.6 does not understand.
        opened = _opened_path(path) if path else path
        if path and "://" not in path and not os.path.exists(opened):
            raise FileNotFoundError(f"checkpoint not found: {opened}"
                                    + (f" (from {path})" if opened != path else ""))
        if path and "://" not in path and os.path.isdir(opened):
            raise CheckpointReadError(_folder_given_as_checkpoint(opened))
        self._loading_path = path  # for the message of _check_backbone_coverage
        try:
            return super().load(path, *args, **kwargs)
        except BaseException as e:
            reset_after_failed_load(self)
            if path and "://" in path and isinstance(e, (URLError, ConnectionError, TimeoutError)):
                # before: a URLError traceback (no network, a wrong address, HTTP 404, ...)
                raise CheckpointReadError(
                    f"cannot download the weights {path} (MODEL.WEIGHTS; Python config: "
                    f"train.init_checkpoint): {getattr(e, 'reason', e)}. Download the file where "
                    "the address can be reached and give its local path as MODEL.WEIGHTS "
                    "(train.init_checkpoint)") from None
            raise
        finally:
            self._loading_path = None

    def _load_model(self, checkpoint):
        self._check_weight_values(checkpoint.get("model"))
        incompatible = super()._load_model(checkpoint)
        self._check_backbone_coverage(incompatible)
        if self.require_all_weights:
            self._check_all_weights(incompatible)
        return incompatible

    def _check_weight_values(self, weights):
        """
        Raise :class:`CheckpointReadError`, naming the file and the first bad entry, unless the
        checkpoint's ``"model"`` is a dict of tensors / numpy arrays whose floating-point values
        are all finite and that holds a floating-point tensor for each floating-point tensor of
        the model (an integer one would be cast silently). Before: NaN weights evaluated to a
        meaningless mIoU and trained into a non-finite loss; a string was an AttributeError.
        """
        path = self._loading_path
        if not isinstance(weights, dict):
            raise CheckpointReadError(
                f"{path}: its 'model' is a {type(weights).__name__}, not a state dict (a dict of "
                "tensors)")
        model, non_finite = self.model.state_dict(), []
        for key, value in weights.items():
            if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
                floating, finite = value.dtype.kind == "f", lambda v: bool(np.isfinite(v).all())
            elif isinstance(value, torch.Tensor):
                floating, finite = value.is_floating_point(), lambda v: bool(
                    torch.isfinite(v).all())
            else:
                what = f"a numpy array of {value.dtype}" if isinstance(value, np.ndarray) else \
                    f"of type {type(value).__name__}"
                raise CheckpointReadError(
                    f"{path}: model weight {key!r} is {what}, not a tensor of numbers")
            if floating and not finite(value):
                non_finite.append(key)
            in_model = model.get(key[len("module."):] if key.startswith("module.") else key)
            if in_model is not None and in_model.is_floating_point() and not floating:
                raise CheckpointReadError(
                    f"{path}: model weight {key!r} is a {value.dtype} tensor where the model "
                    f"holds {in_model.dtype}: not the weights it was saved with")
        if non_finite:
            raise CheckpointReadError(
                f"{path}: model weight {non_finite[0]!r} holds NaN or inf values ("
                f"{len(non_finite)} of its {len(weights)} tensors do); weights that are not "
                "finite cannot be evaluated or trained from")

    def _check_all_weights(self, incompatible):
        """
        Raise :class:`IncompleteWeightsError` if the checkpoint just loaded left model tensors
        uninitialised: missing from it, or of another shape there (which fvcore skips with a
        warning). What Detectron2 itself forgives is forgiven: ``pixel_mean`` / ``pixel_std``
        (taken from the config), and BN's ``num_batches_tracked`` counters (unused in eval).
        """
        wrong = {k: (tuple(saved), tuple(model)) for k, saved, model in
                 incompatible.incorrect_shapes}
        missing = [k for k in incompatible.missing_keys
                   if k not in wrong and not k.endswith("num_batches_tracked")]
        if not wrong and not missing:
            return
        total = sum(not k.endswith("num_batches_tracked") for k in self.model.state_dict())
        parts = []
        if wrong:
            shown = "; ".join(f"{k} is {list(saved)} in the file, {list(model)} in the model"
                              for k, (saved, model) in list(wrong.items())[:3])
            parts.append(f"{len(wrong)} have another shape in it ({shown}"
                         + (f"; and {len(wrong) - 3} more)" if len(wrong) > 3 else ")"))
        if missing:
            parts.append(f"{len(missing)} are not in it ({', '.join(missing[:3])}"
                         + (f" and {len(missing) - 3} more)" if len(missing) > 3 else ")"))
        raise IncompleteWeightsError(
            f"{self._loading_path} leaves {len(wrong) + len(missing)} of the model's {total} "
            f"tensors uninitialised: {'; '.join(parts)}. The model would predict with random "
            "weights there. Use the config the weights were trained with (e.g. the heads' "
            "MODEL.POINT_HEAD.FC_DIM / NUM_FC, the number of classes), or give --partial-weights "
            "to load them anyway"
        )

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
        # Detectron2's own reader unpickles .pkl files with pickle.load and .pyth / .pth files
        # with torch.load(weights_only=False): replaced by readers that rebuild data only.
        if filename.endswith(".pkl"):
            return load_model_zoo_pkl(filename)
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
        query = parse_qs(url_query_being_loaded(self))  # Detectron2 main only
        if query.pop("matching_heuristics", None) == ["True"]:
            loaded["matching_heuristics"] = True
        if query:
            raise CheckpointReadError(
                f"{self._loading_path}: the URL query {sorted(query)} is not understood; "
                "Detectron2 reads only ?matching_heuristics=True")
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

