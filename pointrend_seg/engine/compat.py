"""
The one place where pointrend_seg reaches past Detectron2's public extension points, or papers
over differences between Detectron2 v0.6 and its ``main`` branch. Everything else in the engine
uses public API only (``DefaultTrainer`` subclassing, ``build_*`` overrides, hooks, ``run_step``).
Each function says what it works around and why no public way exists.
"""
import functools
import inspect

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import SimpleTrainer
from detectron2.engine import defaults as d2_defaults
from detectron2.utils import comm

__all__ = ["checkpointer_drops_url_query", "forget_detectron2_process_groups",
           "plain_config_in_logs", "reset_after_failed_load", "url_query_being_loaded",
           "write_metrics"]

# v0.6: write_metrics(loss_dict, data_time, prefix=""); main: (loss_dict, data_time, cur_iter,
# prefix="") and it records scalars at cur_iter.
_WRITE_METRICS_TAKES_ITER = "cur_iter" in inspect.signature(SimpleTrainer.write_metrics).parameters


def write_metrics(loss_dict, data_time: float, iteration: int) -> None:
    """Detectron2's ``SimpleTrainer.write_metrics`` with the signature of the installed version:
    ``loss_dict`` (name -> scalar tensor) averaged over processes into the event storage,
    ``data_time`` (seconds waiting for the batch) the max over processes, at ``iteration``."""
    if _WRITE_METRICS_TAKES_ITER:
        SimpleTrainer.write_metrics(loss_dict, data_time, iteration)
    else:
        SimpleTrainer.write_metrics(loss_dict, data_time)


def forget_detectron2_process_groups() -> None:
    """
    Drop the references that ``detectron2.utils.comm`` keeps to process groups: the per-machine
    group that ``launch`` stores in ``comm._LOCAL_PROCESS_GROUP`` and the gloo group cached by
    ``comm._get_global_gloo_group`` (v0.6 and main).

    Why: ``torch.distributed.destroy_process_group()`` only unregisters the groups; a group's
    worker threads stop when its last reference goes. While Detectron2's module globals hold
    them, they live until the interpreter shuts down, and a worker thread that then releases a
    finished collective's tensors needs the GIL and aborts the process (``terminate called
    without an active exception``). Detectron2 has no function to release them.
    """
    comm._LOCAL_PROCESS_GROUP = None
    comm._get_global_gloo_group.cache_clear()


def reset_after_failed_load(checkpointer) -> None:
    """
    Make a ``DetectionCheckpointer`` whose ``load`` raised usable for another ``load``.

    Why: Detectron2 ``main``'s ``DetectionCheckpointer.load`` records the URL being loaded in
    ``_parsed_url_during_load``, asserts it is None on entry and resets it only when loading
    succeeds; after a file that cannot be read, every later ``load`` of that checkpointer fails
    the assertion. ``SafeCheckpointer.resume_or_load`` loads an earlier checkpoint after a broken
    latest one, so it resets the attribute (v0.6 has none; nothing to do there).
    """
    if getattr(checkpointer, "_parsed_url_during_load", None) is not None:
        checkpointer._parsed_url_during_load = None


@functools.lru_cache(maxsize=None)
def checkpointer_drops_url_query() -> bool:
    """
    Whether the installed ``DetectionCheckpointer.load`` opens a path without its URL query
    (``main``: ``model.pkl?matching_heuristics=True`` opens ``model.pkl``; v0.6 opens the path as
    it is). Why: ``SafeCheckpointer`` checks the file that will be opened, and no public API says
    which that is; ``main``'s checkpointer is the one with ``_parsed_url_during_load``.
    """
    return hasattr(DetectionCheckpointer(torch.nn.Module()), "_parsed_url_during_load")


def url_query_being_loaded(checkpointer) -> str:
    """
    The URL query of the path a ``DetectionCheckpointer`` is loading, inside its ``load``
    (``main`` only; "" on v0.6). Why: ``main`` reads ``?matching_heuristics=True`` in its own
    ``_load_file``, which ``SafeCheckpointer`` replaces (to load without unpickling objects), and
    keeps the parsed URL only in the private ``_parsed_url_during_load``.
    """
    parsed = getattr(checkpointer, "_parsed_url_during_load", None)
    return parsed.query if parsed is not None else ""


def plain_config_in_logs() -> None:
    """
    Detectron2's ``default_setup`` logs the config file through its ``_highlight`` (v0.6 and
    main), which colours it with pygments' 256-colour terminal formatter whenever pygments is
    installed - also into ``OUTPUT_DIR/log.txt`` and into redirected output, as escape codes.
    No argument or hook turns that off, so the tools replace ``_highlight`` by the identity when
    their output is not a terminal (:func:`pointrend_seg.engine.cli.setup_tool_output`).
    """
    if hasattr(d2_defaults, "_highlight"):
        d2_defaults._highlight = lambda code, filename: code
