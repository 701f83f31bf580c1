"""
The config layer: pointrend_seg's keys (:func:`add_pointrend_seg_config`), one way to build a
config (:func:`build_config`) and the error type of invalid configs (:class:`ConfigError`).

Each component checks its own keys in its ``from_config``; checks that need the datasets live in
the engine. Nothing here imports the rest of the package.

Unknown keys (a typo, or our keys in a config made without :func:`add_pointrend_seg_config`)
raise :class:`ConfigError` naming the closest existing keys (:func:`merge_config`, used by
:func:`build_config`; :func:`check_pointrend_seg_keys` for configs built elsewhere).

YAML configs are data: they are read with ``yaml.safe_load`` only (Detectron2's
``CfgNode.merge_from_file`` falls back to ``yaml.unsafe_load``, which runs the Python code a
``!!python/...`` tag names). A file with such a tag is refused with a :class:`ConfigError`
naming the file, the line and the tag (:func:`load_yaml_config`).
"""
import contextlib
import difflib
import functools
import os
import re

import torch
import yaml

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.projects.deeplab import add_deeplab_config

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "ConfigError",
    "add_pointrend_seg_config",
    "build_config",
    "check_pointrend_seg_keys",
    "closest_keys",
    "load_yaml_config",
    "lookup",
    "merge_config",
    "raise_config_problems",
]


# Default of INPUT.MAX_IMAGE_PIXELS: 100 megapixels (e.g. 10000 x 10000).
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000


class ConfigError(ValueError):
    """An inconsistent configuration; the message names the keys and values."""


def lookup(registry, key: str, name: str):
    """``registry.get(name)`` for the config ``key`` that names it; an unknown name is a
    :class:`ConfigError` naming the key and the registered names (Detectron2's is a KeyError)."""
    if name not in registry:
        raise ConfigError(f"{key}={name!r} is not registered; registered names: "
                          f"{sorted(n for n, _ in registry)}")
    return registry.get(name)


def raise_config_problems(problems) -> None:
    """Raise one :class:`ConfigError` listing ``problems`` (strings), if there are any."""
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))


