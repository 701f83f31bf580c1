"""The config layer: pointrend_seg's keys (:func:`add_pointrend_seg_config`), one way to build a
config (:func:`build_config`) and the error type of invalid configs (:class:`ConfigError`).

Each component checks its own keys in its ``from_config``; checks that need the datasets live in
the engine. Nothing here imports the rest of the package. Unknown keys, Python YAML tags and
hostile YAML files are refused with a :class:`ConfigError`: docs/bad_inputs.md.
"""
import contextlib
import difflib
import functools
import inspect
import io
import os
import re
from types import SimpleNamespace
from typing import Optional, Sequence

import torch
import yaml
from omegaconf import DictConfig, ListConfig

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.projects.deeplab import add_deeplab_config
from detectron2.utils.registry import locate
from fvcore.common.config import BASE_KEY  # "_BASE_", the key Detectron2's configs inherit with

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "ConfigError",
    "add_pointrend_seg_config",
    "build_config",
    "check_arguments",
    "check_device",
    "check_pointrend_seg_keys",
    "check_python_overrides",
    "closest_keys",
    "device_override",
    "leaf_items",
    "load_any_config",
    "load_python_config",
    "load_yaml_config",
    "lookup",
    "merge_config",
    "raise_config_problems",
    "shorten",
]


# Default of INPUT.MAX_IMAGE_PIXELS: 100 megapixels (e.g. 10000 x 10000).
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000

# Bounds of one YAML config read (a file and its _BASE_ files), 30-150 times a real config's
# size: they stop hostile files before they cost anything (figures: docs/bad_inputs.md).
MAX_CONFIG_FILE_BYTES = 1 << 20  # 1 MiB per file, read no further
MAX_CONFIG_NODES = 20_000  # values, lists and mappings, each alias counted as what it repeats
MAX_CONFIG_DEPTH = 64  # nesting of lists and mappings (deeper: Python's recursion limit)
MAX_CONFIG_FILES = 50  # files read for one config, its _BASE_ files included
# Unknown keys listed with their closest existing keys (~1 ms each); the rest are counted.
MAX_SUGGESTED_KEYS = 20


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


def is_int(value) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or a float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_arguments(owner: str, checks) -> None:
    """Check a component's constructor arguments (both config kinds pass there).

    ``checks``: ``(YAML key, argument, value, ok, rule)``; each failed one is a line of one
    :class:`ConfigError` naming both keys: "MODEL.POINT_HEAD.FC_DIM=0 must be an integer >= 1
    (MLPPointHead's fc_dim)".
    """
    raise_config_problems([f"{key}={value!r} must be {rule} ({owner}'s {argument})"
                           for key, argument, value, ok, rule in checks if not ok])


