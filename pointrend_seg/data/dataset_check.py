"""Whole-dataset check: every image/label pair read once, in worker processes, with the mapper's
own readers and checks; one :class:`DatasetReport` per dataset. What is checked, the cache and
the tools: docs/dataset_check.md.
"""
import hashlib
import json
import logging
import multiprocessing
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from ..config import DEFAULT_MAX_IMAGE_PIXELS, check_arguments, is_int, is_number
from ..files import atomic_write
from .augmentations import build_sem_seg_augmentations
from .readers import (_TURNED_90, BadInputError, check_image_size, check_label_size,
                      check_label_values, check_resizable, image_orientation, read_image_file,
                      read_label_file, smallest_resizes, too_large_message)
from .label_map import apply_label_map, binary_mask_hint, format_label_map
from .metadata import dataset_class_names

__all__ = ["DatasetCheckError", "DatasetReport", "SampleProblem", "check_dataset",
           "check_dataset_dicts", "default_cache_dir", "inspect_sample", "mapper_resizes",
           "raise_dataset_problems"]

logger = logging.getLogger(__name__)

_CACHE_FORMAT = 2  # 2: facts hold the image's EXIF orientation
# Reading in worker processes pays off from this many files to read.
_MIN_FILES_FOR_WORKERS = 64


def mapper_resizes(cfg):
    """The smallest resizes of both the training and the test mapper of ``cfg``
    (:func:`~.readers.smallest_resizes`), which "degenerate image" is tested against."""
    return smallest_resizes(build_sem_seg_augmentations(cfg, True)
                            + build_sem_seg_augmentations(cfg, False))


def default_cache_dir() -> str:
    """``~/.cache/pointrend_seg/dataset_checks``: where checks are cached by default."""
    return os.path.join(os.path.expanduser("~"), ".cache", "pointrend_seg", "dataset_checks")


class DatasetCheckError(BadInputError):
    """Dataset checks found problems; the message lists every one with its file."""


@dataclass
class SampleProblem:
    """One problem of one sample: ``kind`` is a :class:`BadInputError` kind, ``file`` the file
    it is about, ``image`` the sample's ``file_name``."""

    dataset: str
    index: int  # position of the sample in the dataset's list of dicts
    kind: str
    file: str
    message: str
    image: str
    values: Optional[List[int]] = None  # "label values": the values outside the classes


@dataclass
class DatasetReport:
    """The result of checking one dataset; pixel and image counts are over the samples without
    problems (what training with skipping would see)."""

    dataset: str
    class_names: List[str]
    ignore_label: int
    num_samples: int
    problems: List[SampleProblem] = field(default_factory=list)
    class_pixels: np.ndarray = None  # (K,) int64, pixels of each class
    class_images: np.ndarray = None  # (K,) int64, samples in which each class appears
    ignored_pixels: int = 0
    labelled_pixels: int = 0  # all label pixels, ignored ones included
    warnings: List[str] = field(default_factory=list)
    num_read: int = 0  # samples read by this check; the others came from the cache
    seconds: float = 0.0
    label_map: Optional[Dict[int, int]] = None
    # (K,) int64: pixels of each class in the samples with problems (not in class_pixels)
    flagged_class_pixels: np.ndarray = None
    hints: List[str] = field(default_factory=list)  # how to fix most problems at once

    @property
    def bad_indices(self) -> List[int]:
        """Sorted positions of the samples with at least one problem."""
        return sorted({p.index for p in self.problems})

    @property
    def bad_images(self) -> List[str]:
        """Sorted image files (``file_name``) of the samples with at least one problem."""
        return sorted({p.image for p in self.problems})

    @property
    def ignored_fraction(self) -> float:
        return self.ignored_pixels / self.labelled_pixels if self.labelled_pixels else 0.0

    @property
    def absent_classes(self) -> List[str]:
        """Names of the classes with no pixel in the labels."""
        return [n for n, c in zip(self.class_names, self.class_pixels) if c == 0]

    def summary(self) -> str:
        """One line: samples, problems, time and cache use."""
        bad = len(self.bad_indices)
        return (
            f"dataset {self.dataset!r}: {self.num_samples} samples, "
            f"{bad} with problems ({len(self.problems)} problems); "
            f"read {self.num_read} samples in {self.seconds:.1f} s, "
            f"{self.num_samples - self.num_read} unchanged since the cached check"
        )

    def problems_table(self, limit: Optional[int] = None) -> str:
        """The problems, one row each (kind, relative file, message); with ``limit``, the first
        ``limit`` rows and a count of the others."""
        if not self.problems:
            return ""
        shown = self.problems if limit is None else self.problems[:limit]
        files = [p.file for p in self.problems]
        root = os.path.commonpath(files) if len(files) > 1 else os.path.dirname(files[0])
        if os.path.isfile(root):
            root = os.path.dirname(root)
        rows = [(p.kind, os.path.relpath(p.file, root) if root else p.file, p.message)
                for p in shown]
        header = ("problem", "file" + (f" (in {root})" if root else ""), "details")
        table = _table([header] + rows)
        if len(shown) < len(self.problems):
            table += f"\n  ... and {len(self.problems) - len(shown)} more"
        return table

    def histogram_table(self) -> str:
        """Pixels and images per class, and the ignored pixels."""
        total = max(self.labelled_pixels, 1)
        rows = [("id", "class", "pixels", "%", "images")]
        for i, (name, pixels, images) in enumerate(
            zip(self.class_names, self.class_pixels, self.class_images)
        ):
            note = ""
            if pixels == 0:
                flagged = (self.flagged_class_pixels is not None
                           and self.flagged_class_pixels[i] > 0)
                note = ("  not counted: only in samples with problems" if flagged
                        else "  never appears")
            rows.append((str(i), name, str(int(pixels)), f"{100.0 * pixels / total:.2f}",
                         str(int(images)) + note))
        rows.append((str(self.ignore_label), "(ignored)", str(self.ignored_pixels),
                     f"{100.0 * self.ignored_fraction:.2f}", ""))
        return _table(rows)

    def format(self, warnings: bool = True) -> str:
        """The whole report: summary, problems, histogram and (``warnings``) the warnings."""
        parts = [self.summary()]
        if self.label_map:
            parts.append(f"  label map (stored value:class id): {format_label_map(self.label_map)}")
        if self.problems:
            parts.append(self.problems_table())
        parts.append(self.histogram_table())
        if warnings:
            parts.extend(f"  WARNING: {w}" for w in self.warnings)
        parts.extend(f"  HINT: {h}" for h in self.hints)
        return "\n".join(parts)

    def to_dict(self) -> dict:
        """A JSON-serialisable summary (problems, per-class counts, ignored fraction, warnings)."""
        return {
            "dataset": self.dataset,
            "num_samples": self.num_samples,
            "problems": [
                {"index": p.index, "image": p.image, "kind": p.kind, "file": p.file,
                 "message": p.message}
                for p in self.problems
            ],
            "class_pixels": {n: int(c) for n, c in zip(self.class_names, self.class_pixels)},
            "class_images": {n: int(c) for n, c in zip(self.class_names, self.class_images)},
            "ignore_label": self.ignore_label,
            "ignored_fraction": self.ignored_fraction,
            "absent_classes": self.absent_classes,
            "warnings": list(self.warnings),
            "hints": list(self.hints),
        }


def _table(rows):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows
    ).rstrip()


def raise_dataset_problems(reports: Sequence[DatasetReport], limit: Optional[int] = None,
                           where: str = "") -> None:
    """Raise one :class:`DatasetCheckError` listing the problems and warnings of all
    ``reports``, if any; with ``limit``, at most that many rows per dataset, and ``where`` names
    the full list."""
    bad = [r for r in reports if r.problems]
    if not bad:
        return
    count = sum(len(r.problems) for r in bad)
    flagged = sum(len(r.bad_indices) for r in bad)
    total = sum(r.num_samples for r in bad)
    if any(r.hints for r in bad):
        advice = "see the HINT below: one change fixes them"
    else:
        advice = ("fix or remove these files, or leave the samples out (tools/train_net.py "
                  "--skip-bad, or DATASETS.CHECK.SKIP_BAD True: "
                  f"{flagged} of {total} samples, {100.0 * flagged / max(total, 1):.0f}%)")
    parts = [f"{count} problem(s) in {len(bad)} dataset(s); {advice}"
             + (f"; all problems: {where}" if where else "") + ":"]
    for r in bad:
        parts += [r.summary(), r.problems_table(limit)] + [f"  WARNING: {w}" for w in r.warnings]
        parts += [f"  HINT: {h}" for h in r.hints]
    raise DatasetCheckError("\n".join(parts), "dataset check")


# ---- reading one sample (in worker processes) --------------------------------------------------
def _value_counts(label):
    flat = label.ravel()
    if flat.size and flat.min() >= 0 and flat.max() < (1 << 17):
        counts = np.bincount(flat)
        values = np.flatnonzero(counts)
        return values, counts[values]
    return np.unique(flat, return_counts=True)


def inspect_sample(image_path: str, label_path: Optional[str],
                   max_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS) -> dict:
    """What the files of one sample hold, read with the mapper's readers: ``image_shape`` /
    ``label_shape`` ([H, W] after EXIF orientation; None if unreadable), ``orientation`` (1 if
    none), ``values`` / ``counts`` (stored label values, no label map, and their pixel counts),
    ``errors`` ([kind, message, file] of each unreadable or too large file)."""
    facts = {"image_shape": None, "label_shape": None, "values": None, "counts": None,
             "orientation": 1, "errors": []}
    try:
        facts["image_shape"] = list(read_image_file(image_path, "BGR", max_pixels).shape[:2])
        facts["orientation"] = image_orientation(image_path)
    except BadInputError as e:
        facts["errors"].append([e.kind, str(e), e.path])
    if label_path is not None:
        try:
            label = read_label_file(label_path, max_pixels=max_pixels)
            facts["label_shape"] = list(label.shape[:2])
            values, counts = _value_counts(label)
            facts["values"], facts["counts"] = values.tolist(), counts.tolist()
        except BadInputError as e:
            facts["errors"].append([e.kind, str(e), e.path])
    return facts


def _within_limit(facts, image_path, label_path, max_pixels):
    """``facts`` (perhaps cached, read under another limit) as :func:`inspect_sample` would find
    them under ``max_pixels`` (0 / None: no limit): a larger file becomes its "too large" error."""
    if not max_pixels:
        return facts
    image, label = facts["image_shape"], facts["label_shape"]
    image_over = image is not None and image[0] * image[1] > max_pixels
    label_over = label is not None and label[0] * label[1] > max_pixels
    if not (image_over or label_over):
        return facts
    facts = dict(facts, errors=list(facts["errors"]))
    if image_over:  # as stored (the header's size): before its EXIF orientation turned it
        height, width = image[::-1] if facts.get("orientation", 1) in _TURNED_90 else image
        facts["errors"].insert(0, ["image too large", too_large_message(
            "image", image_path, width, height, max_pixels), image_path])
        facts.update(image_shape=None, orientation=1)
    if label_over:
        facts["errors"].append(["label too large", too_large_message(
            "label", label_path, label[1], label[0], max_pixels), label_path])
        facts.update(label_shape=None, values=None, counts=None)
    return facts


def _inspect(job):
    position, image_path, label_path, max_pixels = job
    return position, inspect_sample(image_path, label_path, max_pixels)


# ---- cache --------------------------------------------------------------------------------------
def _stat(path):
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino]


def _cache_path(cache_dir, dataset_name):
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", dataset_name)[:80]
    digest = hashlib.sha1(dataset_name.encode("utf-8")).hexdigest()[:10]
    return os.path.join(cache_dir, f"{safe}-{digest}.json")


