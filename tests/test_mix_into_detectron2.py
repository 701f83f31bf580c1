"""
Our PointRend head inside a stock Detectron2 model: Detectron2's Semantic FPN (``SemanticSegmentor``,
``build_resnet_fpn_backbone``, ``SemSegFPNHead``) with three changed lines, trained by Detectron2's
``SimpleTrainer`` and evaluated by ``SemSegEvaluator``; its predictions equal those of Detectron2's
own PointRend-on-FPN (``PointRendSemSegHead``) with the same weights.
"""
import math

import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import HookBase, SimpleTrainer
from detectron2.evaluation import SemSegEvaluator, inference_on_dataset
from detectron2.modeling import build_model
from detectron2.projects.point_rend import add_pointrend_config
from detectron2.solver import build_optimizer
from detectron2.utils.env import seed_all_rng

import pointrend_seg  # noqa: F401  (registers PointRendSegHead and the adapter)
from pointrend_seg import add_pointrend_seg_config
from pointrend_seg.config import ConfigError

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

TRAIN, VAL = "synthetic_shapes_sem_seg_train", "synthetic_shapes_sem_seg_val"


def stock_semantic_fpn_config():
    """
    Detectron2's Semantic FPN as its model zoo defines it (``Base-RCNN-FPN.yaml`` +
    ``Misc/semantic_R_50_FPN_1x.yaml``; the YAML files are not in the installed package), at toy
    widths and image sizes for a CPU test, on the synthetic dataset.
    """
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    # (SEM_SEG_HEAD defaults: SemSegFPNHead on p2..p5, COMMON_STRIDE 4, IGNORE_VALUE 255)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    # toy sizes; from scratch, so BN that learns and inputs of unit scale
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 16
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 8
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 32
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.PIXEL_STD = [57.375, 57.12, 58.395]
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 5
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (TRAIN,), (VAL,)
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (64,), 64
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 64
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SEED = 0
    return cfg


def _with_pointrend(cfg):
    # the three lines of the README
    add_pointrend_seg_config(cfg)
    cfg.MODEL.SEM_SEG_HEAD.NAME = "PointRendSegHead"
    cfg.MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME = "SemSegFPNHead"
    return cfg


def _oracle(cfg, state_dict):
    """Detectron2's PointRend on Semantic FPN, with our trained weights."""
    ref_cfg = stock_semantic_fpn_config()
    add_pointrend_config(ref_cfg)
    ref_cfg.MODEL.SEM_SEG_HEAD.NAME = "PointRendSemSegHead"
    p, ours = ref_cfg.MODEL.POINT_HEAD, cfg.MODEL.POINT_HEAD
    p.NUM_CLASSES = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    p.IN_FEATURES = ["p2"]
    p.FC_DIM, p.NUM_FC = ours.FC_DIM, ours.NUM_FC
    p.COARSE_PRED_EACH_LAYER = ours.COARSE_PRED_EACH_LAYER
    p.SUBDIVISION_STEPS = 2  # ours: -1 = log2(stride 4)
    p.SUBDIVISION_NUM_POINTS = ours.SUBDIVISION_NUM_POINTS
    model = build_model(ref_cfg).eval()
    renamed = {k.replace("sem_seg_head.coarse_head.head.", "sem_seg_head.coarse_sem_seg_head."): v
               for k, v in state_dict.items()}
    result = model.load_state_dict(renamed, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return model


def test_pointrend_head_in_stock_semantic_fpn_trains_evaluates_and_matches_detectron2():
    cfg = _with_pointrend(stock_semantic_fpn_config())
    seed_all_rng(0)  # the weights, and the data order of Detectron2's TrainingSampler
    model = build_model(cfg)
    head = model.sem_seg_head
    assert type(head).__name__ == "PointRendSegHead" and head.in_features == ["p2"]
    assert type(head.coarse_head.head).__name__ == "SemSegFPNHead"
    assert head.output_stride == 4 and head.num_subdivision_steps() == 2

    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = SimpleTrainer(model, build_detection_train_loader(cfg), build_optimizer(cfg, model))
    recorder = _RecordLosses()
    trainer.register_hooks([recorder])
    trainer.train(0, 30)
    assert len(recorder.history) == 30
    assert set(recorder.history[0]) == {"loss_sem_seg", "loss_sem_seg_point"}
    assert all(math.isfinite(v) for x in recorder.history for v in x.values())
    after = model.state_dict()
    # the wrapped FPN head, its predictor and the point head all learn
    for key in ("sem_seg_head.coarse_head.head.p2.0.weight",
                "sem_seg_head.coarse_head.head.predictor.weight",
                "sem_seg_head.point_head.predictor.weight"):
        assert not torch.equal(before[key], after[key]), key

    model.eval()
    results = inference_on_dataset(
        model, build_detection_test_loader(cfg, VAL), SemSegEvaluator(VAL, distributed=False)
    )["sem_seg"]
    assert 0.0 <= results["mIoU"] <= 100.0 and len([k for k in results if k.startswith("IoU-")]) == 5

    # the same predictions as Detectron2's PointRend on FPN with these weights
    oracle = _oracle(cfg, model.state_dict())
    inputs = next(iter(build_detection_test_loader(cfg, VAL)))
    inputs += [next(iter(build_detection_test_loader(cfg, TRAIN)))[0]]
    with torch.no_grad():
        ours = torch.stack([o["sem_seg"] for o in model(inputs)])
        ref = torch.stack([o["sem_seg"] for o in oracle(inputs)])
    assert ours.shape == ref.shape == (2, 5, 128, 128)
    # Every cell is re-predicted at both steps (32x32 and 64x64 <= SUBDIVISION_NUM_POINTS), so
    # the two can differ only by the ulp of the cell-centre formula (test_semantic_heads.py);
    # measured: identical (4 seeds, 1 and 2 threads; logits up to 137).
    assert cfg.MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS >= 64 * 64
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-5)


class _RecordLosses(HookBase):
    def __init__(self):
        self.history = []

    def after_step(self):
        latest = self.trainer.storage.latest()
        self.history.append({k: v for k, (v, _) in latest.items() if k.startswith("loss_")})


def test_adapter_config_errors():
    cfg = _with_pointrend(stock_semantic_fpn_config())
    cfg.MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME = "PointRendSegHead"
    with pytest.raises(ConfigError, match="is one of pointrend_seg's heads"):
        build_model(cfg)
    cfg.MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME = "NoSuchHead"
    with pytest.raises(ConfigError, match="COARSE_HEAD_NAME='NoSuchHead' names no coarse head"):
        build_model(cfg)
    cfg.MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME = "SemSegHeadAdapter"  # the former way
    with pytest.raises(ConfigError, match="name the Detectron2 head itself, e.g. 'SemSegFPNHead'"):
        build_model(cfg)
    # Detectron2's DeepLabV3Head has no layers() (its forward does everything)
    import detectron2.projects.deeplab  # noqa: F401  (registers it)

    cfg.MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME = "DeepLabV3Head"
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["p5"]
    cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 32
    with pytest.raises(ConfigError, match="needs a layers"):
        build_model(cfg)


def test_checkpoint_round_trip_through_detectron2_checkpointer(tmp_path):
    cfg = _with_pointrend(stock_semantic_fpn_config())
    torch.manual_seed(0)
    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("m")
    torch.manual_seed(1)
    other = build_model(cfg)
    DetectionCheckpointer(other).load(str(tmp_path / "m.pth"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k
