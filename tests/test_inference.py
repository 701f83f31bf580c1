"""
Inference transforms (pointrend_seg/modeling/inference.py): the fast subdivision
(pointrend_seg/modeling/fast_subdivision.py, against the plain head on the same weights), batch
norm folding, channels_last and compilation change the outputs only by float rounding, refuse
training, and undo() restores the model exactly (state dict bit for bit, the same parameter
objects, the same training step).
"""
import copy

import numpy as np
import pytest
import torch
from PIL import Image
from detectron2.layers import Conv2d
from detectron2.evaluation import DatasetEvaluator
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from torch import nn

from conftest import demo_config, randomize_norm_stats
from pointrend_seg.config import ConfigError
from pointrend_seg.data.datasets import register_folder_dataset
from pointrend_seg.engine import Trainer
from pointrend_seg.modeling.inference import (
    InferenceOptions,
    fold_batch_norms,
    prepare_for_inference,
)

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

BILINEAR = ["MODEL.SEM_SEG_HEAD.NAME", "BilinearSegHead"]
DEEPLABV3_PLUS = ["MODEL.SEM_SEG_HEAD.COARSE_HEAD_NAME", "DeepLabV3Plus",
                  "MODEL.SEM_SEG_HEAD.PROJECT_FEATURES", "['res2']",
                  "MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS", "[16]"]


def _model(*opts, seed=0):
    cfg = demo_config(*opts)
    torch.manual_seed(seed)
    model = build_model(cfg)
    randomize_norm_stats(model, torch.Generator().manual_seed(seed + 1))
    return cfg, model.eval()


def _inputs(seed=0, sizes=((96, 128), (64, 64))):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(3, h, w, generator=g) * 255} for h, w in sizes]


def _logits(model, inputs):
    with torch.no_grad():
        return [o["sem_seg"] for o in model(inputs)]


def _coarse_logits(model, inputs):
    """The coarse head's output (before any subdivision) for the first image."""
    image = model.normalize(inputs[0]["image"])[None]
    with torch.no_grad():
        return model.sem_seg_head.coarse_head(model.backbone(image))


def _norm_counts(model):
    convs = [m for m in model.modules() if isinstance(m, Conv2d)]
    return sum(c.norm is not None for c in convs), len(convs)


def _snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {n: p for n, p in model.named_parameters()},
            {n: m for n, m in model.named_modules()})


def _assert_restored(model, snapshot):
    state, params, modules = snapshot
    now = model.state_dict()
    assert list(now) == list(state)
    for k, v in state.items():
        assert now[k].dtype == v.dtype and now[k].stride() == v.stride(), k
        assert torch.equal(now[k], v), k
    # the very same objects (an optimizer holding the parameters keeps working)
    assert {n: id(p) for n, p in model.named_parameters()} == {n: id(p) for n, p in params.items()}
    assert {n: id(m) for n, m in model.named_modules()} == {n: id(m) for n, m in modules.items()}


# The folded convolution computes the same affine map with rounded weights (and channels_last
# convolutions sum in another order). Measured on these random models with BN / SyncBN /
# FrozenBN, DeepLabV3 and V3+, seeds 0-2, OMP_NUM_THREADS 1 and 2: the largest difference of the
# logits is 1.05e-5 (fold + channels_last), of PointRend's coarse logits 1.0e-5; bound ~10x that.
FOLD_ATOL = 1e-4


@pytest.mark.parametrize("norm", ["BN", "SyncBN", "FrozenBN"])
@pytest.mark.parametrize("head_opts", [BILINEAR, BILINEAR + DEEPLABV3_PLUS], ids=["v3", "v3plus"])
def test_folding_equals_unfolded_model_and_undo_is_exact(norm, head_opts):
    cfg, model = _model(*head_opts, "MODEL.RESNETS.NORM", norm, "MODEL.SEM_SEG_HEAD.NORM", norm)
    inputs = _inputs()
    before = _logits(model, inputs)
    snapshot = _snapshot(model)
    normed, convs = _norm_counts(model)
    assert normed > 20  # stem, blocks, ASPP (and the DeepLabV3+ decoder)

    handle = prepare_for_inference(model, cfg)
    assert handle.num_folded == normed and _norm_counts(model) == (0, convs)
    assert handle.num_channels_last == 0 and handle.compiled == []  # "auto" on CPU: off
    after = _logits(model, inputs)
    for a, b in zip(after, before):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=FOLD_ATOL, rtol=0)
    assert any(not torch.equal(a, b) for a, b in zip(after, before))  # it did change the model

    handle.undo()
    _assert_restored(model, snapshot)
    for a, b in zip(_logits(model, inputs), before):
        assert torch.equal(a, b)
    handle.undo()  # a second undo does nothing
    _assert_restored(model, snapshot)


def test_folding_pointrend_coarse_logits_and_final_logits():
    """
    With PointRend the subdivision picks points by near-ties of the coarse logits, so a rounding
    difference can move a point: the coarse logits are compared tightly, the final ones by
    argmax agreement.
    """
    cfg, model = _model()
    inputs = _inputs()
    coarse, before = _coarse_logits(model, inputs), _logits(model, inputs)
    with prepare_for_inference(model, cfg) as handle:
        assert handle.num_folded > 20
        torch.testing.assert_close(_coarse_logits(model, inputs), coarse, atol=FOLD_ATOL, rtol=0)
        after = _logits(model, inputs)
    for a, b in zip(after, before):
        assert (a.argmax(0) == b.argmax(0)).float().mean() > 0.99
    for a, b in zip(_logits(model, inputs), before):  # undone on exit
        assert torch.equal(a, b)


def test_group_norm_is_left_alone():
    cfg, model = _model(*BILINEAR, "MODEL.RESNETS.NORM", "GN", "MODEL.SEM_SEG_HEAD.NORM", "GN",
                        "MODEL.RESNETS.STEM_OUT_CHANNELS", "64", "MODEL.RESNETS.WIDTH_PER_GROUP", "32")
    inputs = _inputs(sizes=((64, 64),))
    before = _logits(model, inputs)
    normed, _ = _norm_counts(model)
    with prepare_for_inference(model, cfg) as handle:
        assert handle.num_folded == 0 and _norm_counts(model)[0] == normed
        assert torch.equal(_logits(model, inputs)[0], before[0])


def test_batch_norm_without_running_stats_is_not_folded():
    conv = Conv2d(3, 4, 3, bias=False, norm=nn.BatchNorm2d(4, track_running_stats=False))
    model = nn.Sequential(conv).eval()
    assert fold_batch_norms(model) == [] and conv.norm is not None


def test_fold_by_hand():
    """One convolution with a bias and an affine-free batch norm, against the formula."""
    g = torch.Generator().manual_seed(0)
    norm = nn.BatchNorm2d(2, affine=False, eps=1e-3)
    norm.running_mean.copy_(torch.tensor([0.5, -1.0]))
    norm.running_var.copy_(torch.tensor([4.0, 0.25]))
    conv = Conv2d(1, 2, 1, bias=True, norm=norm).eval()
    conv.weight.data.copy_(torch.tensor([2.0, 3.0]).view(2, 1, 1, 1))
    conv.bias.data.copy_(torch.tensor([1.0, 0.0]))
    undo = fold_batch_norms(nn.Sequential(conv))
    assert len(undo) == 1 and conv.norm is None
    scale = 1 / torch.sqrt(torch.tensor([4.0, 0.25]) + 1e-3)
    torch.testing.assert_close(conv.weight.view(2), torch.tensor([2.0, 3.0]) * scale)
    torch.testing.assert_close(conv.bias, (torch.tensor([1.0, 0.0]) - torch.tensor([0.5, -1.0]))
                               * scale)
    x = torch.randn(1, 1, 3, 3, generator=g)
    folded = conv(x)
    undo[0]()
    torch.testing.assert_close(folded, conv(x), atol=1e-6, rtol=1e-6)
    assert conv.norm is norm


def test_training_after_undo_is_exactly_training_before():
    """A training step (losses, gradients) after prepare + inference + undo equals one on an
    untouched copy of the model, bit for bit."""
    cfg, model = _model()
    twin = copy.deepcopy(model)
    with prepare_for_inference(model, cfg):
        _logits(model, _inputs())
    g = torch.Generator().manual_seed(5)
    batch = [{"image": torch.rand(3, 64, 64, generator=g) * 255,
              "sem_seg": torch.randint(0, 5, (64, 64), generator=g)} for _ in range(2)]
    results = []
    for m in (model, twin):
        m.train()
        torch.manual_seed(3)  # same training points
        with EventStorage(0):
            losses = m(batch)
        sum(losses.values()).backward()
        results.append((losses, {n: p.grad for n, p in m.named_parameters()}))
    (losses_a, grads_a), (losses_b, grads_b) = results
    assert set(losses_a) == {"loss_sem_seg", "loss_sem_seg_point"}
    for k in losses_a:
        assert torch.equal(losses_a[k], losses_b[k]), k
    for n in grads_b:
        assert torch.equal(grads_a[n], grads_b[n]), n
    for m in (model, twin):  # the batch norms updated their running statistics alike
        m.eval()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 twin.state_dict().values()))


def test_prepared_model_refuses_training_and_needs_eval_mode():
    cfg, model = _model()
    model.train()
    with pytest.raises(RuntimeError, match="eval mode"):
        prepare_for_inference(model, cfg)
    model.eval()
    handle = prepare_for_inference(model, cfg)
    model.train()
    with pytest.raises(RuntimeError, match="undo"):
        model(_inputs())
    handle.undo()
    with EventStorage(0):
        batch = [{"image": torch.rand(3, 64, 64) * 255,
                  "sem_seg": torch.randint(0, 5, (64, 64))}]
        assert set(model(batch)) == {"loss_sem_seg", "loss_sem_seg_point"}


def test_channels_last_and_undo():
    cfg, model = _model(*BILINEAR)
    inputs = _inputs()
    before = _logits(model, inputs)
    snapshot = _snapshot(model)
    opts = InferenceOptions(fold_bn=False, channels_last=True)
    with prepare_for_inference(model, opts) as handle:
        assert handle.num_folded == 0 and handle.num_channels_last > 20
        weights = [m.weight for m in model.modules() if isinstance(m, Conv2d)]
        assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
        for a, b in zip(_logits(model, inputs), before):
            torch.testing.assert_close(a, b, atol=FOLD_ATOL, rtol=0)
    _assert_restored(model, snapshot)


def test_compile_swaps_submodules_and_undo_restores_them():
    """The "eager" backend runs dynamo's capture without code generation: the same values."""
    cfg, model = _model(*BILINEAR)
    inputs = _inputs(sizes=((64, 64),))
    before = _logits(model, inputs)
    backbone, head = model.backbone, model.sem_seg_head
    opts = InferenceOptions(fold_bn=False, compile="default", compile_backend="eager")
    with prepare_for_inference(model, opts) as handle:
        assert handle.compiled == ["backbone", "sem_seg_head"]
        assert model.backbone is not backbone and model.sem_seg_head is not head
        torch.testing.assert_close(_logits(model, inputs)[0], before[0], atol=1e-5, rtol=0)
    assert model.backbone is backbone and model.sem_seg_head is head
    assert torch.equal(_logits(model, inputs)[0], before[0])


def test_options_from_config():
    cfg = demo_config()
    opts = InferenceOptions.from_config(cfg, "cpu")
    assert opts == InferenceOptions(fold_bn=True, channels_last=False, compile="")
    assert InferenceOptions.from_config(cfg, "cuda").channels_last
    cfg.MODEL.INFERENCE.CHANNELS_LAST = "on"
    cfg.MODEL.INFERENCE.FOLD_BN = False
    assert InferenceOptions.from_config(cfg, "cpu") == InferenceOptions(False, True, "")
    cfg.MODEL.INFERENCE.CHANNELS_LAST = "yes"
    with pytest.raises(ConfigError, match="MODEL.INFERENCE.CHANNELS_LAST"):
        InferenceOptions.from_config(cfg, "cpu")
    cfg.MODEL.INFERENCE.CHANNELS_LAST = "off"
    cfg.MODEL.INFERENCE.COMPILE = "fast"
    with pytest.raises(ConfigError, match="MODEL.INFERENCE.COMPILE"):
        InferenceOptions.from_config(cfg, "cpu")


def test_compile_needs_known_submodules():
    model = nn.Sequential(nn.Conv2d(3, 3, 1)).eval()
    with pytest.raises(ValueError, match="MODEL.INFERENCE.COMPILE"):
        prepare_for_inference(model, InferenceOptions(compile="default"))
    assert model[0].weight.is_contiguous()  # nothing left applied


@pytest.mark.slow
def test_trained_model_argmax_agrees_after_transforms(trained_demo_model):
    """
    The trained demo model (PointRend, batch norm everywhere) on its validation images: argmax
    after folding (+ channels_last) agrees with the untransformed float32 model on >= 99.9% of the
    pixels. Measured: 100.00% of 524288 pixels (200-iteration fixture, 4 models, 1 and 2
    threads); the residual risk is
    a subdivision point moving at an exact near-tie.
    """
    from test_semantic_heads import _val_images

    cfg, model = trained_demo_model
    inputs = [{"image": x} for x in _val_images(32)]
    before = _logits(model, inputs)
    for opts in (InferenceOptions(), InferenceOptions(channels_last=True)):
        with prepare_for_inference(model, opts):
            after = _logits(model, inputs)
        agree = sum((a.argmax(0) == b.argmax(0)).sum().item() for a, b in zip(after, before))
        total = sum(b[0].numel() for b in before)
        assert agree / total >= 0.999, (opts, agree / total)
    for a, b in zip(_logits(model, inputs), before):
        assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prepare_on_cuda_defaults_to_channels_last():
    cfg, model = _model(*BILINEAR)
    model = model.cuda()
    inputs = [{"image": x["image"].cuda()} for x in _inputs()]
    before = _logits(model, inputs)
    snapshot = _snapshot(model)
    with prepare_for_inference(model, cfg) as handle:
        assert handle.num_folded > 20 and handle.num_channels_last > 20
        for a, b in zip(_logits(model, inputs), before):
            # cuDNN's float32 convolutions use TF32 by default (10-bit mantissa products) and
            # other algorithms for channels_last: a looser bound than on CPU.
            torch.testing.assert_close(a, b, atol=5e-2, rtol=0)
            assert (a.argmax(0) == b.argmax(0)).float().mean() > 0.99
    _assert_restored(model, snapshot)


class _RecordModelState(DatasetEvaluator):
    """Records, per evaluated batch, how many batch norms the model still has and its mode."""

    def __init__(self, model):
        self.model, self.seen = model, []

    def reset(self):
        pass

    def process(self, inputs, outputs):
        self.seen.append((_norm_counts(self.model)[0], self.model.training))

    def evaluate(self):
        return {}


def test_evaluation_runs_the_prepared_model_and_training_resumes_on_the_original(tmp_path,
                                                                                  prefix):
    """Trainer.test folds batch norm for the evaluation only: the state dict and the training
    mode afterwards are exactly those before, also when the evaluation fails."""
    images, masks = tmp_path / "img", tmp_path / "mask"
    images.mkdir()
    masks.mkdir()
    for i in range(2):
        Image.fromarray(np.full((48, 64, 3), 40 * i, np.uint8)).save(images / f"{i}.png")
        Image.fromarray(np.zeros((48, 64), np.uint8)).save(masks / f"{i}.png")
    name = f"{prefix}_prepared_eval"
    register_folder_dataset(name, str(images), str(masks), ["a", "b", "c", "d", "e"])
    cfg, model = _model("DATASETS.TEST", f"('{name}',)", "OUTPUT_DIR", str(tmp_path / "out"))
    model.train()
    snapshot = _snapshot(model)
    normed = _norm_counts(model)[0]
    recorder = _RecordModelState(model)
    Trainer.test(cfg, model, [recorder])
    assert recorder.seen == [(0, False), (0, False)]  # folded, in eval mode, for every batch
    assert model.training and _norm_counts(model)[0] == normed
    _assert_restored(model, snapshot)

    class Fails(_RecordModelState):
        def process(self, inputs, outputs):
            raise RuntimeError("evaluator failed")

    with pytest.raises(RuntimeError, match="evaluator failed"):
        Trainer.test(cfg, model, [Fails(model)])
    assert model.training and _norm_counts(model)[0] == normed
    _assert_restored(model, snapshot)


# ------------------------------------------------------------------------------------------------
# the fast subdivision (pointrend_seg/modeling/fast_subdivision.py)
# ------------------------------------------------------------------------------------------------
FAST_ONLY = InferenceOptions(fold_bn=False, fast_subdivision=True)


def _point_head_that_matters(model, seed=7):
    """Point-head weights of a trained-like scale (the predictor's init, std 0.001, would make
    the point logits near-uniform and hide differences)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.sem_seg_head.point_head.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if "predictor" in name else 0.2))


def test_prepare_swaps_in_the_fast_head_and_undo_swaps_it_back():
    from pointrend_seg.modeling import FastPointRendSegHead, PointRendSegHead

    cfg, model = _model()
    snapshot = _snapshot(model)
    head = model.sem_seg_head
    for opts in (cfg, FAST_ONLY):
        with prepare_for_inference(model, opts) as handle:
            assert handle.num_fast_heads == 1
            assert model.sem_seg_head is head and type(head) is FastPointRendSegHead
            if opts is FAST_ONLY:  # the same module, parameters and state dict
                assert all(torch.equal(v, snapshot[0][k]) for k, v in model.state_dict().items())
                assert list(model.state_dict()) == list(snapshot[0])
        assert type(head) is PointRendSegHead
        _assert_restored(model, snapshot)
    with prepare_for_inference(model, InferenceOptions(fast_subdivision=False)) as handle:
        assert handle.num_fast_heads == 0 and type(head) is PointRendSegHead
    # a model without PointRend, and a point head the fast path does not know, are left alone
    for opts in (BILINEAR, ["MODEL.POINT_HEAD.NAME", "LinearPointHead"]):
        cfg, model = _model(*opts)
        with prepare_for_inference(model, cfg) as handle:
            assert handle.num_fast_heads == 0
            assert type(model.sem_seg_head) is not FastPointRendSegHead


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_head_equals_the_plain_head(seed):
    """
    The prepared head against the head as built, on the same weights and inputs (batch norm not
    folded: the heads alone differ). 128x128 and 64x64 use the first layer's projection of res2
    (fewer res2 pixels than points); 256x512 does not; at 24x24 every step re-predicts every
    cell. The point MLP's products summed in another order move the logits by float rounding:
    measured <= 3.9e-5 on these models (seeds 0-3, logits up to 83), a tenth of the bound; a
    point moving at a near-tie of the uncertainty would be an O(1) change. The classes are the
    same wherever the plain head's top two logits are further apart than the logits may move
    (one pixel of seed 1 at 97x131 has a gap of 1e-5).
    """
    cfg, model = _model(seed=seed)
    _point_head_that_matters(model, seed)
    inputs = _inputs(seed, sizes=((128, 128), (64, 64), (256, 512), (24, 24), (97, 131)))
    plain = _logits(model, inputs)
    with prepare_for_inference(model, FAST_ONLY):
        fast = _logits(model, inputs)
    tolerance = 4e-4
    for a, b in zip(fast, plain):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=tolerance, rtol=0)
        top2 = b.topk(2, dim=0).values
        decided = top2[0] - top2[1] > 2 * tolerance
        assert decided.float().mean() > 0.999
        assert torch.equal(a.argmax(0)[decided], b.argmax(0)[decided])
    assert any(not torch.equal(a, b) for a, b in zip(fast, plain))  # it did run another path


@pytest.mark.parametrize("shape", [(2, 19, 13, 17), (3, 2, 50), (1, 7, 1, 1), (2, 4, 6)])
def test_top2_uncertainty_is_detectron2s_bit_for_bit_with_ties(shape):
    """
    The running top-2 equals Detectron2's uncertainty (top-2 by a sort) exactly, also where the
    maximum is attained twice or more (gap 0), where all classes tie, and with infinities (an
    infinite gap gives inf - inf = nan in both; compared after nan_to_num).
    """
    from pointrend_seg.modeling import calculate_uncertainty
    from pointrend_seg.modeling.fast_subdivision import top2_uncertainty

    g = torch.Generator().manual_seed(sum(shape))
    ties = torch.randint(-3, 3, shape, generator=g).float()  # small integers: many ties
    ties.view(-1)[::97] = float("inf")
    ties.view(-1)[5::89] = float("-inf")
    for x in (ties, torch.randn(shape, generator=g) * 10, torch.zeros(shape)):
        expected = calculate_uncertainty(x)
        got = top2_uncertainty(x.requires_grad_(True))
        assert got.shape == expected.shape and not got.requires_grad
        assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(expected.detach()))
    if ties[:, 0].numel() >= 50:  # the tie cases really occur in the input
        assert (calculate_uncertainty(ties) == 0).any()


@pytest.mark.parametrize("num_fc,each_layer", [(3, True), (2, False), (0, True)])
def test_split_products_and_projection_equal_the_point_head(num_fc, each_layer):
    """mlp_point_logits equals MLPPointHead's forward, and so does it on the first layer's
    projection of two maps (of different sizes and channels) sampled and summed (bilinear
    sampling is linear, zero padding included: points outside the maps too)."""
    from pointrend_seg.modeling import MLPPointHead, point_sample
    from pointrend_seg.modeling.fast_subdivision import mlp_point_logits, project_fine_features

    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(2, 5, 9, 11, generator=g), torch.randn(2, 3, 4, 6, generator=g)]
    head = MLPPointHead(in_channels=8, num_classes=4, fc_dim=6, num_fc=num_fc,
                        coarse_pred_each_layer=each_layer)
    with torch.no_grad():
        head.predictor.weight.normal_(0, 0.5, generator=g)
    coords = torch.rand(2, 50, 2, generator=g) * 1.2 - 0.1
    coarse = torch.randn(2, 4, 50, generator=g)
    fine = torch.cat([point_sample(x, coords, align_corners=False) for x in maps], dim=1)
    projected = project_fine_features(head, maps)
    with torch.no_grad():
        expected = head(fine, coarse)
        split = mlp_point_logits(head, fine, coarse)
        from_projection = mlp_point_logits(
            head, sum(point_sample(p, coords, align_corners=False) for p in projected), coarse,
            fine_projected=True)
    # float rounding of sums in another order: measured <= 1e-6 on logits up to ~3
    torch.testing.assert_close(split, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(from_projection, expected, atol=1e-5, rtol=1e-5)
    assert expected.abs().max() > 0.1


def test_projection_is_used_when_the_maps_have_fewer_pixels_than_points(monkeypatch):
    from pointrend_seg.modeling import fast_subdivision

    cfg, model = _model("MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", "300")
    calls = []
    project = fast_subdivision.project_fine_features
    monkeypatch.setattr(fast_subdivision, "project_fine_features",
                        lambda *args: calls.append(1) or project(*args))
    with prepare_for_inference(model, FAST_ONLY):
        # res2 32x32 = 1024 pixels of 64 channels (as many as the first layer's outputs);
        # the points: 300 at each of the 3 steps (32x32, 64x64, 128x128): fewer
        _logits(model, _inputs(sizes=((128, 128),)))
        assert calls == []
        # 64x64: res2 16x16 = 256 pixels < 3 x 300 points
        _logits(model, _inputs(sizes=((64, 64),)))
        assert calls == [1]
