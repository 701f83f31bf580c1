"""
LazyConfig support: the pieces our Python configs are made of (:func:`sem_seg_dataloader`,
:func:`poly_lr_multiplier`, :func:`train_settings`), and what our tools do with a Python config
(:func:`load_any_config`, :func:`lazy_model`, :func:`lazy_train`, :func:`lazy_test`).

A Python config is code: loading one runs it (Detectron2's ``LazyConfig.load``), as Detectron2's
LazyConfig documentation says; load only Python configs you trust. YAML configs stay data
(:func:`pointrend_seg.config.build_config`, ``yaml.safe_load``).
"""
import logging
import os
import weakref
from types import SimpleNamespace
from typing import Sequence

import torch
from omegaconf import OmegaConf

from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.data import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import TrainerBase, create_ddp_model, hooks
from detectron2.evaluation import DatasetEvaluator, inference_on_dataset, print_csv_format
from detectron2.solver import WarmupParamScheduler
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler

from ..config import ConfigError, build_config, load_python_config
from ..data import SemSegDatasetMapper, sem_seg_augmentations
from ..evaluation import BoundaryEvaluator, SegmentationEvaluator
from .checked_steps import CheckedSteps
from .checkpoint import SafeCheckpointer
from .data_checks import without_images
from .evaluation import report_results
from .run import RunPlan, prepare_run
from .train_step import LAZY_CONFIG_ADVICE, LossSpikeGuard, TrainStep

__all__ = ["LazyTrainer", "is_lazy_config", "lazy_model", "lazy_predictor", "lazy_test",
           "lazy_train", "load_any_config", "poly_lr_multiplier", "prepare_lazy_run",
           "require_detectron2_main", "sem_seg_dataloader", "train_settings", "yaml_view"]

logger = logging.getLogger(__name__)


def is_lazy_config(path: str) -> bool:
    """A Python (LazyConfig) file, by its extension."""
    return str(path).endswith(".py")


def load_any_config(path: str, opts=()):
    """
    The one config loader of the tools: a YAML file -> :func:`~pointrend_seg.config.build_config`
    (a ``CfgNode``; overrides ``KEY VALUE``), a ``.py`` file -> Detectron2's ``LazyConfig.load``
    (an omegaconf config; overrides ``key=value``, e.g. ``train.max_iter=2``).
    """
    if not is_lazy_config(path):
        return build_config(path, opts)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    bad = [o for o in opts if "=" not in o]
    if bad:
        raise ConfigError(f"a Python config takes overrides as key=value (e.g. "
                          f"train.max_iter=2), got {bad}")
    return load_python_config(path, opts)


# ---- pieces of our Python configs ----------------------------------------------------------
def require_detectron2_main(*names):
    """
    The classes ``names`` of ``detectron2.modeling`` that only Detectron2 ``main`` has (``ViT``,
    ``SimpleFeaturePyramid``, ``SwinTransformer``, ``MViT``), for a config that uses them; on
    Detectron2 v0.6 one ``ConfigError`` saying so.
    """
    import detectron2.modeling as modeling

    missing = [n for n in names if not hasattr(modeling, n)]
    if missing:
        import detectron2

        raise ConfigError(
            f"this config needs {', '.join(missing)} of Detectron2's main branch; the installed "
            f"Detectron2 {detectron2.__version__} has none (v0.6 predates them). Install "
            "Detectron2 from main (in a checkout: make setup-d2main, or DETECTRON2_SOURCE="
            "'git+https://github.com/facebookresearch/detectron2.git' make setup)"
        )
    found = tuple(getattr(modeling, n) for n in names)
    return found if len(found) > 1 else found[0]



