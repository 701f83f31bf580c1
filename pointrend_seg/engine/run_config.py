"""
A config read once, whatever its kind (:func:`as_run_config`): the one place where a YAML config
(a ``CfgNode``) and a Python config (a LazyConfig) meet. Each kind gives ``settings``, a
``CfgNode`` in pointrend_seg's YAML schema holding what the run does (output folder, seed,
iterations, periods, precision, device, weights, datasets, batch, classes, ignore value, test
input, ``DATASETS.CHECK``, ``MODEL.INFERENCE``; a Python config's read once from its ``train`` and
``dataloader``), and the builders of the parts (model, optimizer, LR scheduler, mappers, the
DistributedDataParallel options, the advice after a divergence). Classes and an ignore value left
to the dataset come from its metadata: docs/lazyconfig.md.
"""
import copy
import difflib
import math

import torch
from omegaconf import DictConfig, OmegaConf

from detectron2.config import CfgNode, instantiate
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.projects.deeplab import build_lr_scheduler
from detectron2.solver import LRMultiplier

from ..config import ConfigError, build_config, check_device, is_number, leaf_items
from ..data import SemSegDatasetMapper
from ..data.dataset_check import mapper_resizes
from .config_checks import check_lr_schedule, check_solver_config
from .distributed import adapt_norm_to_world_size
from .optimizer import build_optimizer
from .train_step import LAZY_CONFIG_ADVICE, YAML_CONFIG_ADVICE, training_precision

__all__ = ["PythonRunConfig", "RunConfig", "as_run_config"]


class RunConfig:
    """A YAML config's run: ``settings`` is the config; Detectron2's builders and ours."""

    advice = YAML_CONFIG_ADVICE
    key_names = {}  # {settings key: the key the user writes}, for the messages
    optimizer_keys = "SOLVER.BASE_LR / MOMENTUM / WEIGHT_DECAY"
    schedule_keys = ("SOLVER.BASE_LR / LR_SCHEDULER_NAME / WARMUP_* / STEPS / GAMMA / "
                     "POLY_LR_POWER")

    def __init__(self, cfg: CfgNode):
        self.config = self.settings = _with_dataset_values(cfg)

    def check_training(self):
        """The checks of a training run that need only the settings (solver keys, precision),
        naming the user's keys; returns the autocast dtype (None: float32)."""
        check_solver_config(self.settings, self.key_names)
        return training_precision(self.settings, self.key_names)

    def build_model(self, device=None) -> torch.nn.Module:
        """Detectron2's ``build_model`` (on ``device``, default ``MODEL.DEVICE``), its norms adapted
        to the processes (:func:`.adapt_norm_to_world_size`), channels_last if asked."""
        cfg = self.settings
        if device is not None:
            cfg = cfg.clone()
            cfg.defrost()
            cfg.MODEL.DEVICE = device
        model = build_model(adapt_norm_to_world_size(cfg))
        if self.settings.SOLVER.CHANNELS_LAST:
            model = model.to(memory_format=torch.channels_last)
        return model

    def build_optimizer(self, model):
        """SGD / AdamW (:mod:`.optimizer`); a value torch refuses ("Invalid learning rate: -1") or
        a group setting that is not finite is a ConfigError naming ``optimizer_keys``."""
        try:
            optimizer = self._optimizer(model)
        except ValueError as e:
            if not str(e).startswith("Invalid "):
                raise
            raise ConfigError(f"the optimizer refuses {self.optimizer_keys}: {e}") from None
        bad = [f"{k}={v!r}" for group in optimizer.param_groups for k, v in group.items()
               if is_number(v) and not math.isfinite(v)]
        if bad:
            raise ConfigError(f"the optimizer refuses {self.optimizer_keys}: {bad[0]} is not a "
                              "finite number")
        return optimizer

    def _optimizer(self, model):
        return build_optimizer(self.settings, model)

    def build_lr_scheduler(self, optimizer):
        """The LR scheduler, its rates over the run checked finite and >= 0
        (:func:`.check_lr_schedule`, a ConfigError naming ``schedule_keys``)."""
        scheduler = self._lr_scheduler(optimizer)
        check_lr_schedule(scheduler, self.settings.SOLVER.MAX_ITER, self.schedule_keys)
        return scheduler

    def _lr_scheduler(self, optimizer):
        """DeepLab's "WarmupPolyLR" or Detectron2's schedules; another name is a ConfigError."""
        try:
            return build_lr_scheduler(self.settings, optimizer)
        except ValueError as e:
            if not str(e).startswith("Unknown LR scheduler"):
                raise
            name = self.settings.SOLVER.LR_SCHEDULER_NAME
            known = ["WarmupPolyLR", "WarmupMultiStepLR", "WarmupCosineLR"]
            raise ConfigError(
                f"SOLVER.LR_SCHEDULER_NAME={name!r} is not a schedule Detectron2 knows"
                + "".join(f" (did you mean {m!r}?)" for m in difflib.get_close_matches(
                    name, known, n=1)) + f"; e.g. {', '.join(known)}") from None

    def mapper(self, is_train: bool):
        return SemSegDatasetMapper(self.settings, is_train)

    def resizes(self):
        """The smallest resizes of both mappers (the dataset check's "degenerate image")."""
        return mapper_resizes(self.settings)

    def ddp_options(self) -> dict:
        return {"broadcast_buffers": False}


