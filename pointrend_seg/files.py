"""Files written whole or not at all, for every writer of the package: a failure or a killed
process leaves the earlier file (or none), and :func:`remove_stale_temp_files` deletes what
killed processes left.
"""
import errno
import os
import re
import shutil
import uuid
from typing import Callable, List

__all__ = ["PendingWrite", "atomic_write", "is_disk_full", "remove_stale_temp_files",
           "temp_folder"]

_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp\.(?P<pid>\d+)\.[0-9a-f]{8}$")


def is_disk_full(error) -> bool:
    """Whether ``error``, or one it was raised from or while handling (torch.save re-raises a
    failed write as a RuntimeError), is "no space left" or "quota exceeded"."""
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
    """A file written and fsync-ed under a temporary name in its final directory; :meth:`commit`
    renames it to its final name (atomically), :meth:`discard` deletes it."""

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


def _temp_name(path) -> str:
    """``.<name>.tmp.<pid>.<8 hex>`` beside ``path`` (absolute)."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.tmp.{os.getpid()}.{uuid.uuid4().hex[:8]}")


def temp_folder(folder, name: str) -> str:
    """A new, empty folder ``folder/.<name>.tmp.<pid>.<8 hex>`` for files published together;
    :func:`remove_stale_temp_files` deletes it once this process no longer runs."""
    path = _temp_name(os.path.join(folder, name))
    os.mkdir(path)
    return path


def atomic_write(path, write_fn: Callable, *, commit: bool = True, binary: bool = True):
    """Write ``path`` atomically: ``write_fn(f)`` writes a temporary file beside it (binary, or
    UTF-8 text with ``binary=False``), which is fsync-ed and renamed to ``path`` only if
    ``write_fn`` returned normally. On any error the temporary file is removed and the error
    propagates (a KeyboardInterrupt as itself). The file gets the umask's permissions. With
    ``commit=False`` the returned :class:`PendingWrite` renames (or deletes) it later."""
    pending = PendingWrite(path, _temp_name(path))
    tmp = pending.tmp
    try:
        with open(tmp, "xb") if binary else open(tmp, "x", encoding="utf-8", newline="") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        pending.discard()
        # A Ctrl-C stays one, also when the writer's clean-up fails because of it (torch.save).
        cause = e
        while not isinstance(cause, KeyboardInterrupt) and cause.__context__ is not None:
            cause = cause.__context__
        if cause is not e and isinstance(cause, KeyboardInterrupt):
            raise cause from None
        raise
    if commit:
        try:
            pending.commit()
        except BaseException:
            pending.discard()
            raise
    return pending


def _pid_alive(pid):
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists (this one too)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        pass
    return True


def remove_stale_temp_files(folder) -> List[str]:
    """Delete the temporary files of :func:`atomic_write` (and folders of :func:`temp_folder`)
    in ``folder`` whose process no longer runs (e.g. killed mid-write). Returns the removed
    paths."""
    removed = []
    for entry in os.listdir(folder):
        m = _TEMP_RE.match(entry)
        if m is None or _pid_alive(int(m.group("pid"))):
            continue
        path = os.path.join(folder, entry)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed
