"""
Checks of the config against the datasets it names, run when a trainer or an evaluation starts
(the model does not know the datasets; each model component checks its own keys when built),
and of the solver keys the trainer reads.
"""
import math

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..config import ConfigError, is_int, is_number, raise_config_problems

__all__ = ["check_dataset_config", "check_lr_schedule", "check_seed", "check_solver_config"]


def check_solver_config(cfg, names=None) -> None:
    """
    The ``SOLVER`` / ``TEST`` keys the trainer reads, each named with its value if wrong:
    ``MAX_ITER`` (< 2**31), ``IMS_PER_BATCH``, ``CHECKPOINT_PERIOD``,
    ``LOG_PERIOD`` positive integers,
    ``WARMUP_ITERS``, ``TEST.EVAL_PERIOD`` and ``DATALOADER.NUM_WORKERS`` integers >= 0,
    ``BASE_LR`` and (when enabled) ``CLIP_GRADIENTS.CLIP_VALUE`` positive numbers,
    ``MOMENTUM``, ``WEIGHT_DECAY``, ``WEIGHT_DECAY_NORM``, ``WEIGHT_DECAY_BIAS`` (unless None)
    and ``BIAS_LR_FACTOR`` finite numbers >= 0,
    ``WARMUP_FACTOR`` in [0, 1], ``POLY_LR_POWER`` >= 0 for "WarmupPolyLR", a non-empty
    ``DATASETS.TRAIN`` (Detectron2: an AssertionError after writing the run folder) (how it would
    fail instead: docs/bad_inputs.md).
    ``names``: {key: the name the messages give it}, e.g. a Python config's
    (``RunConfig.key_names``).

    Raises:
        ConfigError: listing every wrong key.
    """
    problems = []
    for key, least in (("SOLVER.MAX_ITER", 1), ("SOLVER.IMS_PER_BATCH", 1),
                       ("SOLVER.CHECKPOINT_PERIOD", 1), ("SOLVER.LOG_PERIOD", 1),
                       ("SOLVER.WARMUP_ITERS", 0), ("TEST.EVAL_PERIOD", 0),
                       ("DATALOADER.NUM_WORKERS", 0)):
        group, name = key.split(".")
        value = cfg[group].get(name, 1)
        shown = (names or {}).get(key, key)
        if not is_int(value) or value < least:
            problems.append(f"{shown}={value!r} must be an integer >= {least}")
        elif key == "SOLVER.MAX_ITER" and value >= 2 ** 31:  # 10**30: OverflowError after setup
            problems.append(f"{shown}={value!r} must be at most 2**31 - 1 = {2 ** 31 - 1} "
                            "(beyond any real run; Detectron2's time estimate overflows on "
                            "larger values)")
    if not cfg.DATASETS.TRAIN:
        shown = (names or {}).get("DATASETS.TRAIN", "DATASETS.TRAIN")
        problems.append(f"{shown} is empty: training needs at least one dataset")
    numbers = [("SOLVER.BASE_LR", cfg.SOLVER.BASE_LR, True)]  # (key, value, positive)
    clip = cfg.SOLVER.get("CLIP_GRADIENTS", None)
    if clip is not None and clip.ENABLED:
        numbers.append(("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", clip.CLIP_VALUE, True))
    # before: 1e400 (YAML: inf) or NaN ended as a non-finite loss with learning-rate advice
    for name in ("MOMENTUM", "WEIGHT_DECAY", "WEIGHT_DECAY_NORM", "WEIGHT_DECAY_BIAS",
                 "BIAS_LR_FACTOR"):
        if cfg.SOLVER.get(name, None) is not None:  # WEIGHT_DECAY_BIAS None: WEIGHT_DECAY's
            numbers.append((f"SOLVER.{name}", cfg.SOLVER[name], False))
    for key, value, positive in numbers:
        if not (is_number(value) and math.isfinite(value) and value >= 0
                and (value > 0 or not positive)):
            problems.append(f"{key}={value!r} must be a "
                            + ("positive number" if positive else "finite number >= 0"))
    factor = cfg.SOLVER.get("WARMUP_FACTOR", 0.0)
    if not is_number(factor) or not 0 <= factor <= 1:
        problems.append(f"SOLVER.WARMUP_FACTOR={factor!r} must be in [0, 1] (the share of "
                        "SOLVER.BASE_LR at iteration 0)")
    power = cfg.SOLVER.get("POLY_LR_POWER", 0.0)
    if cfg.SOLVER.get("LR_SCHEDULER_NAME") == "WarmupPolyLR" and not (
            is_number(power) and math.isfinite(power) and power >= 0):
        problems.append(f"SOLVER.POLY_LR_POWER={power!r} must be a number >= 0")
    raise_config_problems(problems)