class PythonRunConfig(RunConfig):
    """A Python config's run: its ``model``, ``optimizer``, ``lr_multiplier`` and the mappers of
    ``dataloader.train`` / ``dataloader.test`` instantiated; the rest read into ``settings``."""

    advice = LAZY_CONFIG_ADVICE
    key_names = {"OUTPUT_DIR": "train.output_dir", "MODEL.WEIGHTS": "train.init_checkpoint",
                 "SEED": "train.seed", "DATASETS.TRAIN": "dataloader.train.dataset.names",
                 "SOLVER.MAX_ITER": "train.max_iter", "SOLVER.LOG_PERIOD": "train.log_period",
                 "SOLVER.CHECKPOINT_PERIOD": "train.checkpointer.period",
                 "TEST.EVAL_PERIOD": "train.eval_period",
                 "SOLVER.IMS_PER_BATCH": "dataloader.train.total_batch_size",
                 "SOLVER.AMP.PRECISION": "train.amp.precision",
                 "DATALOADER.NUM_WORKERS": "dataloader.train.num_workers",
                 "DATASETS.CHECK.NUM_WORKERS": "train.dataset_check.num_workers",
                 "DATASETS.CHECK.MAX_IGNORED_FRACTION": "train.dataset_check.max_ignored_fraction"}
    optimizer_keys = "optimizer.*"
    schedule_keys = "lr_multiplier (times optimizer.lr)"

    def __init__(self, cfg: DictConfig):
        self.config = cfg
        _fill_dataset_values(cfg)
        self.settings = self.read_settings(cfg)

    @staticmethod
    def read_settings(cfg) -> CfgNode:
        """Frozen ``settings`` read from ``train`` and ``dataloader`` (datasets, batch, workers,
        the test mapper's classes, ignore value, format and pixel limit, the boundary options); a
        ConfigError if the places of the classes or of the ignore value disagree or
        ``dataloader.evaluator`` names evaluators other than ours."""
        _check_agreement(cfg)
        t, loaders = cfg.train, cfg.get("dataloader", {})
        _check_train_keys(t)
        check_device(t.device, "train.device", "train.device=cpu")
        s = build_config("", ["MODEL.DEVICE", str(t.device)])
        s.OUTPUT_DIR, s.SEED = str(t.output_dir), int(t.seed)
        s.MODEL.WEIGHTS = str(t.init_checkpoint or "")
        s.SOLVER.MAX_ITER, s.SOLVER.LOG_PERIOD = t.max_iter, t.log_period
        s.SOLVER.CHECKPOINT_PERIOD, s.TEST.EVAL_PERIOD = t.checkpointer.period, t.eval_period
        s.SOLVER.AMP.ENABLED = bool(t.amp.enabled)
        s.SOLVER.AMP.PRECISION = str(t.amp.get("precision", "float16"))
        for name, node in (("dataset_check", s.DATASETS.CHECK), ("inference", s.MODEL.INFERENCE)):
            for key, value in t.get(name, {}).items():  # keys checked: _check_train_keys
                node[key.upper()] = value
        if "train" in loaders:
            train = loaders.train
            s.DATASETS.TRAIN = _dataset_names(train)
            s.SOLVER.IMS_PER_BATCH = train.total_batch_size
            s.DATALOADER.NUM_WORKERS = train.get("num_workers", 0)
        if "test" in loaders:
            mapper = loaders.test.mapper
            s.DATASETS.TEST = _dataset_names(loaders.test)
            s.MODEL.SEM_SEG_HEAD.NUM_CLASSES = int(mapper.num_classes)
            s.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = int(mapper.get("ignore_label", 255))
            s.INPUT.FORMAT = str(mapper.get("image_format", "RGB"))
            if "max_image_pixels" in mapper:
                s.INPUT.MAX_IMAGE_PIXELS = int(mapper.max_image_pixels)
        evaluators = loaders.get("evaluator", [])
        evaluators = [evaluators] if "_target_" in evaluators else evaluators
        kinds = [str(getattr(e.get("_target_"), "__name__", e.get("_target_"))).split(".")[-1]
                 for e in evaluators]
        others = [k for k in kinds if k not in ("SegmentationEvaluator", "BoundaryEvaluator")]
        if others:
            raise ConfigError(
                f"dataloader.evaluator names {', '.join(others)}: pointrend_seg's tools evaluate "
                "every test set with SegmentationEvaluator (+ BoundaryEvaluator, whose presence "
                "and tolerances dataloader.evaluator sets); evaluate others in your own script")
        boundary = [e for e, k in zip(evaluators, kinds) if k == "BoundaryEvaluator"]
        s.TEST.BOUNDARY_EVAL.ENABLED = bool(boundary)
        if boundary:
            s.TEST.BOUNDARY_EVAL.BF_TOLERANCE = float(boundary[0].bf_tolerance)
            s.TEST.BOUNDARY_EVAL.BIOU_DILATION = float(boundary[0].biou_dilation)
        s.freeze()
        return s

    def build_model(self, device=None):
        return instantiate(self.config.model).to(device or self.settings.MODEL.DEVICE)

    def _optimizer(self, model):
        cfg = copy.deepcopy(self.config)  # the config stays data (its copy gets the model)
        cfg.optimizer.params.model = model
        return instantiate(cfg.optimizer)

    def _lr_scheduler(self, optimizer):
        """``lr_multiplier`` as Detectron2's ``LRMultiplier`` over ``train.max_iter``."""
        return LRMultiplier(optimizer, instantiate(self.config.lr_multiplier),
                            self.settings.SOLVER.MAX_ITER)

    def mapper(self, is_train: bool):
        return instantiate(self.config.dataloader["train" if is_train else "test"].mapper)

    def resizes(self):
        return self.mapper(True).resizes + self.mapper(False).resizes

    def ddp_options(self) -> dict:
        return dict(self.config.train.ddp)


