"""Checks of the config against the datasets it names, run when a trainer or an evaluation starts
(each model component checks its own keys when built), and of the solver keys the trainer reads."""
import math

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..config import ConfigError, is_int, is_number, raise_config_problems

__all__ = ["check_dataset_config", "check_lr_schedule", "check_seed", "check_solver_config"]


def check_solver_config(cfg, names=None) -> None:
    """The ``SOLVER`` / ``TEST`` / ``DATALOADER`` keys the trainer reads (integers and finite
    numbers in their ranges) and a non-empty ``DATASETS.TRAIN``: one ConfigError listing every
    wrong key with its value (docs/bad_inputs.md). ``names``: {key: the name the messages give
    it}, e.g. a Python config's (``RunConfig.key_names``)."""
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
    """``SEED``: negative (random) or an integer each of the ``processes`` can seed NumPy with
    (``default_setup`` seeds ``SEED + rank``; NumPy takes < 2**32), checked before
    ``default_setup`` writes ``config.yaml``; a ConfigError naming the key (``names``: as
    :func:`check_solver_config`)."""
    seed, most = cfg.SEED, 2 ** 32 - max(1, processes)
    if not is_int(seed) or seed > most:
        shown = (names or {}).get("SEED", "SEED")
        raise ConfigError(
            f"{shown}={seed!r} must be an integer <= {most} (NumPy seeds are below 2**32"
            + (f"; each of the {processes} processes seeds it with {shown} + its rank"
               if processes > 1 else "") + ") or negative (a random seed)")


def check_lr_schedule(scheduler, max_iter: int, keys: str, samples: int = 2000) -> None:
    """A ConfigError naming ``keys`` (the schedule's settings), the iteration and the rate unless
    the ``scheduler``'s rates at the first and last of ``max_iter`` iterations, the step after and
    up to ``samples`` between are finite and >= 0 (a negative one is silent gradient ascent); the
    scheduler is left as it was."""
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
    """Each dataset named by ``keys`` is registered and its metadata's ``stuff_classes`` /
    ``ignore_label`` (where present) fit ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` / ``IGNORE_VALUE``;
    else one ConfigError naming the datasets, keys and values."""
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
                    f"metadata) but MODEL.SEM_SEG_HEAD.NUM_CLASSES={num_classes}")
            ignore_label = meta.get("ignore_label", None)
            if ignore_label is not None and ignore_label != ignore_value:
                problems.append(
                    f"{key}: dataset {name!r} has ignore_label={ignore_label} in its metadata "
                    f"but MODEL.SEM_SEG_HEAD.IGNORE_VALUE={ignore_value}")
    raise_config_problems(problems)