def sem_seg_dataloader(
    train: Sequence[str], test: Sequence[str], *, num_classes: int, ignore_label: int = 255,
    min_size_train: Sequence[int], max_size_train: int, min_size_test: int, max_size_test: int,
    crop_type=None, crop_size=(512, 512), color_aug_ssd: bool = False, batch_size: int = 16,
    num_workers: int = 4, image_format: str = "RGB", boundary_eval: bool = True,
    output_dir: str = "${train.output_dir}",
):
    """
    ``dataloader`` of a semantic-segmentation LazyConfig (Detectron2's layout: ``train``,
    ``test``, ``evaluator``): Detectron2's loaders with our mapper and augmentations
    (:func:`~pointrend_seg.data.sem_seg_augmentations`, the same as the YAML configs'), and our
    evaluators on the first test set (results under ``output_dir/inference``). Every field is a
    LazyCall node a config can override (``dataloader.train.total_batch_size = 8``, ...).
    """
    def mapper(is_train):
        return L(SemSegDatasetMapper)(
            is_train=is_train,
            augmentations=L(sem_seg_augmentations)(
                is_train=is_train, min_size_train=list(min_size_train),
                max_size_train=max_size_train, min_size_test=min_size_test,
                max_size_test=max_size_test, crop_type=crop_type, crop_size=list(crop_size),
                ignore_label=ignore_label, color_aug_ssd=color_aug_ssd, image_format=image_format,
            ),
            image_format=image_format, num_classes=num_classes, ignore_label=ignore_label,
        )

    dataloader = OmegaConf.create()
    dataloader.train = L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names=list(train), filter_empty=False),
        mapper=mapper(True), total_batch_size=batch_size, num_workers=num_workers,
    )
    dataloader.test = L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names=list(test)[:1], filter_empty=False),
        mapper=mapper(False), num_workers=num_workers,
    )
    evaluator_dir = f"{output_dir}/inference/{list(test)[0]}"
    dataloader.evaluator = [L(SegmentationEvaluator)(dataset_name=list(test)[0],
                                                     output_dir=evaluator_dir)]
    if boundary_eval:
        dataloader.evaluator.append(L(BoundaryEvaluator)(
            dataset_name=list(test)[0], output_dir=evaluator_dir, bf_tolerance=0.0075,
            biou_dilation=0.02))
    return dataloader


def poly_lr_multiplier(max_iter: int, warmup_iters: int = 0, power: float = 0.9,
                       warmup_factor: float = 0.001):
    """
    DeepLab's poly schedule as the LazyConfig ``lr_multiplier`` (an fvcore parameter scheduler
    over the run, 0 to 1): ``(1 - t) ** power`` after a linear warmup of ``warmup_iters`` from
    ``warmup_factor`` (the YAML configs' ``WarmupPolyLR``).
    """
    return L(WarmupParamScheduler)(
        scheduler=L(PolynomialDecayParamScheduler)(base_value=1.0, power=power),
        warmup_length=warmup_iters / max_iter,
        warmup_factor=warmup_factor,
    )


def train_settings(**overrides):
    """The ``train`` settings Detectron2's ``tools/lazyconfig_train_net.py`` reads, with ours
    (output_dir, init_checkpoint, max_iter, amp, ddp, checkpointer, eval_period, log_period,
    device, seed: -1 = a random one, as Detectron2's ``default_setup`` does with it);
    ``overrides`` replace them."""
    train = dict(
        output_dir="./output", init_checkpoint="", max_iter=90000, seed=-1,
        amp=dict(enabled=False),
        ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
        checkpointer=dict(period=5000, max_to_keep=100), eval_period=5000, log_period=20,
        device="cuda",
    )
    train.update(overrides)
    return train


# ---- what our tools do with a Python config ------------------------------------------------
def lazy_model(cfg, *, weights=None, resume: bool = False, partial_weights: bool = False):
    """``cfg.model`` instantiated on ``cfg.train.device`` with ``weights`` (default
    ``cfg.train.init_checkpoint``; with ``resume`` the last checkpoint of
    ``cfg.train.output_dir``) loaded by :class:`SafeCheckpointer`, in eval mode. For inference:
    weights that leave model tensors uninitialised are refused unless ``partial_weights``
    (as :func:`~.predictor.load_inference_model`)."""
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    weights = cfg.train.init_checkpoint if weights is None else weights
    SafeCheckpointer(model, save_dir=cfg.train.output_dir,
                     require_all_weights=not partial_weights).resume_or_load(weights, resume=resume)
    return model.eval()