def as_run_config(cfg) -> RunConfig:
    """``cfg`` (a RunConfig, a CfgNode or a LazyConfig ``DictConfig``) as a :class:`RunConfig`."""
    if isinstance(cfg, RunConfig):
        return cfg
    if isinstance(cfg, CfgNode):
        return RunConfig(cfg)
    if isinstance(cfg, DictConfig):
        return PythonRunConfig(cfg)
    raise TypeError(f"not a config: {type(cfg).__name__}")


def _dataset_names(loader):
    dataset = loader.dataset
    return tuple(dataset.names) if "names" in dataset else ()


def _dataset_values(names, unset) -> dict:
    """``{"num_classes", "ignore_value"}`` of the first dataset of ``names`` from its metadata
    (None where missing); a key of ``unset`` (``{key: how the config states it}``, left to the
    dataset) that the metadata lacks is a ConfigError."""
    name = names[0] if names else None
    meta = MetadataCatalog.get(name) if name else {}
    classes = meta.get("stuff_classes")
    found = {"num_classes": len(classes) if classes else None,
             "ignore_value": meta.get("ignore_label")}
    for key, stated in unset.items():
        if found[key] is None:
            field = "stuff_classes" if key == "num_classes" else "ignore_label"
            raise ConfigError(
                f"{stated} takes the dataset's value, but dataset {name!r} has no {field} in "
                f"its metadata: register it (e.g. --register-folder) or set "
                f"{stated.split('=')[0]}")
    return found