def add_pointrend_seg_config(cfg):
    """Add pointrend_seg's keys to a Detectron2 config (in place), on top of Detectron2's
    ``add_deeplab_config`` (one default changed: ``MODEL.SEM_SEG_HEAD.LOSS_TYPE``). Keys that
    Detectron2's PointRend project also defines keep its names and meaning."""
    add_deeplab_config(cfg)
    # ---- input ------------------------------------------------------------------------------
    # Photometric augmentation of the SSD paper (brightness, contrast, saturation, hue).
    cfg.INPUT.COLOR_AUG_SSD = False
    # Largest image (and label) file accepted, in pixels, checked from the file header before
    # decoding; 0: no limit. Memory grows with the pixels, not the bytes: docs/bad_inputs.md.
    cfg.INPUT.MAX_IMAGE_PIXELS = DEFAULT_MAX_IMAGE_PIXELS

    # ---- coarse head (DeepLabV3 / DeepLabV3+ / any Detectron2 head) --------------------------
    # "DeepLabV3" or "DeepLabV3Plus" (COARSE_HEAD_REGISTRY), or a head of Detectron2's
    # SEM_SEG_HEADS_REGISTRY with layers() and common_stride (e.g. "SemSegFPNHead"; Detectron2's
    # PointRend project's MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME is not a key here).
    cfg.MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME = "DeepLabV3"
    # "cross_entropy" or "hard_pixel_mining" (CE over the HARD_PIXEL_TOP_K fraction, in (0, 1],
    # of hardest pixels).
    cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = "cross_entropy"
    cfg.MODEL.SEM_SEG_HEAD.HARD_PIXEL_TOP_K = 0.2

    # ---- PointRend -------------------------------------------------------------------------
    cfg.MODEL.POINT_HEAD = CN()
    # "MLPPointHead" (paper) or "LinearPointHead"; classes: MODEL.SEM_SEG_HEAD.NUM_CLASSES.
    cfg.MODEL.POINT_HEAD.NAME = "MLPPointHead"
    # Fine-grained feature maps sampled at each point; empty: the backbone output of the smallest
    # stride (res2 of our ResNet, p2 of an FPN), the paper's choice.
    cfg.MODEL.POINT_HEAD.IN_FEATURES = []
    cfg.MODEL.POINT_HEAD.FC_DIM = 256
    cfg.MODEL.POINT_HEAD.NUM_FC = 3
    # Re-concatenate the coarse prediction before every MLP layer.
    cfg.MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER = True
    # Training: N points per image, k (over-generation) and beta (importance fraction).
    cfg.MODEL.POINT_HEAD.TRAIN_NUM_POINTS = 2048
    cfg.MODEL.POINT_HEAD.OVERSAMPLE_RATIO = 3
    cfg.MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO = 0.75
    cfg.MODEL.POINT_HEAD.LOSS_WEIGHT = 1.0
    # Inference: N points re-predicted per subdivision step.
    cfg.MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS = 8192
    # -1: as many 2x steps as it takes to go from the coarse stride to the input resolution.
    cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS = -1

    # ---- inference transforms (pointrend_seg.modeling.inference.prepare_for_inference) ------
    # Applied to a model in eval mode for the benchmark, evaluation and prediction only.
    cfg.MODEL.INFERENCE = CN()
    # Fold each batch norm into the convolution before it.
    cfg.MODEL.INFERENCE.FOLD_BN = True
    # channels_last memory format: "auto" (on for CUDA, off on CPU), "on" or "off".
    cfg.MODEL.INFERENCE.CHANNELS_LAST = "auto"
    # torch.compile the backbone and the semantic head: "" (off), "default", "reduce-overhead"
    # (CUDA graphs; input sizes must repeat), "max-autotune" or "max-autotune-no-cudagraphs".
    # What it pays: docs/benchmarks.md.
    cfg.MODEL.INFERENCE.COMPILE = ""

    # ---- evaluation ------------------------------------------------------------------------
    # Boundary F-score and Boundary IoU next to mIoU (pointrend_seg.evaluation.BoundaryEvaluator).
    cfg.TEST.BOUNDARY_EVAL = CN()
    cfg.TEST.BOUNDARY_EVAL.ENABLED = True
    # BF distance tolerance and Boundary-IoU band width, as fractions of the image diagonal.
    cfg.TEST.BOUNDARY_EVAL.BF_TOLERANCE = 0.0075
    cfg.TEST.BOUNDARY_EVAL.BIOU_DILATION = 0.02

    # Sliding-window inference: windows of SIZE (h, w) every STRIDE (h, w) pixels, overlaps
    # blended by "mean" or "hann".
    cfg.TEST.SLIDING_WINDOW = CN()
    cfg.TEST.SLIDING_WINDOW.ENABLED = False
    cfg.TEST.SLIDING_WINDOW.SIZE = (512, 1024)
    cfg.TEST.SLIDING_WINDOW.STRIDE = (341, 683)
    cfg.TEST.SLIDING_WINDOW.BLEND = "mean"
    # Multi-scale + flip test-time augmentation: Detectron2's TEST.AUG keys; class
    # probabilities are averaged.

    # ---- solver ----------------------------------------------------------------------------
    # WarmupPolyLR (SOLVER.POLY_LR_POWER / POLY_LR_CONSTANT_ENDING from add_deeplab_config).
    # "SGD" (Detectron2's, with SOLVER.MOMENTUM / NESTEROV) or "ADAMW"; fused on CUDA.
    cfg.SOLVER.OPTIMIZER = "SGD"
    # With SOLVER.AMP.ENABLED: "float16" (with loss scaling) or "bfloat16" (CPU, recent GPUs).
    cfg.SOLVER.AMP.PRECISION = "float16"
    # Train in channels_last memory format (faster convolutions on GPUs with bf16/fp16).
    cfg.SOLVER.CHANNELS_LAST = False
    # Training metrics are written every LOG_PERIOD iterations, as medians over them.
    cfg.SOLVER.LOG_PERIOD = 20

    # ---- dataset check (pointrend_seg.data.dataset_check) ------------------------------------
    # Before training (and --eval-only) every sample of DATASETS.TRAIN / TEST is read and
    # checked; problems stop the run, all listed. Cached: docs/dataset_check.md.
    cfg.DATASETS.CHECK = CN()
    cfg.DATASETS.CHECK.ENABLED = True
    # Leave out bad samples instead of stopping (OUTPUT_DIR/skipped_samples.json), and skip
    # samples that fail to load during training.
    cfg.DATASETS.CHECK.SKIP_BAD = False
    # "": ~/.cache/pointrend_seg/dataset_checks.
    cfg.DATASETS.CHECK.CACHE_DIR = ""
    # Reader processes; 0: one per CPU this process may use.
    cfg.DATASETS.CHECK.NUM_WORKERS = 0
    # Warn when a larger fraction of a dataset's label pixels is the ignore label.
    cfg.DATASETS.CHECK.MAX_IGNORED_FRACTION = 0.5


def build_config(config_file: str = "", opts=()):
    """Detectron2 defaults + :func:`add_pointrend_seg_config` + a YAML file + ``KEY VALUE``
    overrides (:func:`merge_config`); :func:`check_device` checked."""
    cfg = get_cfg()
    add_pointrend_seg_config(cfg)
    merge_config(cfg, config_file, opts)
    check_device(cfg.MODEL.DEVICE)
    return cfg


def check_device(device: str, key: str = "MODEL.DEVICE", cpu: str = "'MODEL.DEVICE cpu'"):
    """Raise :class:`ConfigError` naming ``key`` if ``device`` is CUDA on a machine without it;
    ``cpu``: the override that fixes it."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{key}={device!r} but no CUDA device is available; add {cpu} to the "
                          "command line")


def merge_config(cfg, config_file: str = "", opts=()):
    """Merge a YAML file (``_BASE_`` supported) and then ``KEY VALUE`` overrides into any
    Detectron2 config, as ``merge_from_file`` / ``merge_from_list`` do (after
    :func:`load_yaml_config` has checked the files), with helpful errors.

    Raises:
        FileNotFoundError: ``config_file`` does not exist.
        ConfigError: a file that :func:`load_yaml_config` refuses; unknown keys, each with the
            closest existing keys (or: pointrend_seg's keys are missing); a value of the wrong
            type.
    """
    if config_file and not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file not found: {config_file}")
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"the overrides are KEY VALUE pairs; {opts[-1]!r} has no value "
                          f"(got {opts})")
    steps = []
    if config_file:
        loaded = load_yaml_config(config_file)
        # Never yaml.unsafe_load (Detectron2's merge_from_file defaults to allowing it).
        steps.append((config_file, lambda: cfg.merge_from_file(config_file, allow_unsafe=False),
                      lambda: [k for k in _leaf_keys(loaded) if k != "VERSION"]))
    steps.append(("the command line", lambda: cfg.merge_from_list(opts),
                  lambda: [str(k) for k in opts[0::2]]))
    for source, merge, given_keys in steps:
        try:
            with _yaml_errors_named(config_file):  # the file's YAML errors (opts are no YAML)
                merge()
        except ValueError as e:  # yacs: a value of another type than the key's default
            match = re.search(r"Type mismatch \((.*?) vs\. (.*?)\) with values \((.*) vs\. "
                              r"(.*)\) for config key: (\S+)", str(e), re.DOTALL)
            if match is None:
                raise
            default_type, given_type, default, given, key = match.groups()
            raise ConfigError(
                f"{key}={shorten(given)} in {source}: the key holds {_type_name(default_type)} "
                f"values (default {shorten(default)}), not {_type_name(given_type)}"
            ) from None
        except (KeyError, AssertionError) as e:  # yacs: unknown key (KeyError from files)
            if "was renamed to" in str(e):  # yacs: a renamed key, with what to use instead
                raise ConfigError(f"{source}: {str(e).strip(chr(34))}") from None
            # The message itself (str() of a KeyError adds quotes): all after "key: " is the key.
            text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
            match = re.match(r"Non-existent (?:config )?key: (.*)", text, re.DOTALL)
            if match is None:
                raise
            unknown = list(dict.fromkeys(k for k in given_keys() if not _has_key(cfg, k)))
            if match.group(1) not in unknown:
                unknown.insert(0, match.group(1))
            raise ConfigError(_unknown_keys_message(cfg, unknown, source)) from None


def _type_name(type_repr: str) -> str:
    """"<class 'int'>" -> "int"."""
    found = re.search(r"'(\w+)'", type_repr)
    return found.group(1) if found else type_repr


def shorten(text: str, limit: int = 80) -> str:
    """``text``, cut to ``limit`` characters (a value quoted in an error message)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _has_key(cfg, key):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return cfg.key_is_deprecated(key) or cfg.key_is_renamed(key)
        node = node[part]
    return True


def leaf_items(node, prefix=""):
    """``(dotted key, value)`` of every leaf of nested dicts (a ``CfgNode`` included)."""
    for name, value in node.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            yield from leaf_items(value, key + ".")
        else:
            yield key, value


def _leaf_keys(node):
    return (key for key, _ in leaf_items(node))


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


def load_yaml_config(config_file: str) -> dict:
    """The dict of a YAML config file with its ``_BASE_`` files merged in (Detectron2's rule),
    read as data (``yaml.safe_load``) within the ``MAX_CONFIG_*`` bounds, checked before anything
    is expanded. A ``_BASE_`` must be a local YAML file, not one that names it back.

    Raises:
        ConfigError: naming the file (and the file naming a ``_BASE_``): a Python tag, invalid
            YAML, not a mapping of keys, a bound passed, or a bad ``_BASE_``.
    """
    config_file = os.fspath(config_file)
    if config_file.endswith(".py"):
        raise ConfigError(
            f"{config_file} is a Python (LazyConfig) config, not a YAML one: load it with "
            "pointrend_seg.config.load_any_config or detectron2.config.LazyConfig.load"
        )
    with _yaml_errors_named(config_file):
        return _load_with_bases(config_file, (), SimpleNamespace(nodes=MAX_CONFIG_NODES,
                                                                  files=MAX_CONFIG_FILES))


def _load_with_bases(path, chain, budget):
    """``path``'s dict with its ``_BASE_`` files merged under it; ``chain``: the files that led
    here (named in errors, cycles refused); ``budget``: the nodes and files still allowed."""
    budget.files -= 1
    if budget.files < 0:
        raise ConfigError(f"{chain[0]}: its {BASE_KEY} files name more than {MAX_CONFIG_FILES} "
                          f"files to read (at {path})")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}{_base_of(chain)}"
                          ) from None
    if len(raw) > MAX_CONFIG_FILE_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_FILE_BYTES >> 20} MiB: not a config "
                          f"(a dump of every key is under 10 KB){_base_of(chain)}")
    stream = io.BytesIO(raw)
    stream.name = path  # what YAML's error marks name
    budget.nodes -= _count_expanded_nodes(stream, chain, budget.nodes)
    stream.seek(0)
    data = yaml.load(stream, Loader=_ConfigLoader)  # yaml.safe_load, duplicate keys refused
    if not isinstance(data, dict):
        held = "nothing" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{path} is not a YAML config: it holds {held}, not a mapping of "
                          f"config keys{_base_of(chain)}")
    if BASE_KEY not in data:
        return data
    bases = data.pop(BASE_KEY)
    names = bases if isinstance(bases, list) else [bases]
    if not all(isinstance(name, str) and name for name in names):
        raise ConfigError(f"{path}: {BASE_KEY} must name a YAML config file or a list of them, "
                          f"not {shorten(repr(bases))}")
    merged = {}
    for name in names:
        base = _base_file(path, name, chain)
        _merge_into(merged, _load_with_bases(base, (*chain, path), budget), base)
    _merge_into(merged, data, path)
    return merged


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, except that a key twice in one mapping is a
    :class:`ConfigError` naming the file, line and key (YAML keeps the last silently). ``<<``
    merges keep YAML's rule."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or \
                        key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise ConfigError(
                        f"{key_node.start_mark.name}, line {line}: the key {key} is given a "
                        f"second time in the same mapping (first at line {seen[key]}); YAML "
                        "would keep only the last one and silently drop the other: merge them "
                        "into one")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _base_of(chain):
    return f" (a {BASE_KEY} of {chain[-1]})" if chain else ""