def lazy_test(cfg, model):
    """Evaluate ``model`` on ``cfg.dataloader.test`` with ``cfg.dataloader.evaluator``; our
    evaluators' results are reported per class, as for YAML configs."""
    if "evaluator" not in cfg.dataloader:
        return {}
    evaluators = instantiate(cfg.dataloader.evaluator)
    # one evaluator, or a list of them (instantiate gives an omegaconf ListConfig)
    evaluators = [evaluators] if isinstance(evaluators, DatasetEvaluator) else list(evaluators)
    was_training = model.training
    model.eval()
    try:
        results = inference_on_dataset(model, instantiate(cfg.dataloader.test), evaluators)
    finally:
        model.train(was_training)
    if comm.is_main_process() and results:
        print_csv_format(results)
        segmentation = next((e for e in evaluators if isinstance(e, SegmentationEvaluator)), None)
        report_results(segmentation.dataset_name if segmentation else "test", results,
                       SimpleNamespace(segmentation=segmentation, output_folder=getattr(
                           segmentation, "output_dir", None)))
    return results


class LazyTrainer(CheckedSteps, TrainerBase):
    """
    The trainer of :func:`lazy_train`: Detectron2's ``SimpleTrainer`` (``AMPTrainer`` with
    ``precision`` float16) made of our :class:`~.train_step.TrainStep` and
    :class:`~.checked_steps.CheckedSteps`, as the YAML configs' ``Trainer``: a non-finite loss
    stops every process and names the last good checkpoint, a checkpoint is kept only once the
    next loss is finite and no spike. Set ``checkpointer`` (a :class:`SafeCheckpointer` with
    ``trainer=`` this) before training. Its state is ``SimpleTrainer``'s (``optimizer``,
    ``grad_scaler``), so checkpoints stay interchangeable with Detectron2's trainers.

    Unlike Detectron2's trainers, a resumed run keeps the learning rates of its own config
    (``optimizer.lr`` and the per-group rules), not the checkpoint's: the advice after a
    divergence, ``--resume optimizer.lr=<lower>``, then does what it says.
    """

    def __init__(self, model, data_loader, optimizer, *, precision=None):
        super().__init__()
        model.train()
        self.train_step = TrainStep(model, data_loader, optimizer, precision=precision)
        self.train_step.advice = LAZY_CONFIG_ADVICE
        self.loss_guard = LossSpikeGuard()
        self._config_lrs = [group["lr"] for group in optimizer.param_groups]

    def state_dict(self):
        ret = super().state_dict()
        ret.update(self.train_step.state_dict())
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.train_step.load_state_dict(state_dict)
        groups = self.optimizer.param_groups
        loaded = [group.get("initial_lr", group["lr"]) for group in groups]
        if loaded != self._config_lrs:
            logger.info(f"Learning rates from this run's config (e.g. {self._config_lrs[0]:g}), "
                        f"not the checkpoint's (e.g. {loaded[0]:g})")
        for group, lr in zip(groups, self._config_lrs):
            # The LR multiplier (built when training starts) scales initial_lr.
            group["initial_lr"] = group["lr"] = lr


def prepare_lazy_run(cfg, *, skip_bad: bool = False) -> RunPlan:
    """
    A YAML run's start-of-run checks (:func:`~.run.prepare_run`, collective) for a Python
    config of ours, through :func:`yaml_view`: the datasets of ``dataloader.train`` and
    ``dataloader.test`` against the model (registered, classes, ignore label) and the dataset
    check (``DATASETS.CHECK`` defaults), which stops the run listing every problem - or, with
    ``skip_bad`` (``--skip-bad``), leaves those samples out of both loaders of ``cfg``.
    """
    view = yaml_view(cfg)
    view.DATASETS.CHECK.SKIP_BAD = bool(skip_bad)
    plan = prepare_run(view, train=True, check_solver=False)
    if plan.skipped:
        for split in ("train", "test"):
            if split in cfg.dataloader:
                cfg.dataloader[split].dataset = L(without_images)(
                    dicts=cfg.dataloader[split].dataset, images=sorted(plan.skipped))
    return plan


