"""
Crash-safe checkpoints (docs/checkpoints.md): :class:`SafeCheckpointer` is Detectron2's
``DetectionCheckpointer`` with atomic saves of finite states only (with ``confirm_with_next_loss``
held back until the next loss is finite), loading that never runs code from a file
(``torch.load(weights_only=True)``; :func:`load_model_zoo_pkl` for ``.pkl``), weights checked
against the model, ``--resume`` only from the run folder's own ``.pth`` files (past a broken
latest one), and a full disk that says so (:class:`CheckpointWriteError`).
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

_CHECKPOINT_RE = re.compile(r"^model_(?P<iter>\d+|final)\.pth$")


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint that would run code to load: pickled objects other than weights (refused
    before anything of them runs), or a run folder naming a file that is not its own."""


class BackboneMismatchError(ValueError):
    """A checkpoint that fills less than half of the model's backbone tensors."""


class IncompleteWeightsError(ValueError):
    """Weights for inference that leave model tensors uninitialised (missing or misshapen)."""


class CheckpointReadError(OSError):
    """A checkpoint file that cannot be read (truncated, corrupt, not a checkpoint)."""


class CheckpointWriteError(OSError):
    """A checkpoint not written for lack of space (``errno`` ENOSPC); names the intact file."""

    def __init__(self, message):
        super().__init__(message)
        self.errno = errno.ENOSPC


def load_weights_only(filename):
    """``torch.load(filename, map_location="cpu", weights_only=True)``, raising (naming the file)
    :class:`UnsafeCheckpointError` for other pickled objects, which must stop a resume, and
    :class:`CheckpointReadError` for a damaged file, which a resume may skip (docs/checkpoints.md,
    "Trusting checkpoint files")."""
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
                "docs/checkpoints.md") from None
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        reason = what if refused else f"{type(e).__name__}: {first_line}"
        raise CheckpointReadError(
            f"cannot read checkpoint {filename} (truncated or corrupt?): {reason}") from None


def _check_zip_entries(filename):
    """Raise :class:`CheckpointReadError` for a zip with a compressed entry or entries larger than
    the file: torch.save writes neither, and torch.load would unpack them whole before any check.
    Reads only the zip's directory; a damaged zip is left to torch.load."""
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
    """The ``model_info`` (class names, colours) of a checkpoint of ours, its tensors not loaded;
    {} for a file without it or that is not a readable local ``.pth``."""
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


# Besides torch's globals, OrderedDict and _codecs.encode, torch.save's pickles import these.
_PLAIN_BUILTINS = {"set", "frozenset", "tuple", "list", "dict", "int", "float", "complex", "bool",
                   "bytes", "bytearray", "str", "slice", "range"}


def _written_by_torch(module: str, name: str) -> bool:
    return (module == "torch" or module.startswith("torch.")
            or (module, name) in (("collections", "OrderedDict"), ("_codecs", "encode"))
            or (module in ("builtins", "__builtin__") and name in _PLAIN_BUILTINS))


def _pickle_globals(f, max_pickles: int):
    """Parse (running nothing) up to ``max_pickles`` pickles in a row from ``f``: ``(intact,
    [(module, name) of each global imported])``, intact when each ended with its STOP; ``"?"``
    for a name that was not pushed as a plain string."""
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
    """``(unsafe, what)`` for a file torch.load(weights_only=True) failed on: unsafe if its pickle
    (a zip's ``data.pkl``, else up to five pickles in a row) imports a global torch.save never
    writes, or is intact and torch ``refused`` it (an ``UnpicklingError``); else damaged."""
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
# numpy arrays (protocol 5: _frombuffer), dtypes, scalars, OrderedDicts and protocol 2 bytes;
# numpy 2 writes numpy._core where numpy 1 wrote numpy.core.
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
    """Imports only :data:`_MODEL_ZOO_GLOBALS`; any other is an :class:`UnsafeCheckpointError`."""

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
    A model-zoo ``.pkl`` as Detectron2's checkpointer returns it, unpickled as data only: a
    Detectron2 file as it is; a Caffe2 one's ``"blobs"`` (if any) without ``*_momentum`` as
    ``{"model": ..., "__author__": "Caffe2", "matching_heuristics": True}``.

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
    """The file Detectron2's ``load`` opens for ``path``: on ``main`` without its URL query."""
    return _without_query(path) if checkpointer_drops_url_query() else path