# "https://...", "s3://...": Detectron2 would download (or misread) what a URL names.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _base_file(parent, name, chain):
    """The path of ``parent``'s ``_BASE_`` ``name``, found as Detectron2 finds it; refused unless
    it is a local file outside ``parent`` and ``chain`` (endless bases)."""
    where = f"{parent}: {BASE_KEY} {name!r}"
    if _URL.match(name):
        raise ConfigError(f"{where} is a URL; a base must be a local file (nothing is "
                          "downloaded): download it and name the copy")
    if name.endswith(".py"):
        raise ConfigError(f"{where} is a Python (LazyConfig) config: a Python config cannot be a "
                          "base of a YAML config. Name a YAML config (or write this one in Python)")
    path = os.path.expanduser(name) if name.startswith("~") else name
    if not os.path.isabs(path):
        path = os.path.join(os.path.dirname(parent), path)
    if not os.path.isfile(path):
        raise ConfigError(f"{where} {'is not a file' if os.path.exists(path) else 'not found'}: "
                          f"{path}")
    files = [*chain, parent]
    real = [os.path.realpath(f) for f in files]
    if os.path.realpath(path) in real:
        cycle = files[real.index(os.path.realpath(path)):] + [path]
        what = "the file itself" if len(cycle) == 2 else "a file that has it as a base"
        raise ConfigError(f"{where} is {what}: the bases would never end "
                          f"({' -> '.join(cycle)})")
    return path


