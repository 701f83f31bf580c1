"""
What the tools (``tools/*.py``) share: an error that is the user's to fix ends a tool with one
message naming the file or key and no traceback - exit status 2 for bad input (``INPUT_ERRORS``),
1 for a run that stopped (``RUN_ERRORS``); ``--debug`` or ``POINTREND_SEG_DEBUG=1`` shows it, and
any other error is a bug and keeps it (docs/bad_inputs.md) - and their command-line helpers.
"""
import argparse
import functools
import logging
import os
import re
import sys

from ..config import ConfigError
from ..data import BadInputError, class_names_and_colors
from ..data.datasets import register_folder_datasets
from ..data.label_map import parse_label_map
from ..evaluation import ResultWriteError
from ..modeling.backbone import WeightConversionError
from ..modeling.export import ExportError
from .checkpoint import (BackboneMismatchError, CheckpointReadError, CheckpointWriteError,
                         IncompleteWeightsError, UnsafeCheckpointError)
from .compat import plain_config_in_logs
from .run_folder import ResumeMismatchError, RunFolderBusyError
from .train_step import NonFiniteLossError

__all__ = ["DEBUG_ENV", "INPUT_ERRORS", "OutputIsInputError", "RUN_ERRORS", "ToolUsageError",
           "add_class_name_arguments", "add_config_arguments", "add_partial_weights_argument",
           "class_names_for", "config_from_args", "refuse_output_over_inputs",
           "refuse_output_folder_over_a_file", "add_register_folder_argument",
           "add_debug_argument", "debug_requested", "is_config_key", "overrides_last",
           "parse_tool_args", "registered_datasets", "run_tool", "setup_tool_output",
           "training_errors_in_one_line"]


class OutputIsInputError(ValueError):
    """A tool's output path that is one of its inputs (the same file, also through a link)."""


class ToolUsageError(ValueError):
    """A tool's command line that cannot work as given; the message says what to change."""


DEBUG_ENV = "POINTREND_SEG_DEBUG"
INPUT_ERRORS = (ConfigError, BadInputError, UnsafeCheckpointError, BackboneMismatchError,
                CheckpointReadError, FileNotFoundError, RunFolderBusyError, ResumeMismatchError,
                IncompleteWeightsError, WeightConversionError, OutputIsInputError,
                ToolUsageError, ExportError)
RUN_ERRORS = (NonFiniteLossError, CheckpointWriteError, ResultWriteError)


def refuse_output_over_inputs(outputs, inputs) -> None:
    """Raise :class:`OutputIsInputError` if a file of ``outputs`` is one of ``inputs`` (``{what:
    path}`` or ``(what, path)`` pairs), also through a symbolic or hard link: writing it would
    replace the input. One ``stat`` per path, so a dataset of 100,000 files is cheap."""
    outputs = [o for o in outputs if o]
    # an existing file is matched by its (device, inode), a missing one by its real path
    same_file = {}
    for output in outputs:
        st = _stat_or_none(output)
        for key in [os.path.realpath(output)] + ([(st.st_dev, st.st_ino)] if st else []):
            same_file.setdefault(key, []).append(output)
    found = {}  # output: the first (what, path) it is
    for what, path in (inputs.items() if hasattr(inputs, "items") else inputs):
        if len(found) == len(outputs):
            break
        st = _stat_or_none(path) if path else None
        key = (st.st_dev, st.st_ino) if st else os.path.realpath(path) if path else None
        for output in same_file.get(key, []):
            found.setdefault(output, (what, path))
    for output in outputs:  # the first output that is an input
        if output in found:
            what, path = found[output]
            named = "" if os.path.abspath(path) == os.path.abspath(output) else f" ({path})"
            raise OutputIsInputError(f"{output} is the {what}{named}: writing it would replace "
                                     "the input; choose another output")


def _stat_or_none(path):
    try:
        return os.stat(path)
    except (OSError, ValueError):  # missing, unreachable; ValueError: a NUL in the path
        return None


