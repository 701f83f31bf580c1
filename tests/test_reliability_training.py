"""Non-finite losses stop training without a checkpoint; the resumable training stream."""
import os

import pytest
import torch

from detectron2.utils.events import get_event_storage

from pointrend_seg.engine import ResumableTrainingSampler, Trainer
from pointrend_seg.engine.train_data import derive_seed, seeded_rngs

from conftest import demo_config, torch_threads

NAN_ITER = 2


@pytest.mark.slow
def test_nan_loss_stops_with_iteration_and_loss_names(tmp_path):
    out = str(tmp_path)
    cfg = demo_config("OUTPUT_DIR", out, "SOLVER.MAX_ITER", "5", "SOLVER.CHECKPOINT_PERIOD", "1",
                      "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
                      "DATASETS.TEST", "()", "SOLVER.LOG_PERIOD", "1")
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)

    def poison(module, inputs, losses):
        # The point loss becomes NaN at iteration NAN_ITER (as after a diverging update).
        if module.training and get_event_storage().iter == NAN_ITER:
            losses = dict(losses, loss_sem_seg_point=losses["loss_sem_seg_point"] * float("nan"))
        return losses

    trainer.model.register_forward_hook(poison)
    with pytest.raises(FloatingPointError) as info, torch_threads(1):
        trainer.train()
    msg = str(info.value)
    assert f"iteration {NAN_ITER}" in msg and "loss_sem_seg_point" in msg
    assert "loss_sem_seg=" not in msg  # only the non-finite losses are named
    # The checkpoints whose weights gave a finite loss exist; the one of iteration NAN_ITER - 1
    # (its weights gave the NaN) was dropped, and none is written after it.
    ckpts = sorted(f for f in os.listdir(out) if f.endswith(".pth") or ".tmp." in f)
    assert ckpts == [f"model_{i:07d}.pth" for i in range(NAN_ITER - 1)]
    good = f"model_{NAN_ITER - 2:07d}.pth"
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read() == good
    # The error names it as the state to continue from.
    assert f"The last good state is {os.path.join(out, good)}" in msg
    # No optimizer step was taken with the NaN gradients: the weights are finite.
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    # Saving stays off for this trainer (e.g. a hook at the end of training).
    trainer.checkpointer.save("model_after_nan")
    assert not os.path.exists(os.path.join(out, "model_after_nan.pth"))


def test_stream_is_split_over_processes_like_one_process():
    """Iteration i uses the same images whatever the number of processes (same total batch)."""
    one = ResumableTrainingSampler(10, total_batch_size=4, seed=3, rank=0, world_size=1)
    two = [ResumableTrainingSampler(10, total_batch_size=4, seed=3, rank=r, world_size=2)
           for r in range(2)]
    for it in range(7):  # crosses epochs (10 images, 4 per iteration)
        single = [one.index(p) for p in one.positions(it)]
        split = [s.index(p) for s in two for p in s.positions(it)]
        assert single == split
    # Every epoch is a permutation.
    epoch = [one.index(p) for p in range(10, 20)]
    assert sorted(epoch) == list(range(10)) and epoch != list(range(10))


def test_stream_resumes_where_it_stopped():
    full = ResumableTrainingSampler(7, total_batch_size=2, seed=5, rank=1, world_size=2)
    stream = iter(full)
    first_12 = [next(stream) for _ in range(12)]  # 12 iterations of 1 image
    resumed = ResumableTrainingSampler(7, total_batch_size=2, seed=5, rank=1, world_size=2,
                                       start_iter=8)
    stream = iter(resumed)
    assert [next(stream) for _ in range(4)] == first_12[8:]
    other_seed = ResumableTrainingSampler(7, total_batch_size=2, seed=6, rank=1, world_size=2)
    stream = iter(other_seed)
    assert [next(stream) for _ in range(12)] != first_12


def test_batch_size_must_split_over_processes():
    with pytest.raises(ValueError, match="SOLVER.IMS_PER_BATCH=3"):
        ResumableTrainingSampler(10, total_batch_size=3, seed=0, rank=0, world_size=2)


def test_seeded_rngs_restore_the_callers_state():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    with seeded_rngs(derive_seed(1, 2)):
        inside = torch.rand(3)
    assert torch.equal(torch.rand(3), expected)
    with seeded_rngs(derive_seed(1, 2)):
        assert torch.equal(torch.rand(3), inside)


def test_loader_batches_do_not_depend_on_workers():
    """Same images and augmentations with 0 or 2 loader workers, from any start iteration."""
    batches = {}
    for workers in (0, 2):
        cfg = demo_config("SOLVER.IMS_PER_BATCH", "3", "DATALOADER.NUM_WORKERS", str(workers))
        loader = Trainer.build_train_loader(cfg)
        loader.set_start_iter(5)
        it = iter(loader)
        batches[workers] = [next(it) for _ in range(3)]
    for b0, b2 in zip(batches[0], batches[2]):
        assert [d["file_name"] for d in b0] == [d["file_name"] for d in b2]
        for d0, d2 in zip(b0, b2):
            assert torch.equal(d0["image"], d2["image"])
            assert torch.equal(d0["sem_seg"], d2["sem_seg"])


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
def test_resume_keeps_progress_but_takes_the_schedule_from_the_config(tmp_path):
    """--resume SOLVER.MAX_ITER <more>: the poly schedule is stretched, not run past its end."""
    def trainer(max_iter):
        cfg = demo_config("OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", str(max_iter),
                          "SOLVER.WARMUP_ITERS", "0", "DATALOADER.NUM_WORKERS", "0",
                          "DATASETS.TEST", "()", "SOLVER.IMS_PER_BATCH", "2")
        return Trainer(cfg)

    first = trainer(4)
    for _ in range(4):  # as after 4 iterations
        first.scheduler.step()
    first.iter = 3
    first.checkpointer.save("model_final", iteration=3)

    resumed = trainer(8)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4
    assert resumed.scheduler.last_epoch == 4 and resumed.scheduler.max_iters == 8
    base = resumed.cfg.SOLVER.BASE_LR
    for group in resumed.optimizer.param_groups:
        assert group["lr"] == pytest.approx(base * (1 - 4 / 8) ** 0.9, rel=1e-6)