def _merge_into(target, source, path, prefix=""):
    """Merge the dict ``source`` (of ``path``) into ``target``: values replace values, mappings
    merge key by key (Detectron2's ``_BASE_`` rule)."""
    for name, value in source.items():
        if isinstance(value, dict) and name in target:
            if not isinstance(target[name], dict):
                raise ConfigError(f"{path}: {prefix}{name} is a mapping of keys but a value in "
                                  "its base config")
            _merge_into(target[name], value, path, f"{prefix}{name}.")
        else:
            target[name] = value


def _count_expanded_nodes(stream, chain, budget):
    """The YAML nodes of ``stream`` once its aliases are expanded, counted on its events (an
    alias adds its anchor's count) so that nothing is built. Refused above ``budget`` nodes or
    ``MAX_CONFIG_DEPTH`` levels, or for an alias inside its own anchor; parsed with the
    ``SafeLoader`` that builds it afterwards, so both see the same events."""
    counts = {}  # anchor -> expanded nodes of the node it names
    open_nodes = []  # (anchor, nodes before it) of the lists and mappings being read
    nodes = 0
    for event in yaml.parse(stream, Loader=yaml.SafeLoader):
        where = f"{stream.name}, line {event.start_mark.line + 1}"
        if isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in open_nodes):
                raise ConfigError(f"{where}: the alias *{event.anchor} is inside the node it "
                                  f"repeats (endless): not a config value{_base_of(chain)}")
            nodes += counts.get(event.anchor, 1)
        elif isinstance(event, yaml.ScalarEvent):
            nodes += 1
            if event.anchor is not None:
                counts[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            open_nodes.append((event.anchor, nodes))
            nodes += 1
            if len(open_nodes) > MAX_CONFIG_DEPTH:
                raise ConfigError(f"{where}: lists or mappings nested more than "
                                  f"{MAX_CONFIG_DEPTH} deep: not a config{_base_of(chain)}")
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, before = open_nodes.pop()
            if anchor is not None:
                counts[anchor] = nodes - before
        if nodes > budget:
            raise ConfigError(
                f"{where}: more than {MAX_CONFIG_NODES} YAML nodes (values, lists and mappings; an "
                "alias counts as all that it repeats)"
                + (" with the files read before it" if budget < MAX_CONFIG_NODES else "")
                + f": not a config (a dump of every key has under 1000); refused before building "
                f"it{_base_of(chain)}"
            )
    return nodes


@functools.lru_cache(maxsize=None)
def _pointrend_seg_keys():
    """The keys that :func:`add_pointrend_seg_config` adds to Detectron2's defaults."""
    ours = get_cfg()
    add_pointrend_seg_config(ours)
    return frozenset(_leaf_keys(ours)) - frozenset(_leaf_keys(get_cfg()))


def closest_keys(cfg, key: str, n: int = 3):
    """Up to ``n`` keys of ``cfg`` that ``key`` most likely meant: same last component first,
    then the most similar spellings."""
    keys = sorted(_leaf_keys(cfg))
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == leaf]
    similar = difflib.get_close_matches(key, keys, n=n, cutoff=0.75)
    return list(dict.fromkeys(same_leaf + similar))[:n]