def refuse_output_folder_over_a_file(output, *, is_folder: bool = True) -> None:
    """Raise :class:`ToolUsageError`, at a tool's start, if the output folder ``output`` (not
    ``is_folder``: a file path or prefix) or a folder above it is an existing file."""
    path = os.path.abspath(output)
    if not is_folder:
        path = os.path.dirname(path)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    if not os.path.isdir(path):  # a file, or a link to none
        which = "" if path == os.path.abspath(output) else f": {path}"
        raise ToolUsageError(f"--output {output}{which} is a file, not a folder; give another "
                             "--output")


def add_partial_weights_argument(parser):
    """Add ``--partial-weights`` to an argparse parser; returns the parser."""
    parser.add_argument(
        "--partial-weights", action="store_true",
        help="use MODEL.WEIGHTS even if they leave some model tensors uninitialised (missing "
        "from the file or of another shape there; refused by default: that part of the model "
        "would predict with random weights)")
    return parser


def add_debug_argument(parser):
    """Add ``--debug`` (show tracebacks) to an argparse parser; returns the parser."""
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error (also {DEBUG_ENV}=1)")
    return parser


def debug_requested() -> bool:
    """``--debug`` in ``sys.argv`` or ``POINTREND_SEG_DEBUG`` set (not 0)."""
    return "--debug" in sys.argv[1:] or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run_tool(main, *, prog: str, debug: bool = False) -> int:
    """Call ``main()`` and return the exit status: its int result (else 0); 2 / 1 for an input /
    run error after printing ``PROG: error: MESSAGE`` on stderr; 130 for Ctrl-C after one line
    (training names the checkpoint to continue from). With ``debug`` the error propagates."""
    try:
        status = main()
    except INPUT_ERRORS + RUN_ERRORS as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        return 1 if isinstance(e, RUN_ERRORS) else 2
    except KeyboardInterrupt as e:  # Ctrl-C: training says where it stopped (TrainingInterrupted)
        if debug:
            raise
        print(f"{prog}: {str(e) or 'interrupted'}", file=sys.stderr, flush=True)
        return 130
    return status if isinstance(status, int) else 0


class _UserErrorsInOneLine(logging.Filter):
    """Turns a log record carrying an input / run error's traceback into one line."""

    def __init__(self, debug: bool):
        super().__init__()
        self.debug = debug

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, INPUT_ERRORS + RUN_ERRORS) and not self.debug:
            record.msg = f"{record.getMessage()} {type(error).__name__}: {error}"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def training_errors_in_one_line(debug: bool = False) -> None:
    """Log the ``INPUT_ERRORS`` / ``RUN_ERRORS`` that stop Detectron2's training loop
    ("Exception during training:") in one line unless ``debug``. Call it in every process that
    trains; calling it again replaces the previous setting."""
    log = logging.getLogger("detectron2.engine.train_loop")
    for f in [f for f in log.filters if isinstance(f, _UserErrorsInOneLine)]:
        log.removeFilter(f)
    log.addFilter(_UserErrorsInOneLine(debug))


def setup_tool_output() -> None:
    """Colour codes only on a terminal: else off for Detectron2's log (``ANSI_COLORS_DISABLED``)
    and for the config it prints (:func:`~.compat.plain_config_in_logs`)."""
    if not (hasattr(sys.stdout, "isatty") and sys.stdout.isatty()):
        os.environ.setdefault("ANSI_COLORS_DISABLED", "1")
        plain_config_in_logs()


@functools.lru_cache(maxsize=None)
def _config_top_level_keys():
    """{top-level key of our YAML config: whether it is a leaf (OUTPUT_DIR, SEED, ...)}."""
    from detectron2.config import CfgNode, get_cfg

    from ..config import add_pointrend_seg_config

    cfg = get_cfg()
    add_pointrend_seg_config(cfg)
    return {key: not isinstance(value, CfgNode) for key, value in cfg.items()}