def check_seed(cfg, names=None, processes: int = 1) -> None:
    """
    ``SEED``: negative (a random seed, as Detectron2 reads it) or an integer that each of the
    ``processes`` can seed NumPy with (Detectron2's ``default_setup`` seeds ``SEED + rank``;
    NumPy takes at most 2**32 - 1). Checked before ``default_setup``: it would fail after writing
    ``OUTPUT_DIR/config.yaml``, with a ValueError traceback.

    Raises:
        ConfigError: naming the key (``names``: as :func:`check_solver_config`).
    """
    seed, most = cfg.SEED, 2 ** 32 - max(1, processes)
    if not is_int(seed) or seed > most:
        shown = (names or {}).get("SEED", "SEED")
        raise ConfigError(
            f"{shown}={seed!r} must be an integer <= {most} (NumPy seeds are below 2**32"
            + (f"; each of the {processes} processes seeds it with {shown} + its rank"
               if processes > 1 else "") + ") or negative (a random seed)")


def check_lr_schedule(scheduler, max_iter: int, keys: str, samples: int = 2000) -> None:
    """
    The learning rates of a Detectron2 LR ``scheduler`` (its ``get_lr()`` at ``last_epoch``) at
    the first of ``max_iter`` iterations, the last, the step after it (which the trainer computes
    too) and up to ``samples`` evenly spaced between must be finite numbers >= 0; the scheduler
    is left as it was. Why: a negative rate is gradient ascent, silently (a negative warmup
    factor, ``SOLVER.GAMMA``), and a negative poly power a ZeroDivisionError at the end.

    Raises:
        ConfigError: naming ``keys`` (the settings of the schedule), the iteration and the rate.
    """
    if max_iter < 1:
        return
    last = scheduler.last_epoch
    try:
        for i in sorted({*range(0, max_iter, max(1, max_iter // samples)), max_iter - 1,
                       max_iter}):
            scheduler.last_epoch = i
            try:
                rates = scheduler.get_lr()
            except ArithmeticError as e:
                raise ConfigError(f"{keys}: no learning rate at iteration {i} "
                                  f"({type(e).__name__}: {e})") from None
            bad = [r for r in rates if not (is_number(r) and math.isfinite(r) and r >= 0)]
            if bad:
                raise ConfigError(f"the learning rate of {keys} is {bad[0]!r} at iteration {i}: "
                                  "it must be a finite number >= 0 (a negative one is gradient "
                                  "ascent)")
    finally:
        scheduler.last_epoch = last


def check_dataset_config(cfg, keys=("DATASETS.TRAIN", "DATASETS.TEST")) -> None:
    """
    Check the datasets named by ``keys`` against the model: each must be registered, have
    ``len(stuff_classes) == MODEL.SEM_SEG_HEAD.NUM_CLASSES`` and
    ``ignore_label == MODEL.SEM_SEG_HEAD.IGNORE_VALUE`` in its ``MetadataCatalog`` entry
    (when the metadata has those fields).

    Raises:
        ConfigError: naming the dataset, the config key that lists it and the values.
    """
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    ignore_value = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
    registered = set(DatasetCatalog.list())
    problems = []
    for key in keys:
        group, name_key = key.split(".")
        for name in cfg[group][name_key]:
            if name not in registered:
                problems.append(f"{key}: dataset {name!r} is not registered")
                continue
            meta = MetadataCatalog.get(name)
            classes = meta.get("stuff_classes", None)
            if classes is not None and len(classes) != num_classes:
                problems.append(
                    f"{key}: dataset {name!r} has {len(classes)} classes (stuff_classes in its "
                    f"metadata) but MODEL.SEM_SEG_HEAD.NUM_CLASSES={num_classes}"
                )
            ignore_label = meta.get("ignore_label", None)
            if ignore_label is not None and ignore_label != ignore_value:
                problems.append(
                    f"{key}: dataset {name!r} has ignore_label={ignore_label} in its metadata "
                    f"but MODEL.SEM_SEG_HEAD.IGNORE_VALUE={ignore_value}"
                )
    raise_config_problems(problems)