def _load_cache(path):
    """The entries ``{key: {"stats": ..., "facts": ...}}`` of the cache ``path``; {} without one
    or of another format. A damaged file or entry is left out (its files read again) with one
    warning naming the file."""
    why = None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError:  # none, or unreadable: the write after the check says why
        return {}
    except ValueError as e:  # not JSON, not UTF-8
        data, why = None, f"{type(e).__name__}: {e}"
    if isinstance(data, dict) and data.get("format") != _CACHE_FORMAT:
        return {}  # another version's: replaced after this check
    samples = data.get("samples") if isinstance(data, dict) else None
    if not isinstance(samples, dict):
        samples, why = {}, why or "not a dataset-check cache"
    good = {k: v for k, v in samples.items() if _is_entry(v)}
    if len(good) < len(samples):
        why = f"{len(samples) - len(good)} of its {len(samples)} entries are not as it writes them"
    if why:
        logger.warning("the dataset check's cache %s is damaged (%s): the files it does not "
                       "describe are read again, and the cache is rewritten", path, why)
    return good


def _is_entry(entry) -> bool:
    """Whether a cache entry holds ``stats`` and ``facts`` as this module writes them."""
    def ints(v, least=None, n=None):
        return isinstance(v, list) and (n is None or len(v) == n) and all(
            is_int(x) and (least is None or x >= least) for x in v)

    if not (isinstance(entry, dict) and isinstance(entry.get("facts"), dict)
            and isinstance(entry.get("stats"), list) and len(entry["stats"]) == 2):
        return False
    facts, shapes = entry["facts"], ("image_shape", "label_shape")
    values, counts = facts.get("values"), facts.get("counts")
    return (all(k in facts and (facts[k] is None or ints(facts[k], 0, 2)) for k in shapes)
            and ((values is None and counts is None)
                 or (ints(values) and ints(counts, 1) and len(values) == len(counts)))
            and is_int(facts.get("orientation", 1)) and isinstance(facts.get("errors"), list)
            and all(isinstance(e, list) and len(e) == 3 and all(
                isinstance(x, str) or x is None for x in e) for e in facts["errors"]))


def _save_cache(path, samples):
    """Write the cache ``path``, or log a warning naming it and go on: the check is done, and
    the cache only saves reading the files again."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, lambda f: json.dump({"format": _CACHE_FORMAT, "samples": samples}, f),
                     binary=False)
    except OSError as e:
        logger.warning("the dataset check's cache %s cannot be written (%s: %s): the report is "
                       "complete, but the next check reads every file again (DATASETS.CHECK."
                       "CACHE_DIR / --cache-dir: another folder)", path, type(e).__name__, e)


# ---- checking ----------------------------------------------------------------------------------
def _read_all(jobs, num_workers, progress, dataset_name):
    """{position: facts} of ``jobs`` ((position, image, label, max_pixels) tuples)."""
    def shown(results):  # with a progress bar
        return tqdm(results, total=len(jobs), desc=f"checking {dataset_name}", unit="sample",
                    disable=not progress or not jobs, file=sys.stderr, mininterval=0.5)

    if num_workers > 1 and len(jobs) >= _MIN_FILES_FOR_WORKERS:
        methods = multiprocessing.get_all_start_methods()
        # fork: workers start in milliseconds, without re-importing Detectron2.
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        chunk = max(1, min(64, len(jobs) // (8 * num_workers)))
        with context.Pool(num_workers) as pool:
            return dict(shown(pool.imap_unordered(_inspect, jobs, chunksize=chunk)))
    return dict(shown(map(_inspect, jobs)))


def _sample_problems(dataset_name, position, record, facts, num_classes, ignore_label,
                     require_labels, resizes=()):
    """The problems of one sample, found by the mapper's checks; and its mapped label values."""
    image_path, label_path = record["file_name"], record.get("sem_seg_file_name")
    problems = [SampleProblem(dataset_name, position, kind, path, message, image_path)
                for kind, message, path in facts["errors"]]

    def attempt(check, *args, values=None):  # a check that raises is a problem
        try:
            check(*args)
        except BadInputError as e:
            problems.append(SampleProblem(dataset_name, position, e.kind, e.path, str(e),
                                          image_path, values))

    values = None
    if facts["image_shape"] is not None:
        attempt(check_image_size, facts["image_shape"], record)
        attempt(check_resizable, facts["image_shape"], image_path, resizes)
    if label_path is None and require_labels:
        problems.append(SampleProblem(dataset_name, position, "no label", image_path,
                                      f"training sample {image_path} has no 'sem_seg_file_name'",
                                      image_path))
    if facts["label_shape"] is not None:
        if facts["image_shape"] is not None:
            attempt(check_label_size, facts["label_shape"], facts["image_shape"], label_path,
                    image_path, facts.get("orientation", 1))
        values = apply_label_map(np.asarray(facts["values"], dtype=np.int64),
                                 record.get("sem_seg_label_map"))
        outside = ((values < 0) | (values >= num_classes)) & (values != ignore_label)
        attempt(check_label_values, values, num_classes, ignore_label, label_path,
                values=sorted(int(v) for v in np.unique(values[outside])))
    return problems, values