def _without_query(path: str) -> str:
    return urlparse(path)._replace(query="").geturl() if "?" in path else path


def _folder_given_as_checkpoint(folder: str) -> str:
    """The message for a checkpoint path that is a folder: the file to give, or ``--run``."""
    example = os.path.join(folder, "model_final.pth")
    run_folder = any(os.path.isfile(os.path.join(folder, name))
                     for name in ("last_checkpoint", "config.yaml"))
    return (f"checkpoint {folder} is a folder; give the checkpoint file, e.g. {example}"
            + (f" (it is a run folder: tools/demo.py and tools/export_model.py take it whole as "
               f"--run {folder})" if run_folder else ""))


LAST_CHECKPOINT_MAX_BYTES = 4096


def read_checkpoint_tag(save_dir: str):
    """The checkpoint name ``save_dir/last_checkpoint`` holds (stripped; None without the file),
    for both the resume and the check before it; :class:`CheckpointReadError` naming the file if
    it is over ``LAST_CHECKPOINT_MAX_BYTES``, not UTF-8 or not a file."""
    tag = os.path.join(save_dir, "last_checkpoint")
    try:
        with open(tag, "rb") as f:
            data = f.read(LAST_CHECKPOINT_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CheckpointReadError(f"cannot read {tag}: {e.strerror or e}") from None
    why = f"over {LAST_CHECKPOINT_MAX_BYTES} bytes"
    if len(data) <= LAST_CHECKPOINT_MAX_BYTES:
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
    Detectron2's ``DetectionCheckpointer``, made safe (module docstring).

    Args:
        require_all_weights: refuse a file that leaves a model tensor uninitialised
            (:class:`IncompleteWeightsError`), for inference; training keeps the default, False.

    Attributes:
        model_info (dict): saved in every checkpoint (the trainer's class names and colours,
            ``{"classes": [...], "colors": [[r, g, b], ...]}``; :func:`read_model_info`).
        confirm_with_next_loss (bool): hold each save back (written, not yet under its name nor
            in ``last_checkpoint``) until :meth:`confirm_pending` or :meth:`discard_pending`.
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
            self.logger.warning(f"Not saving checkpoint {name!r}: {self._saving_disabled_reason}")
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
                f"{self.last_checkpoint_path() or 'nothing'}")
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
        """Confirm the held-back checkpoint, whose weights gave this iteration's loss, if
        ``problem`` (a diverging update, e.g. from :class:`~.train_step.LossSpikeGuard`) is None;
        else drop it."""
        if problem is None:
            self.confirm_pending()
        else:
            self.discard_pending(
                f"at iteration {iteration}, computed with its weights, {problem} (a diverging "
                f"update); last_checkpoint keeps naming {self.last_checkpoint_path() or 'nothing'}")

    def diverged(self, error):
        """After ``error`` (a :class:`~.train_step.NonFiniteLossError`): drop the held-back
        checkpoint, save nothing more; returns the error naming the checkpoint to continue from."""
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
            lambda f: f.write(last_filename_basename.encode("utf-8")))

    def remove_stale_temp_files(self):
        """Delete the temporary files of dead processes' saves in ``save_dir``; returns them."""
        if not self.save_dir or not self._is_local() or not os.path.isdir(self.save_dir):
            return []
        removed = remove_stale_temp_files(self.save_dir)
        if removed:
            self.logger.info(f"Removed {len(removed)} partial checkpoint file(s): {removed}")
        return removed

    # ---- loading -------------------------------------------------------------------------
    def get_checkpoint_file(self) -> str:
        """The file ``last_checkpoint`` names, joined to ``save_dir`` ("" without the tag)."""
        if not self._is_local():
            return super().get_checkpoint_file()
        name = read_checkpoint_tag(self.save_dir)
        return "" if name is None else os.path.join(self.save_dir, name)

    def resume_or_load(self, path: str, *, resume: bool = True):
        """
        As Detectron2's, but a missing or unreadable named checkpoint falls back to the newest
        earlier readable ``model_<iter>.pth``, with a warning (:meth:`find_resume_checkpoint`).

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
        """``(file, read(file))`` for the checkpoint ``--resume`` continues from: the file
        ``last_checkpoint`` names or, if ``read`` raises :class:`CheckpointReadError` or
        ``FileNotFoundError``, the newest earlier ``model_<iter>.pth`` it reads (warned about when
        ``warn``). For a local ``save_dir`` with a tag; raises as :meth:`resume_or_load`."""
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
                        f"{candidate} instead, the newest earlier checkpoint that can be read")
                return candidate, ret
            raise CheckpointReadError(
                f"{error}; {tag} names it and no earlier checkpoint of {self.save_dir} can be "
                "read: start again without --resume (or with MODEL.WEIGHTS of another run)"
            ) from None

    def _check_run_folder_name(self, tag, named):
        """Refuse a ``named`` checkpoint that is not a non-``.pkl`` file of ``save_dir``, checked
        as written and without a URL query (what Detectron2 ``main`` opens)."""
        recorded = os.path.relpath(named, self.save_dir)
        for path in dict.fromkeys([named, _without_query(named)]):
            name = os.path.relpath(path, self.save_dir)
            if os.path.dirname(name) or name in ("", ".", "..") or "://" in named:
                raise UnsafeCheckpointError(
                    f"refused to resume: {tag} names {recorded!r}, which is not a file of "
                    f"{self.save_dir}; pointrend_seg resumes only from checkpoints in the run "
                    "folder. To start from another file, give it as MODEL.WEIGHTS without "
                    "--resume")
            if name.endswith(".pkl"):
                opens = "" if path == named else f", which Detectron2 opens as {name}"
                raise UnsafeCheckpointError(
                    f"refused to resume from {path}: {tag} names a .pkl file, which would be "
                    f"unpickled ({recorded!r}{opens}). pointrend_seg writes .pth checkpoints "
                    "only, so something else changed this run folder. Give a .pkl you want as "
                    "MODEL.WEIGHTS (without --resume); see docs/bad_inputs.md, 'What is trusted'")

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
        """Raise :class:`CheckpointReadError` naming the file and the first bad entry unless
        ``weights`` is a dict of numeric tensors / arrays, all finite, with a floating-point one
        wherever the model's is floating-point (an integer one would be cast silently)."""
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
        """Raise :class:`IncompleteWeightsError` if the load left model tensors missing or of
        another shape (fvcore only warns), except what Detectron2 forgives (``pixel_mean`` /
        ``pixel_std``) and BN's ``num_batches_tracked`` counters (unused in eval)."""
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
            "to load them anyway")

    def _check_backbone_coverage(self, incompatible):
        """Raise :class:`BackboneMismatchError` if the load filled under half of the tensors of
        ``model.backbone`` (``num_batches_tracked`` aside); models without one are not checked."""
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
            "then give the converted file as MODEL.WEIGHTS with the config overrides it prints")

    def _load_file(self, filename):
        # Detectron2's reader unpickles objects: these rebuild data only.
        if filename.endswith(".pkl"):
            return load_model_zoo_pkl(filename)
        loaded = load_weights_only(filename)
        if filename.endswith(".pyth"):
            # pycls checkpoints, as Detectron2 reads them (but without unpickling objects).
            if not isinstance(loaded, dict) or "model_state" not in loaded:
                raise CheckpointReadError(
                    f"cannot load .pyth file {filename}: no 'model_state' in it")
            state = {k: v for k, v in loaded["model_state"].items()
                     if not k.endswith("num_batches_tracked")}
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
    """Dotted names of the floating-point tensors holding NaN / inf in nested dicts / lists."""
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