def _with_dataset_values(cfg: CfgNode) -> CfgNode:
    """A frozen copy of a YAML config with ``NUM_CLASSES`` 0 / ``IGNORE_VALUE`` -1 ("the
    dataset's") given its first training (else test) dataset's values."""
    head = cfg.MODEL.SEM_SEG_HEAD
    unset = {key: f"MODEL.SEM_SEG_HEAD.{key.upper()}={value}"
             for key, value in (("num_classes", 0), ("ignore_value", -1))
             if head[key.upper()] == value}
    if not unset:
        return cfg
    found = _dataset_values(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST), unset)
    cfg = cfg.clone()
    cfg.defrost()
    for key in unset:
        cfg.MODEL.SEM_SEG_HEAD[key.upper()] = int(found[key])
    cfg.freeze()
    return cfg


def _fill_dataset_values(cfg) -> None:
    """``dataset.num_classes`` / ``dataset.ignore_value`` left ``None`` from the first training
    (else test) dataset's metadata; a set value that disagrees with it: one ConfigError."""
    if "dataset" not in cfg:
        return
    loaders = cfg.get("dataloader", {})
    names = [n for split in ("train", "test") if split in loaders
             for n in _dataset_names(loaders[split])]
    unset = {key: f"dataset.{key}=None" for key in ("num_classes", "ignore_value")
             if cfg.dataset.get(key, None) is None}
    found = _dataset_values(names, unset)
    for key, value in found.items():
        if key in unset:
            cfg.dataset[key] = value
        elif value is not None and cfg.dataset[key] != value:
            raise ConfigError(
                f"dataset.{key}={cfg.dataset[key]} but dataset {names[0]!r} has {value} "
                f"({'classes' if key == 'num_classes' else 'as its ignore label'}): leave "
                f"dataset.{key} out to take the dataset's")


def _check_train_keys(train) -> None:
    """One ConfigError (with did-you-mean) for the keys of a Python config's ``train`` the run
    would ignore: not in configs/common/train.py (``ddp.*`` goes to DDP as it is)."""
    from ..model_zoo.configs.common.train import train as schema

    known = [key for key, _ in leaf_items(schema)]
    unknown = [key for key, _ in leaf_items(OmegaConf.to_container(train))
               if key not in known and not key.startswith("ddp.")]
    if unknown:
        raise ConfigError("; ".join(
            f"train.{key}: not a setting of pointrend_seg's runs (it would be ignored)"
            + "".join(f" (did you mean train.{m}?)" for m in difflib.get_close_matches(
                key, known, n=1)) for key in unknown))


def _check_agreement(cfg) -> None:
    """One ConfigError if the places of a Python config holding the number of classes, or the
    ignore value (head, mappers, augmentations), disagree."""
    places = {"num_classes": ["model.sem_seg_head.coarse_head.num_classes",
                              "model.sem_seg_head.num_classes"],
              "ignore value": ["model.sem_seg_head.ignore_value"]}
    for split in ("train", "test"):
        places["num_classes"].append(f"dataloader.{split}.mapper.num_classes")
        places["ignore value"] += [f"dataloader.{split}.mapper.ignore_label",
                                   f"dataloader.{split}.mapper.augmentations.ignore_label"]
    problems = []
    for what, keys in places.items():
        found = {key: value for key in keys
                 if (value := OmegaConf.select(cfg, key, default=None)) is not None}
        if len(set(found.values())) > 1:
            problems.append(f"the {what} differs: "
                            + ", ".join(f"{k}={v}" for k, v in found.items()))
    if problems:
        raise ConfigError("; ".join(problems) + " (set dataset.num_classes / "
                          "dataset.ignore_value where the config has them, or each key)")