def add_pointrend_seg_config(cfg):
    """
    Add the keys used by pointrend_seg to a Detectron2 config (in place).

    Detectron2's DeepLab keys come from its own ``add_deeplab_config`` (crop retry, poly LR,
    ASPP, DeepLabV3+ projections, ResNet stem / dilation / multi-grid), with one default changed:
    ``MODEL.SEM_SEG_HEAD.LOSS_TYPE`` is "cross_entropy". Keys that Detectron2's PointRend project
    also defines keep the same names and meaning, so their YAML files read the same way here.
    """
    add_deeplab_config(cfg)
    # ---- input ------------------------------------------------------------------------------
    # Photometric augmentation of the SSD paper (brightness, contrast, saturation, hue).
    cfg.INPUT.COLOR_AUG_SSD = False
    # Largest image (and label) file accepted, in pixels (width x height), checked from the file
    # header before decoding, by the mapper, the dataset check, evaluation and tools/demo.py;
    # 0: no limit. Memory grows with the pixels of a file, not with its bytes (a 450 KB PNG of
    # 12000x12000 decodes to 432 MB); docs/bad_inputs.md says what the default costs.
    cfg.INPUT.MAX_IMAGE_PIXELS = DEFAULT_MAX_IMAGE_PIXELS

    # ---- coarse head (DeepLabV3 / DeepLabV3+ / any Detectron2 head) --------------------------
    # The one key naming the coarse head: "DeepLabV3" or "DeepLabV3Plus" (pointrend_seg's
    # COARSE_HEAD_REGISTRY), or a head of Detectron2's SEM_SEG_HEADS_REGISTRY with layers() and
    # common_stride (e.g. "SemSegFPNHead"; Detectron2's PointRend project names it
    # MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME, a key a merged file is told to rename).
    cfg.MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME = "DeepLabV3"
    # "cross_entropy" (here the default; Detectron2's DeepLab project defaults to the other) or
    # "hard_pixel_mining" (bootstrapped CE over the HARD_PIXEL_TOP_K fraction of hardest pixels).
    cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = "cross_entropy"
    cfg.MODEL.SEM_SEG_HEAD.HARD_PIXEL_TOP_K = 0.2

    # ---- PointRend -------------------------------------------------------------------------
    cfg.MODEL.POINT_HEAD = CN()
    # Name in pointrend_seg's POINT_HEAD_REGISTRY: "MLPPointHead" (paper) or "LinearPointHead".
    # The number of classes is MODEL.SEM_SEG_HEAD.NUM_CLASSES.
    cfg.MODEL.POINT_HEAD.NAME = "MLPPointHead"
    # Fine-grained feature maps sampled at each point; empty: the backbone output of the smallest
    # stride (res2 of our ResNet, p2 of an FPN), the paper's choice.
    cfg.MODEL.POINT_HEAD.IN_FEATURES = []
    cfg.MODEL.POINT_HEAD.FC_DIM = 256
    cfg.MODEL.POINT_HEAD.NUM_FC = 3
    # Re-concatenate the coarse prediction before every MLP layer.
    cfg.MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER = True
    if not cfg.key_is_renamed("MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME"):
        cfg.register_renamed_key(
            "MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME", "MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME",
            message="pointrend_seg names the coarse head with one key: set "
            "MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME to the Detectron2 head's name, e.g. SemSegFPNHead",
        )
    # Name in pointrend_seg's POINT_SAMPLER_REGISTRY.
    cfg.MODEL.POINT_HEAD.SAMPLER = "UncertaintyPointSampler"
    # Training: N points per image, k (over-generation) and beta (importance fraction).
    cfg.MODEL.POINT_HEAD.TRAIN_NUM_POINTS = 2048
    cfg.MODEL.POINT_HEAD.OVERSAMPLE_RATIO = 3
    cfg.MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO = 0.75
    cfg.MODEL.POINT_HEAD.LOSS_WEIGHT = 1.0
    # Inference: N points re-predicted per subdivision step.
    cfg.MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS = 8192
    # -1: as many 2x steps as it takes to go from the coarse stride to the input resolution.
    cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS = -1
    # How inference finds the N most uncertain cells: "auto" (the measured fastest of the device
    # type, pointrend_seg.modeling.point_sampling.DEFAULT_SUBDIVISION_SELECT), "topk", "sort" or
    # "radix". All select the same cells up to exact ties; only the speed differs.
    cfg.MODEL.POINT_HEAD.SUBDIVISION_SELECT = "auto"

    # ---- inference transforms (pointrend_seg.modeling.inference.prepare_for_inference) ------
    # What prepare_for_inference(model, cfg) applies to a model in eval mode (the benchmark,
    # evaluation and prediction call it); training never sees them (undo() restores the model).
    cfg.MODEL.INFERENCE = CN()
    # Fold each batch norm (BatchNorm2d, FrozenBatchNorm2d, SyncBatchNorm in eval) into the
    # convolution before it: one convolution with a bias instead of a convolution and a norm.
    cfg.MODEL.INFERENCE.FOLD_BN = True
    # channels_last memory format for the weights (and so the activations): "auto" (on for
    # CUDA, off on CPU), "on" or "off".
    cfg.MODEL.INFERENCE.CHANNELS_LAST = "auto"
    # torch.compile the backbone and the semantic head: "" (off), "default", "reduce-overhead"
    # (adds CUDA graphs; input sizes must repeat), "max-autotune" or
    # "max-autotune-no-cudagraphs". Off by default: see docs/benchmarks.md for what it pays.
    cfg.MODEL.INFERENCE.COMPILE = ""

    # ---- evaluation ------------------------------------------------------------------------
    # Boundary F-score and Boundary IoU next to mIoU (pointrend_seg.evaluation.BoundaryEvaluator).
    cfg.TEST.BOUNDARY_EVAL = CN()
    cfg.TEST.BOUNDARY_EVAL.ENABLED = True
    # BF distance tolerance and Boundary-IoU band width, as fractions of the image diagonal.
    cfg.TEST.BOUNDARY_EVAL.BF_TOLERANCE = 0.0075
    cfg.TEST.BOUNDARY_EVAL.BIOU_DILATION = 0.02

    # Sliding-window inference for images larger than what fits (or what the model was trained
    # on): windows of SIZE (h, w) every STRIDE (h, w) pixels, overlaps blended by "mean" or "hann".
    cfg.TEST.SLIDING_WINDOW = CN()
    cfg.TEST.SLIDING_WINDOW.ENABLED = False
    cfg.TEST.SLIDING_WINDOW.SIZE = (512, 1024)
    cfg.TEST.SLIDING_WINDOW.STRIDE = (341, 683)
    cfg.TEST.SLIDING_WINDOW.BLEND = "mean"
    # Multi-scale + flip test-time augmentation uses Detectron2's TEST.AUG keys (ENABLED,
    # MIN_SIZES: short sides in pixels, MAX_SIZE, FLIP); class probabilities are averaged.

    # ---- solver ----------------------------------------------------------------------------
    # WarmupPolyLR (SOLVER.POLY_LR_POWER / POLY_LR_CONSTANT_ENDING from add_deeplab_config).
    # "SGD" (Detectron2's, with SOLVER.MOMENTUM / NESTEROV) or "ADAMW"; fused on CUDA.
    cfg.SOLVER.OPTIMIZER = "SGD"
    # Mixed-precision training when SOLVER.AMP.ENABLED (Detectron2's key): "float16" (with loss
    # scaling, Detectron2's AMP) or "bfloat16" (no loss scaling needed; CPU and recent GPUs).
    cfg.SOLVER.AMP.PRECISION = "float16"
    # Train in channels_last memory format (faster convolutions on GPUs with bf16/fp16).
    cfg.SOLVER.CHANNELS_LAST = False
    # Training metrics (console, OUTPUT_DIR/metrics.json, TensorBoard) are written every
    # LOG_PERIOD iterations, as medians over the last LOG_PERIOD iterations (1: raw values).
    cfg.SOLVER.LOG_PERIOD = 20

    # ---- dataset check (pointrend_seg.data.dataset_check) ------------------------------------
    # Before training (and --eval-only), every sample of DATASETS.TRAIN and DATASETS.TEST is read
    # once and checked; problems stop the run, all listed. Cached: a second start reads nothing.
    cfg.DATASETS.CHECK = CN()
    cfg.DATASETS.CHECK.ENABLED = True
    # Leave out the samples with problems instead of stopping (listed in
    # OUTPUT_DIR/skipped_samples.json), and skip samples that fail to load during training.
    cfg.DATASETS.CHECK.SKIP_BAD = False
    # "": ~/.cache/pointrend_seg/dataset_checks.
    cfg.DATASETS.CHECK.CACHE_DIR = ""
    # Reader processes; 0: one per CPU this process may use.
    cfg.DATASETS.CHECK.NUM_WORKERS = 0
    # Warn when a larger fraction of a dataset's label pixels is the ignore label.
    cfg.DATASETS.CHECK.MAX_IGNORED_FRACTION = 0.5


