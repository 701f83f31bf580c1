"""
The one place where pointrend_seg reaches past Detectron2's public extension points, or papers
over differences between Detectron2 v0.6 and its ``main`` branch; each function says what it
works around and why no public way exists.
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

# v0.6: write_metrics(loss_dict, data_time, prefix=""); main takes cur_iter before prefix.
_WRITE_METRICS_TAKES_ITER = "cur_iter" in inspect.signature(SimpleTrainer.write_metrics).parameters


def write_metrics(loss_dict, data_time: float, iteration: int) -> None:
    """Detectron2's ``SimpleTrainer.write_metrics`` at ``iteration``: ``loss_dict`` (name -> scalar
    tensor) averaged, ``data_time`` (seconds) the max over processes."""
    if _WRITE_METRICS_TAKES_ITER:
        SimpleTrainer.write_metrics(loss_dict, data_time, iteration)
    else:
        SimpleTrainer.write_metrics(loss_dict, data_time)


def forget_detectron2_process_groups() -> None:
    """Drop ``detectron2.utils.comm``'s references to process groups (``_LOCAL_PROCESS_GROUP``,
    the cached gloo group). Why: a group's worker threads stop with its last reference; kept until
    the interpreter shuts down, a thread that then needs the GIL aborts the process ("terminate
    called without an active exception"). Detectron2 has no function to release them."""
    comm._LOCAL_PROCESS_GROUP = None
    comm._get_global_gloo_group.cache_clear()


def reset_after_failed_load(checkpointer) -> None:
    """Make a ``DetectionCheckpointer`` whose ``load`` raised usable again. Why: ``main``'s
    ``load`` asserts ``_parsed_url_during_load`` is None on entry and resets it only on success,
    so the fallback past a broken latest checkpoint would fail (v0.6 has no such attribute)."""
    if getattr(checkpointer, "_parsed_url_during_load", None) is not None:
        checkpointer._parsed_url_during_load = None


@functools.lru_cache(maxsize=None)
def checkpointer_drops_url_query() -> bool:
    """Whether ``DetectionCheckpointer.load`` opens a path without its URL query (``main``; v0.6
    opens it as it is). Why: ``SafeCheckpointer`` checks the file that will be opened, and no
    public API says which; ``main``'s checkpointer is the one with ``_parsed_url_during_load``."""
    return hasattr(DetectionCheckpointer(torch.nn.Module()), "_parsed_url_during_load")


def url_query_being_loaded(checkpointer) -> str:
    """The URL query of the path a ``DetectionCheckpointer`` is loading ("" on v0.6). Why:
    ``main`` reads ``?matching_heuristics=True`` in the ``_load_file`` that ``SafeCheckpointer``
    replaces, and keeps it only in the private ``_parsed_url_during_load``."""
    parsed = getattr(checkpointer, "_parsed_url_during_load", None)
    return parsed.query if parsed is not None else ""


def plain_config_in_logs() -> None:
    """Make Detectron2's ``_highlight`` the identity. Why: ``default_setup`` logs the config
    through it in pygments' terminal colours, also into log.txt and redirected output, and nothing
    turns that off (:func:`pointrend_seg.engine.cli.setup_tool_output` calls this)."""
    if hasattr(d2_defaults, "_highlight"):
        d2_defaults._highlight = lambda code, filename: code