_WITHOUT_OUR_KEYS = (
    "it was made without add_pointrend_seg_config. Build it with "
    "pointrend_seg.config.build_config(config_file, opts), or call "
    "pointrend_seg.add_pointrend_seg_config(cfg) right after get_cfg()")


def _unknown_keys_message(cfg, unknown, source):
    if any("POINT_HEAD.NUM_CLASSES" in k for k in unknown):
        return (
            "MODEL.POINT_HEAD.NUM_CLASSES is not a pointrend_seg key: the point head predicts "
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES classes. Remove MODEL.POINT_HEAD.NUM_CLASSES "
            f"(from {source}) and set MODEL.SEM_SEG_HEAD.NUM_CLASSES"
        )
    ours = [k for k in unknown if k in _pointrend_seg_keys()]
    if ours:
        return (f"{source} sets pointrend_seg config keys ({', '.join(ours[:5])}"
                f"{', ...' if len(ours) > 5 else ''}) but this config does not have them: "
                + _WITHOUT_OUR_KEYS)
    lines = []
    for key in unknown[:MAX_SUGGESTED_KEYS]:
        close = closest_keys(cfg, key)
        lines.append(f"{key}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
    if len(unknown) > MAX_SUGGESTED_KEYS:
        lines.append(f"and {len(unknown) - MAX_SUGGESTED_KEYS} more")
    return f"unknown config key(s) in {source}: " + "; ".join(lines)


def check_pointrend_seg_keys(cfg) -> None:
    """Raise :class:`ConfigError` if ``cfg`` lacks keys of :func:`add_pointrend_seg_config`."""
    missing = sorted(k for k in _pointrend_seg_keys() if not _has_key(cfg, k))
    if missing:
        raise ConfigError(f"the config lacks {len(missing)} pointrend_seg keys (e.g. "
                          f"{', '.join(missing[:3])}): " + _WITHOUT_OUR_KEYS)


# ---- Python (LazyConfig) configs ----------------------------------------------------------------
def device_override(python: bool, device=None) -> list:
    """The override list that runs a config's model on ``device`` (e.g. "cpu"; None: none), so
    that a config's CUDA device is not refused before it applies."""
    if not device:
        return []
    return [f"train.device={device}"] if python else ["MODEL.DEVICE", str(device)]


def load_any_config(path: str, opts=()):
    """The tools' config loader: a YAML file -> :func:`build_config` (overrides ``KEY VALUE``),
    a ``.py`` file -> :func:`load_python_config` (overrides ``key=value``)."""
    if not str(path).endswith(".py"):
        return build_config(path, opts)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    bad = [o for o in opts if "=" not in o]
    if bad:
        raise ConfigError(f"a Python config takes overrides as key=value (e.g. "
                          f"train.max_iter=2), got {bad}")
    return load_python_config(path, opts)


def load_python_config(path: str, opts: Sequence[str] = ()):
    """A Python (LazyConfig) config file (loading runs it), with ``key=value`` overrides checked
    by :func:`check_python_overrides` before they are applied."""
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(path)
    check_python_overrides(cfg, opts, path)
    return LazyConfig.apply_overrides(cfg, list(opts))


def _accepted_arguments(target) -> Optional[set]:
    """The keyword arguments a ``_target_`` accepts (a class: its ``__init__`` and, through
    ``**kwargs``, its bases'), or None when it takes any (``**kwargs`` to the end) or is unknown."""
    if isinstance(target, str):
        try:
            target = locate(target)
        except Exception:  # unknown: instantiate will say so
            return None
    chain = [c.__init__ for c in target.__mro__ if c is not object] if inspect.isclass(target) \
        else [target]
    names = set()
    for function in chain:
        try:
            params = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            return None
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names - {"self"}
    return None


def _kind(value):
    """A value's kind for the override check: bool, number, str, sequence, mapping or None."""
    if value is None or isinstance(value, bool):
        return type(value).__name__
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple, ListConfig)):
        return "sequence"
    return "mapping" if isinstance(value, (dict, DictConfig)) else None