def lazy_train(cfg, *, resume: bool = False, skip_bad: bool = False):
    """
    Train ``cfg`` (a LazyConfig) as Detectron2's ``tools/lazyconfig_train_net.py`` does - its
    model, optimizer, ``dataloader.train``, ``lr_multiplier`` and ``train`` settings - after a
    YAML run's dataset checks (:func:`prepare_lazy_run`; ``skip_bad``: leave bad samples out),
    with pointrend_seg's checkpointer (atomic, ``weights_only``, no pickles from a run folder)
    and :class:`LazyTrainer` (checkpoints only of good states, a divergence that names one).
    """
    prepare_lazy_run(cfg, skip_bad=skip_bad)
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    loader = instantiate(cfg.dataloader.train)
    ddp = dict(cfg.train.ddp)
    if not next(model.parameters()).is_cuda:
        ddp["device_ids"] = None
    model = create_ddp_model(model, **ddp)
    trainer = LazyTrainer(model, loader, optimizer,
                          precision=torch.float16 if cfg.train.amp.enabled else None)
    checkpointer = SafeCheckpointer(model, cfg.train.output_dir, trainer=weakref.proxy(trainer))
    trainer.checkpointer = checkpointer
    os.makedirs(cfg.train.output_dir, exist_ok=True)
    writers = [CommonMetricPrinter(cfg.train.max_iter),
               JSONWriter(os.path.join(cfg.train.output_dir, "metrics.json"))]
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
        if comm.is_main_process() else None,
        hooks.EvalHook(cfg.train.eval_period, lambda: lazy_test(cfg, model)),
        hooks.PeriodicWriter(writers, period=cfg.train.log_period)
        if comm.is_main_process() else None,
    ])
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    start = trainer.iter + 1 if resume and checkpointer.has_checkpoint() else 0
    trainer.train(start, cfg.train.max_iter)
    return trainer


def yaml_view(cfg):
    """
    The few YAML keys our tools read, taken from a LazyConfig of ours (a ``CfgNode`` with
    ``OUTPUT_DIR`` = ``train.output_dir``, ``MODEL.WEIGHTS`` = ``train.init_checkpoint``,
    ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` of the coarse head, ``DATASETS.TRAIN`` / ``TEST``,
    ``INPUT.FORMAT``, ``INPUT.MAX_IMAGE_PIXELS`` and ``MODEL.SEM_SEG_HEAD.IGNORE_VALUE`` of the
    test mapper, ``MODEL.INFERENCE.*`` and ``DATASETS.CHECK.*`` defaults), so that class names,
    weights, limits and checks are found the same way for both kinds of config.
    """
    from ..config import DEFAULT_MAX_IMAGE_PIXELS, build_config

    view = build_config("", ["MODEL.DEVICE", str(cfg.train.device)])
    view.OUTPUT_DIR = str(cfg.train.output_dir)
    view.MODEL.WEIGHTS = str(cfg.train.init_checkpoint or "")
    try:
        view.MODEL.SEM_SEG_HEAD.NUM_CLASSES = int(cfg.model.sem_seg_head.coarse_head.num_classes)
    except Exception:
        raise ConfigError("cannot tell the number of classes of this LazyConfig: "
                          "model.sem_seg_head.coarse_head.num_classes is not set") from None
    loaders = cfg.get("dataloader", {})

    def names(split):
        if split not in loaders:
            return ()
        dataset = loaders[split].dataset
        if "names" not in dataset and "dicts" in dataset:  # samples left out (prepare_lazy_run)
            dataset = dataset.dicts
        return tuple(dataset.names)

    view.DATASETS.TRAIN, view.DATASETS.TEST = names("train"), names("test")
    mapper = loaders["test"].mapper if "test" in loaders else {}
    view.INPUT.FORMAT = str(mapper.get("image_format", "RGB"))
    view.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = int(mapper.get("ignore_label", 255))
    view.INPUT.MAX_IMAGE_PIXELS = int(mapper.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS))
    return view


class _NoResize:
    def get_transform(self, image):
        from detectron2.data.transforms import NoOpTransform

        return NoOpTransform()


def lazy_predictor(cfg, weights=None, *, partial_weights: bool = False):
    """A :class:`~.predictor.SemSegPredictor` of a LazyConfig: its model (:func:`lazy_model`,
    prepared for inference) seeing images resized as the test mapper resizes them."""
    from ..modeling import prepare_for_inference
    from .predictor import SemSegPredictor

    predictor = SemSegPredictor.__new__(SemSegPredictor)
    predictor.cfg = cfg
    predictor.model = lazy_model(cfg, weights=weights, partial_weights=partial_weights)
    test = cfg.dataloader.test.mapper
    augs = list(instantiate(test.augmentations)) if "augmentations" in test else []
    predictor.aug = augs[0] if augs else _NoResize()
    predictor.input_format = str(test.get("image_format", "RGB"))
    predictor.inference_handle = prepare_for_inference(predictor.model, yaml_view(cfg))
    return predictor