def build_config(config_file: str = "", opts=()):
    """
    Detectron2 defaults + :func:`add_pointrend_seg_config` + a YAML file (``_BASE_`` supported)
    + ``KEY VALUE`` overrides (:func:`merge_config`). Raises if the config asks for CUDA on a
    machine without it.
    """
    cfg = get_cfg()
    add_pointrend_seg_config(cfg)
    merge_config(cfg, config_file, opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"MODEL.DEVICE={cfg.MODEL.DEVICE!r} but no CUDA device is available; "
            "add 'MODEL.DEVICE cpu' to the command line"
        )
    return cfg


def merge_config(cfg, config_file: str = "", opts=()):
    """
    Merge a YAML file (``_BASE_`` supported) and then ``KEY VALUE`` overrides into ``cfg``, as
    ``cfg.merge_from_file`` / ``merge_from_list`` do, with helpful errors: every unknown key of
    the file (or of the overrides) is listed with the closest existing keys, or, when they are
    pointrend_seg keys and ``cfg`` was made without :func:`add_pointrend_seg_config`, that is
    said. Usable on any Detectron2 config (e.g. ``cfg = get_cfg(); merge_config(cfg, path)``).

    Raises:
        FileNotFoundError: ``config_file`` does not exist.
        ConfigError: unknown keys, naming them, where they come from and what to use instead.
    """
    if config_file and not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file not found: {config_file}")
    opts = list(opts)
    steps = []
    if config_file:
        def merge_file():
            with _yaml_errors_named(config_file):
                # Never yaml.unsafe_load (Detectron2's merge_from_file defaults to allowing it).
                cfg.merge_from_file(config_file, allow_unsafe=False)

        steps.append((config_file, merge_file, lambda: _keys_of_file(cfg, config_file)))
    steps.append(("the command line", lambda: cfg.merge_from_list(opts),
                  lambda: [str(k) for k in opts[0::2]]))
    for source, merge, given_keys in steps:
        try:
            merge()
        except ValueError as e:  # yacs: a value of another type than the key's default
            match = re.search(r"Type mismatch \((.*?) vs\. (.*?)\) with values \((.*) vs\. "
                              r"(.*)\) for config key: (\S+)", str(e))
            if match is None:
                raise
            default_type, given_type, default, given, key = match.groups()
            raise ConfigError(
                f"{key}={given} in {source}: the key holds {_type_name(default_type)} values "
                f"(default {default}), not {_type_name(given_type)}"
            ) from None
        except (KeyError, AssertionError) as e:  # yacs: unknown key (KeyError from files)
            if "was renamed to" in str(e):  # yacs: a renamed key, with what to use instead
                raise ConfigError(f"{source}: {str(e).strip(chr(34))}") from None
            match = re.search(r"Non-existent (?:config )?key: (\S+)", str(e))
            if match is None:
                raise
            unknown = [k for k in given_keys() if not _has_key(cfg, k)]
            if match.group(1) not in unknown:
                unknown.insert(0, match.group(1))
            raise ConfigError(_unknown_keys_message(cfg, unknown, source)) from None


def _type_name(type_repr: str) -> str:
    """"<class 'int'>" -> "int"."""
    found = re.search(r"'(\w+)'", type_repr)
    return found.group(1) if found else type_repr