def _key_paths(node, prefix="", depth=0):
    """The dotted paths of every key of a Python config (for did-you-mean)."""
    if isinstance(node, DictConfig) and depth < 12:
        for name in node.keys():
            path = f"{prefix}{name}"
            yield path
            yield from _key_paths(node._get_node(name), f"{path}.", depth + 1)


def check_python_overrides(cfg, opts: Sequence[str], source: str = "the command line") -> None:
    """Raise one :class:`ConfigError` for the ``key=value`` overrides of a Python config that
    name no key of ``cfg`` (omegaconf would add it silently), give a value of another kind than
    the key's, or delete one (``~key``). A key may also be an argument that its parent's
    ``_target_`` accepts (e.g. ``model.sem_seg_head.loss_weight=2``). An unknown key is named with
    up to 3 keys it may have meant."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(opts))
    except Exception as e:  # hydra's grammar errors: one line, not its traceback
        raise ConfigError(f"overrides {list(opts)} of {source}: {str(e).splitlines()[0]}") from None
    problems = []
    for override in parsed:
        key = override.key_or_group
        if override.is_delete():  # Detectron2's apply_overrides: NotImplementedError
            problems.append(f"~{key}: deleting a key is not supported (Detectron2's LazyConfig "
                            "overrides set values only); set it instead, e.g. to null")
            continue
        node, parts = cfg, key.split(".")
        for depth, part in enumerate(parts):
            where = ".".join(parts[:depth])
            if isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            if isinstance(node, DictConfig) and part in node:
                node = node[part]
                continue
            accepted = _accepted_arguments(node.get("_target_")) if isinstance(
                node, DictConfig) and "_target_" in node else set()
            if accepted is None or (depth == len(parts) - 1 and part in accepted):
                node = None  # a default argument of the target: any value its type allows
                break
            keys = list(node.keys()) if isinstance(node, DictConfig) else []
            keys += sorted((accepted or set()) - set(keys))
            prefix = f"{where}." if where else ""
            close = [prefix + c for c in difflib.get_close_matches(
                part, [str(k) for k in keys], n=3, cutoff=0.6)]
            close += [k for k in _key_paths(cfg) if k.rsplit(".", 1)[-1] == part][:3]
            hint = f" (did you mean {' or '.join(dict.fromkeys(close))}?)" if close else ""
            problems.append(f"unknown key {key}: {where or 'the config'} has no key "
                            f"{part!r}{hint}")
            node = None
            break
        else:
            old, new = _kind(node), _kind(override.value())
            if old not in (None, "NoneType") and new not in (None, "NoneType") and old != new:
                problems.append(f"{key}={override.value()!r}: the key holds a {old} value "
                                f"({node!r}), not a {new}")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