def check_options(num_workers, max_ignored_fraction, names=None) -> None:
    """Check the options of :func:`check_dataset_dicts` that a config sets.

    Raises:
        ConfigError: naming the keys (``DATASETS.CHECK.*``, or as ``names`` maps them), unless
            ``num_workers`` is None or an integer >= 0 and ``max_ignored_fraction`` in [0, 1].
    """
    names = names or {}
    check_arguments("check_dataset", [
        (names.get(key, key), argument, value, ok, rule) for key, argument, value, ok, rule in (
            ("DATASETS.CHECK.NUM_WORKERS", "num_workers", num_workers,
             num_workers is None or (is_int(num_workers) and num_workers >= 0),
             "an integer >= 0 (0: one reader per CPU)"),
            ("DATASETS.CHECK.MAX_IGNORED_FRACTION", "max_ignored_fraction", max_ignored_fraction,
             is_number(max_ignored_fraction) and 0 <= max_ignored_fraction <= 1,
             "in [0, 1] (the share of ignored label pixels above which the check warns)"))])


def check_dataset_dicts(
    dicts: Sequence[dict], *, dataset_name: str, class_names: Sequence[str], ignore_label: int,
    require_labels: bool = True, num_workers: Optional[int] = None, cache_dir: Optional[str] = None,
    use_cache: bool = True, progress: bool = True, max_ignored_fraction: float = 0.5,
    label_map: Optional[Dict[int, int]] = None,
    max_image_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS,
    resizes: Sequence = (),
) -> DatasetReport:
    """Check the samples ``dicts`` (Detectron2 dataset dicts with ``file_name`` and
    ``sem_seg_file_name``, optionally ``height``/``width`` and ``sem_seg_label_map``).

    Args:
        dataset_name (str): names the dataset in the report and the cache file.
        class_names (list[str]): ids are their indices.
        require_labels (bool): a sample without ``sem_seg_file_name`` is a problem (training).
        num_workers (int or None): reader processes; None: the CPUs this process may use.
        cache_dir (str or None): where the cache lives; None: :func:`default_cache_dir`.
        use_cache (bool): False reads every file and leaves the cache alone.
        progress (bool): show a progress bar (stderr) while reading.
        max_ignored_fraction (float): warn when more of the label pixels are ignored.
        label_map (dict or None): only reported (each dict's ``sem_seg_label_map`` is applied).
        max_image_pixels (int or None): ``INPUT.MAX_IMAGE_PIXELS``: files with more pixels are
            a problem ("image too large", "label too large"); 0 or None: no limit.
        resizes (list): :func:`mapper_resizes`; an image one of them brings to a 0-pixel side is
            a "degenerate image". Empty: not checked.

    Returns:
        DatasetReport
    """
    check_options(num_workers, max_ignored_fraction)
    start = time.perf_counter()
    num_classes = len(class_names)
    cache_file = _cache_path(cache_dir or default_cache_dir(), dataset_name)
    cached = _load_cache(cache_file) if use_cache else {}
    entries, jobs = [], []
    for position, record in enumerate(dicts):
        image_path, label_path = record["file_name"], record.get("sem_seg_file_name")
        key = f"{image_path}\n{label_path or ''}"
        stats = [_stat(image_path), _stat(label_path)]
        hit = cached.get(key)
        entries.append([key, stats, hit["facts"] if hit and hit["stats"] == stats else None])
        if entries[-1][2] is None:
            jobs.append((position, image_path, label_path, max_image_pixels))
    if num_workers is None:  # the CPUs this process may use
        num_workers = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                       else os.cpu_count() or 1)
    for position, facts in _read_all(jobs, max(1, int(num_workers)), progress,
                                     dataset_name).items():
        entries[position][2] = facts
    if use_cache and jobs:  # a file refused as too large is not cached: another limit reads it
        _save_cache(cache_file, {
            key: {"stats": stats, "facts": facts} for key, stats, facts in entries
            if not any(kind.endswith("too large") for kind, _, _ in facts["errors"])})
    # Cached facts were read under any limit: this check's limit applies to their sizes.
    for entry, record in zip(entries, dicts):
        entry[2] = _within_limit(entry[2], record["file_name"], record.get("sem_seg_file_name"),
                                 max_image_pixels)

    report = DatasetReport(
        dataset=dataset_name, class_names=list(class_names), ignore_label=int(ignore_label),
        num_samples=len(dicts), class_pixels=np.zeros(num_classes, np.int64),
        class_images=np.zeros(num_classes, np.int64), num_read=len(jobs),
        label_map=dict(label_map) if label_map else None,
        flagged_class_pixels=np.zeros(num_classes, np.int64),
    )
    all_values = set()
    for position, (record, (_, _, facts)) in enumerate(zip(dicts, entries)):
        problems, values = _sample_problems(dataset_name, position, record, facts, num_classes,
                                            ignore_label, require_labels, resizes)
        report.problems.extend(problems)
        if values is None:
            continue
        all_values.update(values.tolist())
        counts = np.asarray(facts["counts"], dtype=np.int64)
        is_class = (values >= 0) & (values < num_classes)
        if problems:
            np.add.at(report.flagged_class_pixels, values[is_class], counts[is_class])
            continue
        np.add.at(report.class_pixels, values[is_class], counts[is_class])
        report.class_images[np.unique(values[is_class])] += 1
        report.ignored_pixels += int(counts[values == ignore_label].sum())
        report.labelled_pixels += int(counts.sum())
    binary = binary_mask_hint(sorted(all_values), num_classes, ignore_label)
    report.warnings = _warnings(report, binary, max_ignored_fraction)
    report.hints = [] if binary else _hints(report)
    oriented = [(record["file_name"], facts.get("orientation", 1))
                for record, (_, _, facts) in zip(dicts, entries)
                if facts.get("orientation", 1) != 1]
    if oriented:
        report.warnings.append(_orientation_warning(dataset_name, oriented))
    if binary:  # said once, in the warnings, rather than on every row
        for problem in report.problems:
            problem.message = problem.message.replace(f": {binary}", "")
    report.seconds = time.perf_counter() - start
    return report