def is_config_key(token: str) -> bool:
    """Whether ``token`` starts a config override: a YAML key (upper case, its first component a
    top-level key of our config, dotted unless a leaf - so a dataset named ``TEST`` is none) or a
    Python config's ``key=value`` (also hydra's ``+key=value``)."""
    if re.match(r"^[+~]?[A-Za-z_][\w.]*=", token):
        return True
    head = token.split(".")[0]
    leaf = _config_top_level_keys().get(head)
    return token == token.upper() and leaf is not None and ("." in token or leaf)


def overrides_last(argv):
    """``argv`` with its config overrides (:func:`is_config_key`) moved after every flag, in
    order: for Detectron2's ``nargs=argparse.REMAINDER`` overrides (tools/train_net.py), which
    take any flag after them (``OUTPUT_DIR out --resume``) as an override."""
    flags, overrides, i = [], [], 0
    while i < len(argv):
        if is_config_key(argv[i]):
            pair = 1 if "=" in argv[i] else 2
            overrides += argv[i:i + pair]
            i += pair
        else:
            flags.append(argv[i])
            i += 1
    return flags + overrides


def parse_tool_args(parser, argv=None, *, list_dests=()):
    """
    Parse a tool's command line with its flags anywhere among the ``KEY VALUE`` config overrides,
    which are collected in order in ``args.opts`` (a ``nargs="*"`` positional). ``list_dests``:
    list arguments (``--input FILE...``) that end where a config key begins: ``--input a.png
    MODEL.WEIGHTS w.pth`` is one input and one override.
    """
    args = parser.parse_intermixed_args(argv)
    overrides = list(getattr(args, "opts", None) or [])
    for dest in list_dests:
        values = list(getattr(args, dest) or [])
        cut = next((i for i, v in enumerate(values) if is_config_key(v)), None)
        if cut is not None:
            overrides = values[cut:] + overrides
            setattr(args, dest, values[:cut])
    args.opts = overrides
    return args


def add_class_name_arguments(parser):
    """Add ``--classes`` and the ``--register-folder`` options: class names for a tool whose
    config's datasets are not registered in this process (e.g. a run on a folder dataset)."""
    parser.add_argument("--classes", metavar="NAMES|FILE",
                        help="class names: comma-separated, or a UTF-8 text file with one name "
                        "per line (no '#' comment lines)")
    return add_register_folder_argument(parser)


