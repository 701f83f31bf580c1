"""
How the tools (``tools/*.py``) end on an error that is the user's to fix: one message naming the
file or key, no traceback.

* Bad input - a config (:class:`~pointrend_seg.config.ConfigError`, a missing file), a data file
  (:class:`~pointrend_seg.data.BadInputError`), a checkpoint that is refused or unreadable: the
  message, exit status 2.
* A run that stopped - a non-finite loss, a full disk while saving: the message (which names the
  checkpoint to continue from), exit status 1.

``--debug`` on the tool's command line (before the ``KEY VALUE`` overrides) or the environment
variable ``POINTREND_SEG_DEBUG=1`` lets the error propagate with its traceback instead.
Anything else is a bug and keeps its traceback.
"""
import os
import sys

from ..config import ConfigError
from ..data import BadInputError
from .checkpoint import (
    BackboneMismatchError,
    CheckpointReadError,
    CheckpointWriteError,
    UnsafeCheckpointError,
)
from .train_step import NonFiniteLossError

__all__ = ["DEBUG_ENV", "INPUT_ERRORS", "RUN_ERRORS", "add_debug_argument", "debug_requested",
           "run_tool"]

DEBUG_ENV = "POINTREND_SEG_DEBUG"
# Exit status 2: the input (config, data, weights) must change.
INPUT_ERRORS = (ConfigError, BadInputError, UnsafeCheckpointError, BackboneMismatchError,
                CheckpointReadError, FileNotFoundError)
# Exit status 1: the run stopped; the message says how to continue.
RUN_ERRORS = (NonFiniteLossError, CheckpointWriteError)


def add_debug_argument(parser):
    """Add ``--debug`` (show tracebacks) to an argparse parser; returns the parser."""
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error (also {DEBUG_ENV}=1)")
    return parser


def debug_requested(argv=None) -> bool:
    """``--debug`` in ``argv`` (default ``sys.argv[1:]``) or ``POINTREND_SEG_DEBUG`` set (not 0)."""
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run_tool(main, *, prog: str, debug: bool = False) -> int:
    """
    Call ``main()`` and return the exit status: its return value if it is an int (else 0), or
    for an input / run error (module docstring) 2 / 1 after printing ``PROG: error: MESSAGE`` on
    stderr. With ``debug`` the error propagates.
    """
    try:
        status = main()
    except INPUT_ERRORS + RUN_ERRORS as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        return 1 if isinstance(e, RUN_ERRORS) else 2
    return status if isinstance(status, int) else 0