def _warnings(report, binary, max_ignored_fraction):
    warnings = []
    name, ignore = report.dataset, report.ignore_label
    if binary:
        warnings.append(f"dataset {name!r}: {binary}")
    elif report.labelled_pixels and report.ignored_fraction > max_ignored_fraction:
        warnings.append(
            f"dataset {name!r}: {100 * report.ignored_fraction:.1f}% of the label pixels are the "
            f"ignore label {ignore} (more than {100 * max_ignored_fraction:.0f}%, "
            f"DATASETS.CHECK.MAX_IGNORED_FRACTION): if {ignore} is a class in these masks, map it "
            "to its class id (--label-map VALUE:ID after the dataset's --register-folder); if the "
            "masks mark ignored pixels with another value, make that the ignore label "
            "(--ignore-value V there, and MODEL.SEM_SEG_HEAD.IGNORE_VALUE V)"
        )
    flagged = report.flagged_class_pixels
    absent = [f"{n!r} ({i})" for i, n in enumerate(report.class_names)
              if report.class_pixels[i] == 0 and (flagged is None or flagged[i] == 0)]
    if absent and (report.labelled_pixels or report.problems):
        warnings.append(
            f"dataset {name!r}: class(es) {', '.join(absent)} never appear in the labels: a model "
            "trained on them never learns these classes, and an evaluation on them reports "
            "them as absent"
        )
    return warnings