def add_config_arguments(parser):
    """``--config-file`` or ``--run OUTPUT_DIR`` (one of them), and ``--weights``: the model of a
    tool that predicts (:func:`config_from_args`)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config-file", help="the model's config (YAML; or Python: code, "
                        "loading runs it)")
    source.add_argument("--run", metavar="OUTPUT_DIR",
                        help="a run folder of tools/train_net.py: its config.yaml and its "
                        "model_final.pth (or --weights), which carries the class names")
    parser.add_argument("--weights", help="the checkpoint to load (default: the config's "
                        "MODEL.WEIGHTS / train.init_checkpoint; with --run its model_final.pth)")
    return parser


def config_from_args(args, device=None):
    """(run config, weights) of a tool with :func:`add_config_arguments`, the ``--register-folder``
    datasets registered first; ``device``: run the model there (e.g. "cpu"). Weights:
    ``--weights``, the ``--run`` folder's checkpoint, else the config's."""
    from ..config import device_override, load_any_config
    from .run_config import as_run_config
    from .run_folder import load_run_folder

    registered_datasets(args)
    opts = list(getattr(args, "opts", []))
    if args.run:
        cfg, weights = load_run_folder(args.run, args.weights, opts, device=device)
    else:
        weights = args.weights
        cfg = load_any_config(args.config_file,
                              opts + device_override(args.config_file.endswith(".py"), device))
    if hasattr(cfg, "MODEL"):
        cfg.freeze()
    run = as_run_config(cfg)
    return run, run.settings.MODEL.WEIGHTS if weights is None else weights


def class_names_for(run, args, weights=None, dataset_names=()):
    """
    (names, colours) for ``run``'s pictures or export: ``--classes``, the ``--register-folder`` /
    ``dataset_names`` datasets, else the checkpoint ``weights``' ``model_info``, else the config's
    datasets (:func:`~pointrend_seg.data.class_names_and_colors`).

    Raises:
        ConfigError: the checkpoint's names are not as many as the model's classes, or no names
            are found.
    """
    from .checkpoint import read_model_info
    from .run_config import as_run_config

    settings = as_run_config(run).settings
    given = (getattr(args, "classes", None) or getattr(args, "register_folder", None)
             or list(dataset_names))
    info = read_model_info(weights) if weights and not given else {}
    if info.get("classes"):
        names, num_classes = list(info["classes"]), settings.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        if len(names) != num_classes:
            raise ConfigError(f"{weights} names {len(names)} classes, the config's model has "
                              f"{num_classes}: a checkpoint of another model?")
        return names, [tuple(int(v) for v in c) for c in info["colors"]]
    return class_names_and_colors(settings, classes=getattr(args, "classes", None),
                                  dataset_names=list(dataset_names) + registered_datasets(args))[:2]


def registered_datasets(args):
    """Register the ``--register-folder`` datasets of ``args`` (once) and return their names."""
    if getattr(args, "registered_datasets", None) is None:
        try:
            args.registered_datasets = register_folder_datasets(
                getattr(args, "register_folder", None))
        except ValueError as e:  # e.g. a class-names file: too large, empty or repeated names
            if type(e) is not ValueError:  # ConfigError, BadInputError: already one line
                raise
            raise ConfigError(f"--register-folder: {e}") from None
    return list(args.registered_datasets)


class _FolderDatasetOption(argparse.Action):
    """An option that sets a keyword argument of the ``--register-folder`` given before it."""

    def __init__(self, option_strings, dest, convert=None, **kwargs):
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, **kwargs)
        self.convert = convert

    def __call__(self, parser, namespace, values, option_string=None):
        specs = getattr(namespace, "register_folder", None)
        if not specs:
            parser.error(f"{option_string} {values} must follow the --register-folder it is for")
        spec = specs[-1]
        if not isinstance(spec[-1], dict):
            spec.append({})
        if self.dest in spec[-1]:
            parser.error(f"{option_string} is given twice for --register-folder {spec[0]}")
        try:
            spec[-1][self.dest] = self.convert(values)
        except ValueError as e:
            parser.error(f"{option_string} {values}: {e}")


def add_register_folder_argument(parser):
    """Add the repeatable ``--register-folder NAME IMAGE_DIR MASK_DIR CLASSES`` and, for the one
    before them, ``--label-map`` and ``--ignore-value``; ``args.register_folder`` is what
    :func:`register_folder_datasets` takes."""
    parser.add_argument(
        "--register-folder", action="append", nargs=4, default=[],
        metavar=("NAME", "IMAGE_DIR", "MASK_DIR", "CLASSES"),
        help="register a dataset of images and masks paired by file stem (repeatable); CLASSES: "
        "comma-separated class names or a UTF-8 text file with one name per line (no '#' "
        "comment lines)")
    parser.add_argument(
        "--label-map", dest="label_map", action=_FolderDatasetOption, convert=parse_label_map,
        metavar="VALUE:ID[,VALUE:ID...]",
        help="for the --register-folder before it: mask values to class ids, e.g. 255:1 for "
        "binary masks saved as 0/255 (other values are kept)")
    parser.add_argument(
        "--ignore-value", dest="ignore_label", action=_FolderDatasetOption, convert=int,
        metavar="V",
        help="for the --register-folder before it: the mask value that is ignored (default "
        "255; set MODEL.SEM_SEG_HEAD.IGNORE_VALUE to the same value)")
    return parser