def _has_key(cfg, key):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return cfg.key_is_deprecated(key) or cfg.key_is_renamed(key)
        node = node[part]
    return True


def _leaf_keys(node, prefix=""):
    for name, value in node.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            yield from _leaf_keys(value, key + ".")
        else:
            yield key


def _keys_of_file(cfg, config_file):
    """The leaf keys set by ``config_file`` and its ``_BASE_`` files (for error messages)."""
    try:
        loaded = load_yaml_config(config_file, type(cfg))
    except Exception:  # the merge error is reported either way
        return []
    return [k for k in _leaf_keys(loaded) if k != "VERSION"]


@contextlib.contextmanager
def _yaml_errors_named(config_file):
    """YAML errors of ``config_file`` (or of its ``_BASE_`` files) as one :class:`ConfigError`."""
    try:
        yield
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        where = f"{mark.name}, line {mark.line + 1}" if mark is not None else config_file
        found = re.search(r"tag '?(tag:yaml\.org,2002:)?([^'\s]+)'?", e.problem or "")
        tag = ("!!" + found.group(2) if found.group(1) else found.group(2)) if found else "?"
        raise ConfigError(
            f"{where}: the YAML tag {tag} is not allowed in a config. Configs are loaded as data "
            "(yaml.safe_load): a Python tag would run code. Remove it and write the value "
            "itself (numbers, strings, lists)"
            + (f" (in a _BASE_ of {config_file})" if mark is not None
               and os.path.abspath(mark.name) != os.path.abspath(config_file) else "")
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{config_file} is not valid YAML: {e}") from None


def load_yaml_config(config_file: str, cfg_type=CN) -> dict:
    """
    The dict of a YAML config file with its ``_BASE_`` files merged in, read with
    ``yaml.safe_load`` only.

    Raises:
        ConfigError: the file (or a base) has a Python tag (``!!python/...``, which
            ``yaml.unsafe_load`` would execute) or is not valid YAML; names the file and line.
    """
    with _yaml_errors_named(config_file):
        return cfg_type.load_yaml_with_base(config_file, allow_unsafe=False)


@functools.lru_cache(maxsize=None)
def _pointrend_seg_keys():
    """The keys that :func:`add_pointrend_seg_config` adds to Detectron2's defaults."""
    ours = get_cfg()
    add_pointrend_seg_config(ours)
    return frozenset(_leaf_keys(ours)) - frozenset(_leaf_keys(get_cfg()))


def closest_keys(cfg, key: str, n: int = 3):
    """
    Up to ``n`` keys of ``cfg`` that ``key`` most likely meant: keys with the same last
    component first (a key in the wrong group), then the most similar spellings.
    """
    keys = sorted(_leaf_keys(cfg))
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == leaf]
    similar = difflib.get_close_matches(key, keys, n=n, cutoff=0.75)
    return list(dict.fromkeys(same_leaf + similar))[:n]


def _unknown_keys_message(cfg, unknown, source):
    if any("POINT_HEAD.NUM_CLASSES" in k for k in unknown):
        return (
            "MODEL.POINT_HEAD.NUM_CLASSES is not a pointrend_seg key: the point head predicts "
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES classes. Remove MODEL.POINT_HEAD.NUM_CLASSES "
            f"(from {source}) and set MODEL.SEM_SEG_HEAD.NUM_CLASSES"
        )
    ours = [k for k in unknown if k in _pointrend_seg_keys()]
    if ours:
        return (
            f"{source} sets pointrend_seg config keys ({', '.join(ours[:5])}"
            f"{', ...' if len(ours) > 5 else ''}) but this config does not have them: it was "
            "made without add_pointrend_seg_config. Build it with "
            "pointrend_seg.config.build_config(config_file, opts), or call "
            "pointrend_seg.add_pointrend_seg_config(cfg) right after get_cfg()"
        )
    lines = []
    for key in unknown:
        close = closest_keys(cfg, key)
        lines.append(f"{key}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
    return f"unknown config key(s) in {source}: " + "; ".join(lines)


def check_pointrend_seg_keys(cfg) -> None:
    """
    Raise :class:`ConfigError` if ``cfg`` lacks keys of :func:`add_pointrend_seg_config`
    (a config made with ``get_cfg()`` alone, or with Detectron2's ``add_pointrend_config``).
    """
    missing = sorted(k for k in _pointrend_seg_keys() if not _has_key(cfg, k))
    if missing:
        raise ConfigError(
            f"the config lacks {len(missing)} pointrend_seg keys (e.g. {', '.join(missing[:3])}): "
            "it was made without add_pointrend_seg_config. Build it with "
            "pointrend_seg.config.build_config(config_file, opts), or call "
            "pointrend_seg.add_pointrend_seg_config(cfg) right after get_cfg()"
        )
