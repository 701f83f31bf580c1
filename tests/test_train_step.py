"""
TrainStep (pointrend_seg/engine/train_step.py): mixed precision (bfloat16 without loss scaling,
float16 with a GradScaler), channels_last training, and the checkpoint layout of its state.
Each mode is compared with the float32 step on the same model, weights and batch.
"""
import copy

import pytest
import torch

from detectron2.utils.events import EventStorage

from pointrend_seg.engine import Trainer, TrainStep
from pointrend_seg.engine.train_step import training_precision

from conftest import demo_config, torch_threads

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

OPTS = ["SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0", "SOLVER.OPTIMIZER", "SGD",
        "SOLVER.BASE_LR", "0.01", "MODEL.SEM_SEG_HEAD.ASPP_DROPOUT", "0.0"]


def _one_step(cfg, model, batch):
    """Losses of one TrainStep on ``batch`` and the model after the update."""
    model = copy.deepcopy(model)
    optimizer = Trainer.build_optimizer(cfg, model)
    step = TrainStep(model, [batch], optimizer, precision=training_precision(cfg))
    with EventStorage(0) as storage:
        torch.manual_seed(5)  # the same training points in every mode
        step.run(0)
        losses = {k: v[0] for k, v in storage.latest().items() if k.startswith("loss")}
    return losses, model, step


@pytest.fixture(scope="module")
def model_and_batch():
    cfg = demo_config(*OPTS)
    torch.manual_seed(0)
    model = Trainer.build_model(cfg).train()
    loader = iter(Trainer.build_train_loader(cfg))
    return model, next(loader)


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_autocast_training_step_computes_the_float32_losses_in_low_precision(
        model_and_batch, precision):
    model, batch = model_and_batch
    if precision == "float16":  # float16 is slow on a CPU: 20-25 s for the whole batch, 6 s for
        batch = [dict(d, image=d["image"][:, :64, :64], sem_seg=d["sem_seg"][:64, :64])
                 for d in batch]  # the top-left 64x64 of its two 128x128 images
    ref_losses, ref_model, _ = _one_step(demo_config(*OPTS), model, batch)
    cfg = demo_config(*OPTS, "SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.PRECISION", precision)
    losses, updated, step = _one_step(cfg, model, batch)
    # It computed the float32 losses (measured over 3 seeds, 1 and 2 threads: relative
    # differences <= 2.2e-4 with bf16, <= 3.5e-4 with fp16 on the 64x64 crops), and it did run
    # in low precision (not silently in float32: some loss differs).
    for name, value in losses.items():
        assert value == pytest.approx(ref_losses[name], rel=0.02), name
    assert any(value != ref_losses[name] for name, value in losses.items())
    moved = torch.cat([(p - q).flatten() for p, q in
                       zip(updated.parameters(), model.parameters())])
    if precision == "bfloat16":
        # No loss scaling: the first update happens, in the float32 update's direction.
        assert step.grad_scaler is None and set(step.state_dict()) == {"optimizer"}
        ref_moved = torch.cat([(p - q).flatten() for p, q in
                               zip(ref_model.parameters(), model.parameters())])
        cosine = torch.nn.functional.cosine_similarity(moved, ref_moved, dim=0)
        assert cosine > 0.9, cosine  # measured 0.994-0.997 (3 seeds, 1 and 2 threads)
    else:
        # Detectron2's AMP: a GradScaler starting at 2**16, whose scaled float16 gradients
        # overflow here, so the first update is skipped and the scale halves; its state is
        # checkpointed with the optimizer's, as AMPTrainer does.
        assert set(step.state_dict()) == {"optimizer", "grad_scaler"}
        assert moved.abs().max() == 0 and step.grad_scaler.get_scale() == 2.0 ** 15
        assert all(torch.isfinite(p).all() for p in updated.parameters())


def test_channels_last_training_equals_contiguous(model_and_batch):
    model, batch = model_and_batch
    ref_losses, ref_model, _ = _one_step(demo_config(*OPTS), model, batch)
    cfg = demo_config(*OPTS, "SOLVER.CHANNELS_LAST", "True")
    cl_model = model.to(memory_format=torch.channels_last)
    conv = cl_model.backbone.stem.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    losses, updated, _ = _one_step(cfg, cl_model, batch)
    for name, value in losses.items():
        assert value == pytest.approx(ref_losses[name], rel=1e-4), name
    for (name, p), q in zip(updated.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5, msg=name)


def test_build_model_honours_channels_last():
    with torch_threads(1):
        model = Trainer.build_model(demo_config("SOLVER.CHANNELS_LAST", "True"))
    assert model.backbone.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_unknown_precision_is_an_error_naming_the_key():
    cfg = demo_config("SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.PRECISION", "fp8")
    with pytest.raises(ValueError, match="SOLVER.AMP.PRECISION"):
        training_precision(cfg)
    assert training_precision(demo_config()) is None