def _hints(report):
    """One change that fixes the "label values" problems at once, when there is one: every
    flagged file holds the same single value outside the classes (a void label, most often)."""
    flagged = [p for p in report.problems if p.kind == "label values" and p.values]
    if not flagged:
        return []
    common = {tuple(p.values) for p in flagged}
    if len(common) != 1 or len(next(iter(common))) != 1:
        return []
    value = next(iter(common))[0]
    files = len({p.image for p in flagged})
    k = len(report.class_names)
    return [
        f"every one of the {files} label files with values outside the {k} classes "
        f"({100.0 * files / max(report.num_samples, 1):.0f}% of the samples of "
        f"{report.dataset!r}) holds the same value, {value}. If {value} marks void / unlabelled "
        f"pixels, make it the ignore label: --ignore-value {value} after the dataset's "
        f"--register-folder, and MODEL.SEM_SEG_HEAD.IGNORE_VALUE {value}. If it is a class, set "
        f"MODEL.SEM_SEG_HEAD.NUM_CLASSES {value + 1} and give it a name, or map it to one: "
        f"--label-map {value}:ID. (--skip-bad would leave these samples out.)"
    ]


_ORIENTATIONS = {2: "mirrored", 3: "turned 180 degrees", 4: "flipped upside down",
                 5: "mirrored and turned 90 degrees", 6: "turned 90 degrees clockwise",
                 7: "mirrored and turned 90 degrees", 8: "turned 90 degrees anticlockwise"}


def _orientation_warning(dataset_name, oriented):
    path, orientation = oriented[0]
    return (
        f"dataset {dataset_name!r}: {len(oriented)} image(s) carry an EXIF orientation (e.g. "
        f"{path}: {orientation}, {_ORIENTATIONS.get(orientation, 'turned')}): images and labels "
        "are used as displayed, each turned by its own EXIF orientation (Detectron2's rule), so "
        "their labels must be drawn on the turned image. A mask drawn on the stored pixels (most "
        "masks carry no orientation) is then misaligned - with a square image silently. Remove "
        "the images' orientation tag if so (e.g. exiftool -Orientation=1 -n FILE)"
    )


def check_dataset(dataset_name: str, *, num_classes: Optional[int] = None,
                  ignore_label: Optional[int] = None, dicts: Optional[Sequence[dict]] = None,
                  **kwargs) -> DatasetReport:
    """Check the registered dataset ``dataset_name`` (``kwargs``: :func:`check_dataset_dicts`).

    Classes and ignore label come from its metadata; ``num_classes`` and ``ignore_label`` (e.g.
    the model's) must agree with it, and stand in where it has none. ``dicts``: its dataset
    dicts if already loaded.

    Raises:
        ValueError: no ``stuff_classes`` and no ``num_classes``, or they disagree with the
            arguments.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    class_names = dataset_class_names(dataset_name, num_classes)
    meta = MetadataCatalog.get(dataset_name)
    meta_ignore = meta.get("ignore_label", None)
    if ignore_label is None:
        ignore_label = 255 if meta_ignore is None else meta_ignore
    elif meta_ignore is not None and meta_ignore != ignore_label:
        raise ValueError(
            f"dataset {dataset_name!r} has ignore_label={meta_ignore} in its metadata but the "
            f"check was asked for {ignore_label} (MODEL.SEM_SEG_HEAD.IGNORE_VALUE?)"
        )
    return check_dataset_dicts(
        DatasetCatalog.get(dataset_name) if dicts is None else dicts,
        dataset_name=dataset_name, class_names=class_names,
        ignore_label=ignore_label, label_map=meta.get("label_map", None), **kwargs,
    )
